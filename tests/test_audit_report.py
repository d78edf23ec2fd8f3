"""`ledger audit verify --report FILE.html|FILE.pdf`: the auditor's report for a board.

Written from a real history on both backends, through the real command: every check listed
in the order the audit runs them with its outcome, the counts per event type equal to what
the test counts itself in the log, every agency's key history; from a tampered log the first
failure named with its position (exit code 1); the page self-contained (no reference outside
the file) and opened offline in real Chromium; the PDF a real PDF whose text names the
failure.
"""

from __future__ import annotations

import json
import os
import re
import stat
import uuid
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ledger import audit
from ledger.audit.board_report import Inputs, render_html
from ledger.audit.board_view import growth
from ledger.audit.report import QUORUM_STEP, RECEIPT_STEP
from ledger.cli import app as cli
from ledger.contract import crypto
from tests.conftest import World, deployment, open_world
from tests.test_audit import registered_synthetic_log
from tests.test_audit_attacks import add_key, revoke_key
from tests.test_client_verification import cli_env

STEP_ORDER = [c for c, step in audit.CHECK_STEPS.items() if step < 9]  # no receipt given


def new() -> str:
    return str(uuid.uuid4())


# --- a history over four days: intake, consent, share, referral, read, key rotation with a
# reported compromise, withdrawal, and an erasure by two supervisors -------------------------


def history(world: World) -> dict[str, Any]:
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    initial = {a.id: a.key.verify_key for a in world.agencies.values()}  # the auditor's
    first_key = ngo.key.verify_key.key_id
    case_id = ngo.open_case(payload={"identity": {"n": 1}, "health": {"h": 2}})
    consent = ngo.grant(case_id, ["clinic"])
    share = ngo.share(case_id, "clinic", consent)
    assert share.status_code == 201, share.text
    world.clock.advance(days=1)
    referral = new()
    ngo.ok(
        "referral.made",
        case_id,
        {"referral_id": referral, "to": "clinic", "consent_id": consent, "categories": ["health"]},
        {"component": "health_psychosocial", "due_by": "2030-01-01T00:00:00Z", "urgency": "urgent"},
    )
    clinic.ok("referral.accepted", case_id, {"referral_id": referral}, {"reason": None})
    assert clinic.read(case_id).status_code == 200
    world.clock.advance(days=1)
    rotated = crypto.generate_signing_key("ngo-a")
    added = add_key(world, ngo, rotated)
    compromised = share.json()["index"]
    revoked = revoke_key(world, "ngo-a", first_key, compromised_since=compromised)
    ngo.key = rotated
    world.clock.advance(days=1)
    ngo.ok("consent.withdrawn", case_id, {"consent_id": consent}, {"reason": "survivor_request"})
    other = ngo.open_case()
    request = ngo.ok("erasure.requested", other, {}, {"reason": "survivor_request"},
                     role="supervisor")  # fmt: skip
    second = world.token("supervisor", "ngo-a")
    body = ngo.body("case.erased", other, {"request_event_id": request["event_id"]}, {})
    erased = world.http.post("/v1/events", json=body, headers={"Authorization": f"Bearer {second}"})
    assert erased.status_code == 201, erased.text
    return {
        "initial": initial,
        "first_key": first_key,
        "rotated": rotated.verify_key.key_id,
        "clinic_key": clinic.key.verify_key.key_id,
        "added": added,
        "revoked": revoked,
        "compromised": compromised,
    }


def write_bundle(world: World, tmp_path: Path, keys: dict[str, crypto.VerifyKey]) -> list[str]:
    """The bundle and the auditor's agency keys; the command's arguments."""
    note = world.ledger.log.sign_checkpoint().note
    size = audit.checkpoint_size(note)
    audit.write_bundle(tmp_path / "log.bundle", note,
                       [e for _, e in world.ledger.store.entries(0, size)])  # fmt: skip
    (tmp_path / "agency-keys").write_text("".join(k.line() + "\n" for k in keys.values()))
    return ["audit", "verify", "--bundle", str(tmp_path / "log.bundle"),
            "--log-key", str(world.settings.keys / "log.vkey"),
            "--agency-keys", str(tmp_path / "agency-keys")]  # fmt: skip


