"""The auditor's report for a board: the verdict first, then every check in the order the
audit runs them and how each came out, the checkpoints, the log's growth, the gates
re-checked per event type, every agency's key history and the problems found, each in plain
words. One self-contained HTML page or an A4 PDF, chosen by the file's extension.

Rendered from the `AuditReport` alone (the verifier counted what it shows as it ran): the log
is never read again. The page opens offline: inline CSS, the chart as inline SVG, no script,
no link, no font or picture to fetch (its Content-Security-Policy tells the browser so); the
PDF uses the standard fonts, with the chart as a PNG. It names no case: positions, agencies
and event types only.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Literal

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from ledger.audit.board_view import Inputs, view, when
from ledger.audit.plain_words import FLAGGED, OTHER_FLAGS, UNACKNOWLEDGED
from ledger.audit.report import AuditReport
from ledger.private_files import replace_private

__all__ = ["Inputs", "render_html", "render_pdf", "report_format", "write_report"]

FORMATS: dict[str, Literal["html", "pdf"]] = {".html": "html", ".htm": "html", ".pdf": "pdf"}


def report_format(path: Path) -> Literal["html", "pdf"]:
    """The report's format from its file's extension; ValueError for any other."""
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError("the report is FILE.html or FILE.pdf") from None


# --- HTML -----------------------------------------------------------------------------------


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("ledger.audit", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        keep_trailing_newline=True,
    )
    env.filters["when"] = when
    return env


def inline_svg(svg: str) -> str:
    """The chart's SVG for inline use in the page: without its metadata block and namespace
    declarations (namespace names are URLs; the HTML parser needs none of them)."""
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.S)
    return re.sub(r'\s+xmlns(?::\w+)?="[^"]*"', "", svg)


def render_html(report: AuditReport, inputs: Inputs) -> str:
    """The report as one self-contained HTML page (autoescaped; the chart inline)."""
    shown = view(report, inputs)
    svg = Markup(inline_svg(shown.chart.svg())) if shown.chart is not None else None  # noqa: S704
    return (
        _environment()
        .get_template("board_report.html.j2")
        .render(
            v=shown,
            svg=svg,
            flagged=FLAGGED,
            other_flags=OTHER_FLAGS,
            unacknowledged=UNACKNOWLEDGED,
        )
    )


# --- PDF ------------------------------------------------------------------------------------


def render_pdf(report: AuditReport, inputs: Inputs) -> bytes:
    """The report as an A4 PDF (fpdf2, standard fonts, text uncompressed)."""
    from ledger.audit.board_pdf import draw  # fpdf2 only when a PDF is asked for

    return draw(view(report, inputs), inputs.written_at)


def write_report(path: Path, report: AuditReport, inputs: Inputs) -> None:
    """Write the report as the file's extension says, readable by its owner only."""
    kind = report_format(path)
    data = render_html(report, inputs).encode() if kind == "html" else render_pdf(report, inputs)
    replace_private(path, data)
