"""The printable consent receipt (HTML and PDF), safe for the survivor to carry.

It shows the receipt code, who recorded the consent, who may receive what, for which
purposes, until when, and how to withdraw, in the language recorded with the consent
(Spanish, English, Portuguese or French; any other language gets Spanish and English and says
so). It never shows the case id, the consent id, or a purpose or category that would put the
holder at risk if the paper were found: those are mapped to neutral wording ("legal
assistance", "services"); the full detail is only in the signed receipt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from ledger.interop.record import ConsentEvent, ConsentRecord

LANGUAGES = ("es", "en", "pt", "fr")
FALLBACK = ("es", "en")

# Neutral wording for every purpose and category (ARCHITECTURE.md section 3 enumerations).
SAFE_PURPOSE = {
    "assistance": "services",
    "referral": "services",
    "data_sharing": "services",
    "prosecution": "legal",
    "statistics": "statistics",
}
SAFE_CATEGORY = {
    "identity": "personal",
    "contact": "personal",
    "location": "personal",
    "family": "personal",
    "health": "services",
    "education": "services",
    "employment": "services",
    "notes": "services",
    "legal": "legal",
    "immigration": "legal",
}
_PURPOSE_ORDER = ("services", "legal", "statistics")
_CATEGORY_ORDER = ("personal", "services", "legal")


@cache
def messages(lang: str) -> dict[str, str]:
    """One language's message catalog (templates/i18n/<lang>.json)."""
    path = resources.files("ledger.interop") / "templates" / "i18n" / f"{lang}.json"
    data: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return data


@cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("ledger.interop", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        keep_trailing_newline=True,
    )


def languages_for(tag: str) -> tuple[tuple[str, ...], bool]:
    """The catalogs to print for a BCP 47 tag, and whether that is the fallback."""
    primary = tag.split("-")[0].lower()
    if primary in LANGUAGES:
        return (primary,), False
    return FALLBACK, True


@dataclass(frozen=True)
class Section:
    """The printout in one language."""

    lang: str
    title: str
    fallback: str | None
    code_label: str
    intro: str
    recorded_by: str
    who: str
    what: str
    why: str
    until: str
    until_text: str
    purposes: list[str]
    categories: list[str]
    withdrawn_notice: str | None
    how_withdraw: str
    safe_note: str


def _day(timestamp: str) -> str:
    return timestamp[:10]


def sections(consent: ConsentRecord, event: ConsentEvent) -> list[Section]:
    langs, fallback = languages_for(consent.language)
    purposes = [p for p in _PURPOSE_ORDER if p in {SAFE_PURPOSE[x] for x in consent.purposes}]
    categories = [c for c in _CATEGORY_ORDER if c in {SAFE_CATEGORY[x] for x in consent.categories}]
    out = []
    for lang in langs:
        m = messages(lang)
        until = (
            m["until_open"]
            if consent.expires_at is None
            else m["until_date"].format(date=_day(consent.expires_at))
        )
        withdrawn = None
        if event.kind == "withdrawn":
            withdrawn = m["withdrawn_notice"].format(date=_day(event.recorded_at))
        out.append(
            Section(
                lang=lang,
                title=m["title"],
                fallback=m["fallback"].format(language=consent.language) if fallback else None,
                code_label=m["code_label"],
                intro=m["intro"].format(date=_day(consent.granted.recorded_at)),
                recorded_by=m["recorded_by"],
                who=m["who"],
                what=m["what"],
                why=m["why"],
                until=m["until"],
                until_text=until,
                purposes=[m[f"purpose.{p}"] for p in purposes],
                categories=[m[f"category.{c}"] for c in categories],
                withdrawn_notice=withdrawn,
                how_withdraw=m["how_withdraw"],
                safe_note=m["safe_note"],
            )
        )
    return out


def _context(consent: ConsentRecord, event: ConsentEvent) -> dict[str, Any]:
    return {
        "sections": sections(consent, event),
        "code": event.code,
        "recorded_by": consent.name(consent.granted.agency),
        "recipients": [consent.name(a) for a in consent.recipients],
    }


def render_html(consent: ConsentRecord, event: ConsentEvent) -> str:
    """The printout as one self-contained HTML page (autoescaped)."""
    return _environment().get_template("receipt.html.j2").render(**_context(consent, event))


def _latin1(text: str) -> str:
    """The PDF uses the standard fonts (no font files to ship): Latin-1 covers es, en, pt and
    fr; anything else (an agency name in another script) prints as '?'."""
    return text.encode("latin-1", "replace").decode("latin-1")


def render_pdf(consent: ConsentRecord, event: ConsentEvent) -> bytes:
    """The printout as a one- or two-page A4 PDF (fpdf2, standard fonts, uncompressed)."""
    from fpdf import FPDF

    context = _context(consent, event)
    pdf = FPDF(format="A4")
    pdf.set_compression(False)
    pdf.set_creation_date(
        datetime.strptime(event.recorded_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    )
    pdf.set_auto_page_break(auto=True, margin=15)
    width = pdf.epw

    def para(text: str, size: int = 11, style: str = "") -> None:
        pdf.set_font("Helvetica", style, size)
        pdf.multi_cell(width, 6, _latin1(text), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)

    for section in context["sections"]:
        pdf.add_page()
        pdf.set_title(_latin1(section.title))
        para(section.title, 16, "B")
        if section.fallback:
            para(section.fallback, 10, "I")
        para(f"{section.code_label}:")
        pdf.set_font("Courier", "B", 20)
        pdf.cell(width, 12, context["code"], border=1, align="C", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
        para(section.intro)
        rows = (
            (section.recorded_by, context["recorded_by"]),
            (section.who, ", ".join(context["recipients"])),
            (section.what, ", ".join(section.categories)),
            (section.why, ", ".join(section.purposes)),
            (section.until, section.until_text),
        )
        for label, value in rows:
            para(label, 11, "B")
            para(value)
        if section.withdrawn_notice:
            para(section.withdrawn_notice, 11, "B")
        para(section.how_withdraw)
        para(section.safe_note, 9)
    return bytes(pdf.output())