def tamper(tmp_path: Path, change: Any) -> None:
    """Change the bundle's entries (the checkpoint stays the one the log key signed)."""
    note, entries = audit.read_bundle(tmp_path / "log.bundle")
    change(entries)
    audit.write_bundle(tmp_path / "log.bundle", note, entries)


# --- reading the report back ----------------------------------------------------------------


class Page(HTMLParser):
    """Every element with its attributes, and the text of the page and of its styles."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self._in_style = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        (self.styles if self._in_style else self.text).append(data)

    def rows(self, tag: str, key: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag and key in a]

    def checks(self) -> list[tuple[str, str]]:
        return [(a["data-check"], a["data-outcome"]) for a in self.rows("tr", "data-outcome")]

    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


def assert_self_contained(html: str) -> None:
    """Nothing the page could fetch: every src/href a fragment, every url( ) one too, no
    script, no linked sheet, no import; no http(s) address anywhere in the file."""
    page = Page(html)
    tags = {t for t, _ in page.elements}
    assert not tags & {"script", "link", "iframe", "object", "embed", "img", "base"}, tags
    references = []
    for _, attrs in page.elements:
        for name, value in attrs.items():
            if name in {"src", "href", "xlink:href", "action", "srcset", "poster", "data"}:
                references.append(value)
            if name == "style":
                page.styles.append(value)
    assert all(r.startswith("#") for r in references), [r for r in references if r[:1] != "#"]
    css = "\n".join(page.styles)
    assert "@import" not in css and "@font-face" not in css
    urls = re.findall(r"url\(\s*([^)]*)\)", html)
    assert all(u.strip("'\" ").startswith("#") for u in urls), urls
    assert not re.search(r"https?:", html, re.I)
    meta = [a for t, a in page.elements if t == "meta" and a.get("http-equiv")]
    assert meta and "default-src 'none'" in meta[0]["content"]


def pdf_text(data: bytes) -> str:
    """The text of an fpdf2 PDF written uncompressed: its shown strings, in order."""
    assert data.startswith(b"%PDF-")
    assert data.rstrip().endswith(b"%%EOF")
    shown = re.findall(rb"\(((?:\\.|[^\\)])*)\)\s*Tj", data)
    text = " ".join(re.sub(rb"\\(.)", rb"\1", s).decode("latin-1") for s in shown)
    return " ".join(text.split())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def log_types(tmp_path: Path) -> Counter[str]:
    """The test's own count of the log's events by type."""
    _, entries = audit.read_bundle(tmp_path / "log.bundle")
    parsed = [json.loads(e) for e in entries]
    return Counter(e["envelope"]["type"] for e in parsed if e["kind"] == "event")


# --- the tests --------------------------------------------------------------------------------


def test_a_verified_log_reports_every_check_passed_in_order_with_counts_and_key_history(
    world: World, tmp_path: Path
) -> None:
    made = history(world)
    args = write_bundle(world, tmp_path, made["initial"])
    state = ["--state", str(tmp_path / "audit-state.json")]
    first = CliRunner().invoke(cli, [*args, *state], env=cli_env(world.settings))
    assert first.exit_code == 0, first.output  # saves the checkpoint for the next audit
    out = tmp_path / "report.html"

    result = CliRunner().invoke(cli, [*args, *state, "--report", str(out)],
                                env=cli_env(world.settings))  # fmt: skip

    assert result.exit_code == 0, result.output
    assert f"report written: {out}" in result.output
    assert mode(out) == 0o600
    html = out.read_text()
    page = Page(html)
    assert [a["data-verdict"] for a in page.rows("div", "data-verdict")] == ["VERIFIED"]
    assert page.checks() == [(check, "passed") for check in STEP_ORDER]
    assert page.rows("section", "data-position") == []  # no first failure
    # The gates' counts per event type are the log's own.
    gates = {a["data-type"]: int(a["data-count"]) for a in page.rows("tr", "data-type")}
    assert gates == dict(log_types(tmp_path))
    assert {a["data-refused"] for a in page.rows("tr", "data-type")} == {"0"}
    # Every agency's key history: ngo-a's first key revoked, reported compromised from the
    # share on, its second added; the clinic's one key in use.
    keys = {
        a["data-key"]: (a["data-agency"], a["data-added"], a["data-revoked"], a["data-compromised"])
        for a in page.rows("tr", "data-key")
    }
    assert keys == {
        made["first_key"]: ("ngo-a", "0", str(made["revoked"]), str(made["compromised"])),
        made["clinic_key"]: ("clinic", "1", "", ""),
        made["rotated"]: ("ngo-a", str(made["added"]), "", ""),
    }
    words = page.words()
    assert "signed with a key its agency reported compromised" in words  # needs attention
    assert "The last audit (--state)" in words and "consistent with this audit" in words
    # The growth chart: entries per day over the four days, inline, with its figures.
    assert "Entries recorded per day" in html and "<svg" in html
    figures = [t for t in page.text if re.fullmatch(r"(\d{4}-)?\d\d-\d\d: [\d,]+", t.strip())]
    assert len(figures) == 4
    size = audit.checkpoint_size(audit.read_bundle(tmp_path / "log.bundle")[0])
    assert sum(int(f.split(": ")[1].replace(",", "")) for f in figures) == size
    assert_self_contained(html)


def test_a_flipped_byte_is_named_at_its_position_in_both_reports_and_exits_1(
    world: World, tmp_path: Path
) -> None:
    made = history(world)
    args = write_bundle(world, tmp_path, made["initial"])
    position = made["compromised"]  # the share: its purpose, one byte changed
    original = audit.read_bundle(tmp_path / "log.bundle")[1][position]

    def flip(entries: list[bytes]) -> None:
        entries[position] = original.replace(b'"purpose":"data_sharing"',
                                             b'"purpose":"data_sharinG"')  # fmt: skip
        assert entries[position] != original

    tamper(tmp_path, flip)
    html_file, pdf_file = tmp_path / "report.html", tmp_path / "report.pdf"

    results = [
        CliRunner().invoke(cli, [*args, "--report", str(f)], env=cli_env(world.settings))
        for f in (html_file, pdf_file)
    ]

    assert [r.exit_code for r in results] == [1, 1], results[0].output
    page = Page(html_file.read_text())
    assert [a["data-verdict"] for a in page.rows("div", "data-verdict")] == ["FAILED"]
    (first,) = page.rows("section", "data-position")
    assert (first["data-check"], first["data-position"]) == ("event signature", str(position))
    words = page.words()
    assert f"The first problem: Events signed by their agency, at log position {position}" in words
    assert "the event was altered after the agency signed it" in words
    outcomes = dict(page.checks())
    assert outcomes["event signature"] == "failed" and outcomes["root"] == "failed"
    assert [c for c, _ in page.checks()] == STEP_ORDER
    assert outcomes["consistency with saved checkpoint"] == "not run"
    assert_self_contained(html_file.read_text())
    text = pdf_text(pdf_file.read_bytes())
    assert "FAILED" in text
    assert f"The first problem: Events signed by their agency, at log position {position}" in text
    assert f"FAILED at log position {position}" in text
    assert mode(pdf_file) == 0o600


def test_a_removed_entry_is_named_at_its_position_and_exits_1(world: World, tmp_path: Path) -> None:
    made = history(world)
    args = write_bundle(world, tmp_path, made["initial"])
    _, entries = audit.read_bundle(tmp_path / "log.bundle")
    size = len(entries)
    consent = made["compromised"] - 1  # the consent the share relied on
    assert json.loads(entries[consent])["envelope"]["type"] == "consent.granted"
    tamper(tmp_path, lambda e: e.pop(consent))
    html_file, pdf_file = tmp_path / "report.html", tmp_path / "report.pdf"

    results = [
        CliRunner().invoke(cli, [*args, "--report", str(f), "--json"], env=cli_env(world.settings))
        for f in (html_file, pdf_file)
    ]

    assert [r.exit_code for r in results] == [1, 1]
    assert json.loads(results[0].stdout)["ok"] is False  # --json output stays JSON
    page = Page(html_file.read_text())
    (first,) = page.rows("section", "data-position")
    # The share now stands where its consent was, under no consent: the first failure.
    assert (first["data-check"], first["data-position"]) == ("gates", str(consent))
    outcomes = dict(page.checks())
    assert outcomes["completeness"] == "failed" and outcomes["root"] == "not run"
    assert "entries are missing, so the fingerprint cannot be recomputed" in page.words()
    missing = [a for a in page.rows("tr", "data-position") if a["data-check"] == "completeness"]
    assert [a["data-position"] for a in missing] == [str(size - 1)]
    text = pdf_text(pdf_file.read_bytes())
    assert f"The first problem: The rules, re-checked, at log position {consent}" in text
    assert f"FAILED at log position {size - 1:,}" in text  # the completeness row


def test_a_checkpoint_signed_by_another_key_fails_with_every_other_check_not_run() -> None:
    note, entries, _, keys = registered_synthetic_log(40)
    impostor = crypto.generate_signing_key("bench.localhost/log").verify_key
    report = audit.verify(note, entries, impostor, keys)

    page = Page(render_html(report, Inputs("the bundle log.bundle")))

    assert page.checks() == [("checkpoint signature", "failed")] + [
        (check, "not run") for check in STEP_ORDER[1:]
    ]
    (first,) = page.rows("section", "data-position")
    assert (first["data-check"], first["data-position"]) == ("checkpoint signature", "")
    assert "at the log as a whole" in page.words()
    assert "Nothing in this log can be relied on" in page.words()


def test_checks_asked_for_are_listed_after_the_logs_steps_in_the_order_run() -> None:
    note, entries, log_key, keys = registered_synthetic_log(40)
    report = audit.verify(note, entries, log_key, keys)
    alone = Page(render_html(report, Inputs("the bundle log.bundle")))
    report.add_checks(RECEIPT_STEP, [audit.AuditFailure("receipt signature", "not signed")])
    report.add_checks(QUORUM_STEP, [])  # --policy: the quorum cosigned
    report.flags.append(audit.AuditFailure("cosignature time", "witness w2 cosigned at 10"))

    page = Page(render_html(report, Inputs("the bundle log.bundle", receipt="erasure.txt")))

    assert alone.checks() == [(check, "passed") for check in STEP_ORDER[:-1]] + [
        ("consistency with saved checkpoint", "not run")
    ]  # nothing asked for after the log's steps: nothing listed
    assert page.checks()[len(STEP_ORDER) :] == [
        ("receipt signature", "failed"),
        ("receipt", "passed"),
        ("witness quorum", "passed"),
    ]
    assert [a["data-verdict"] for a in page.rows("div", "data-verdict")] == ["FAILED"]
    words = page.words()
    assert "Other findings" in words and "witness w2 cosigned at 10" in words
    assert "reported compromised" not in words  # a witness's clock is no compromised key


def test_a_report_of_another_format_is_refused_before_the_audit(
    world: World, tmp_path: Path
) -> None:
    world.agency("ngo-a").open_case()
    args = write_bundle(world, tmp_path, {a.id: a.key.verify_key for a in world.agencies.values()})
    result = CliRunner().invoke(cli, [*args, "--report", str(tmp_path / "report.docx")],
                                env=cli_env(world.settings))  # fmt: skip
    assert result.exit_code == 2
    assert "FILE.html or FILE.pdf" in result.output
    assert "verified" not in result.output  # refused before the audit ran
    assert not (tmp_path / "report.docx").exists()


def test_growth_is_per_day_within_a_month_then_per_month_every_period_shown() -> None:
    chart, figures = growth({"2026-11-28": 3, "2026-12-02": 5, "": 1, "garbage": 2})
    assert chart is not None and chart.title == "Entries recorded per day, 2026"
    assert figures == [("11-28", "3"), ("11-29", "0"), ("11-30", "0"), ("12-01", "0"),
                       ("12-02", "5")]  # fmt: skip
    chart, figures = growth({"2026-01-31": 2, "2026-04-01": 7, "2026-04-30": 1})
    assert chart is not None and chart.title == "Entries recorded per month"
    assert figures == [("2026-01", "2"), ("2026-02", "0"), ("2026-03", "0"), ("2026-04", "8")]
    chart, figures = growth({"2021-06-01": 1, "2026-01-01": 4})
    assert chart is not None and [f[0] for f in figures] == [str(y) for y in range(2021, 2027)]
    assert growth({}) == (None, [])


# --- in real Chromium, offline ----------------------------------------------------------------


def busy_history(world: World, days: int) -> None:
    """A few weeks of an agency's work: cases opened, consents, shares and services."""
    ngo, clinic = world.agency("ngo-a"), world.agency("clinic")
    for day in range(days):
        for _ in range(2 + (day * 5) % 7):
            case_id = ngo.open_case()
            consent = ngo.grant(case_id, ["clinic"])
            if day % 2:
                assert ngo.share(case_id, "clinic", consent).status_code == 201
        world.clock.advance(days=1)
    assert clinic.id == "clinic"


@pytest.mark.parametrize("tampered", [False, True], ids=["verified", "failed"])
def test_the_report_opens_offline_in_chromium_with_the_verdict_on_top(
    tmp_path: Path, tampered: bool
) -> None:
    from tests.test_console_browser import ARGS, CHROMIUM, browser_or_skip

    sync_playwright = browser_or_skip()
    with deployment("sqlite", tmp_path) as settings, open_world(settings) as world:
        busy_history(world, days=12)
        initial = {a.id: a.key.verify_key for a in world.agencies.values()}
        args = write_bundle(world, tmp_path, initial)
        state = ["--state", str(tmp_path / "audit-state.json")]
        earlier = CliRunner().invoke(cli, [*args, *state], env=cli_env(settings))
        assert earlier.exit_code == 0, earlier.output  # the last audit, of the first days
        history(world)
        args = write_bundle(world, tmp_path, initial)
        _, entries = audit.read_bundle(tmp_path / "log.bundle")
        position = next(i for i, e in enumerate(entries) if i >= 40 and b'"minor":false' in e)
        if tampered:  # an adult's case made a child's: one fact changed after signing
            tamper(tmp_path, lambda e: e.__setitem__(
                position, e[position].replace(b'"minor":false', b'"minor":true')))  # fmt: skip
        out = tmp_path / "audit-report.html"
        result = CliRunner().invoke(cli, [*args, *state, "--report", str(out)],
                                    env=cli_env(settings))  # fmt: skip
        assert result.exit_code == (1 if tampered else 0), result.output
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 900},
                                          offline=True)  # fmt: skip
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri())
            verdict = page.locator("#verdict")
            word = "FAILED" if tampered else "VERIFIED"
            assert verdict.locator(".word").inner_text() == word
            box = verdict.bounding_box()
            assert box is not None and box["y"] < 200  # the verdict first, above the fold
            assert page.locator("#growth svg").is_visible()
            if tampered:
                failure = page.locator("#first-failure")
                assert failure.get_attribute("data-position") == str(position)
                assert failure.get_attribute("data-check") == "event signature"
            shots = os.environ.get("LEDGER_SCREENSHOTS")
            name = "audit-report-failed.png" if tampered else "audit-report.png"
            target = Path(shots) / name if shots else tmp_path / name
            page.screenshot(path=str(target), full_page=True)
            assert target.stat().st_size > 10_000
        finally:
            browser.close()
    assert [u for u in requests if not u.startswith("file:")] == []
