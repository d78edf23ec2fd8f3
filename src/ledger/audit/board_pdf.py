"""The auditor's report drawn as an A4 PDF (fpdf2): the same `View` as the HTML page, in the
standard fonts (no font file to ship or fetch), the chart as a PNG, text left uncompressed
so the report's words can be found in the file."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime

from fpdf import FPDF
from fpdf.fonts import FontFace

from ledger.audit.board_view import View, when
from ledger.audit.plain_words import FLAGGED, OTHER_FLAGS, UNACKNOWLEDGED

GREEN, RED, AMBER, GREY = (26, 127, 55), (180, 35, 24), (181, 71, 8), (85, 85, 85)
HEADINGS = FontFace(emphasis="BOLD", fill_color=(236, 236, 236))
OUTCOMES = {"Passed": FontFace(color=GREEN), "FAILED": FontFace(emphasis="BOLD", color=RED)}


def latin1(text: object) -> str:
    """The standard fonts cover Latin-1: a dash or quote outside it is replaced by its
    plain form, anything else prints as '?'."""
    plain = str(text).translate({0x2014: "-", 0x2013: "-", 0x201C: '"', 0x201D: '"', 0x2019: "'"})
    return plain.encode("latin-1", "replace").decode("latin-1")


class _Report(FPDF):
    origin = ""

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", "", 8)
        self.set_text_color(*GREY)
        self.cell(0, 5, latin1(f"Audit report of {self.origin} - page {self.page_no()}"), align="C")


def draw(view: View, written_at: datetime) -> bytes:
    """The report as PDF bytes."""
    pdf = _Report(format="A4")
    pdf.origin = view.origin
    pdf.set_compression(False)
    pdf.set_creation_date(written_at)
    pdf.set_title(latin1(f"Audit report: {view.verdict}, {pdf.origin}"))
    pdf.set_auto_page_break(auto=True, margin=16)
    pdf.set_margins(15, 15, 15)
    pdf.add_page()
    width = pdf.epw

    def text(
        words: str, size: float = 10, style: str = "", colour: tuple[int, ...] = (0, 0, 0)
    ) -> None:
        pdf.set_font("Helvetica", style, size)
        pdf.set_text_color(*colour)
        pdf.multi_cell(width, size * 0.5, latin1(words), align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0, 0, 0)

    def heading(words: str, colour: tuple[int, ...] = (0, 0, 0)) -> None:
        if pdf.get_y() > pdf.h - 50:
            pdf.add_page()
        pdf.ln(4)
        text(words, 13, "B", colour)
        pdf.ln(1)

    def table(rows: Sequence[Sequence[object]], widths: Sequence[float], size: float = 8.5) -> None:
        pdf.set_font("Helvetica", "", size)
        with pdf.table(
            col_widths=tuple(widths),
            text_align="LEFT",
            headings_style=HEADINGS,
            line_height=size * 0.5,
            padding=1.2,
            width=width,
        ) as drawn:
            for row in rows:
                cells = drawn.row()
                for value in row:
                    cells.cell(latin1(value), style=OUTCOMES.get(str(value).split(" ")[0]))
        pdf.ln(2)

    # The verdict first, in words and colour.
    text("AUDIT REPORT OF THE CASE LEDGER'S LOG", 9, "B", GREY)
    text(pdf.origin, 16, "B")
    pdf.ln(2)
    colour = GREEN if view.ok else RED
    pdf.set_fill_color(*colour)
    pdf.set_text_color(255, 255, 255)
    pdf.set_font("Helvetica", "B", 22)
    pdf.cell(width, 13, f"  {view.verdict}", fill=True, new_x="LMARGIN", new_y="NEXT")
    pdf.set_fill_color(255, 255, 255)
    pdf.ln(1)
    text(view.headline, 11, "B")
    if view.first is not None and view.first_words is not None:
        where = (
            "the log as a whole"
            if view.first.position is None
            else f"log position {view.first.position:,}"
        )
        heading(f"The first problem: {view.first_words.title}, at {where}", RED)
        text(view.first_words.failure, 10.5)
        pdf.ln(1)
        text(f'Technical detail: check "{view.first.check}": {view.first.message}.', 9, "", GREY)
    if view.attention:
        pdf.ln(3)
        label = (
            "Needs attention, although the log verifies:" if view.ok else "Also needs attention:"
        )
        text(label, 10, "B", AMBER)
        for line in view.attention:
            text(line, 10, "", AMBER)
    pdf.ln(3)
    for label, value in view.facts:
        text(f"{label}: {value}", 9.5)

    heading("What was checked, in the order the audit runs")
    rows: list[Sequence[object]] = [
        ("Step", "Check", "What it makes sure of", "Looked at", "Outcome")
    ]
    rows += [(r.step, r.words.title, r.words.what, r.looked_at, r.says) for r in view.checks]
    table(rows, (9, 32, 72, 30, 37))

    heading("Checkpoints")
    text("A checkpoint is the log's signed summary: how many entries it has, and a fingerprint "
         "(root) of all of them.", 9, "", GREY)  # fmt: skip
    table([("Checkpoint", "Entries", "Root", "Outcome"), *view.checkpoints], (38, 20, 82, 40))

    if view.chart is not None:
        heading("How the log grew")
        pdf.image(io.BytesIO(view.chart.png()), w=width * 0.8)
        figures = ", ".join(f"{label}: {count}" for label, count in view.figures)
        text(figures, 8, "", GREY)

    heading("The rules re-checked, per event type")
    text(f"Every event was re-checked against the ledger's rules, in log order, from what the "
         f"log itself records. {view.reads} re-checked too.",
         9, "", GREY)  # fmt: skip
    rows = [("Event type", "Events re-checked", "Broke the rules")]
    rows += [(t, f"{n:,}", f"{r:,}") for t, n, r in view.gates]
    table(rows, (90, 45, 45))

    heading("Agency keys")
    rows = [("Agency", "Key", "Added", "Revoked", "Compromised since")]
    for k in view.keys:
        how = "with the agency's registration" if k.registered else "a key change"
        added = f"{when(k.added_time)}, position {k.added_at:,}, {how}"
        revoked = "in use"
        if k.revoked_at is not None:
            revoked = f"{when(k.revoked_time)}, position {k.revoked_at:,}"
        since = "-" if k.compromised_since is None else f"position {k.compromised_since:,}"
        rows.append((k.agency, k.key_id, added, revoked, since))
    table(rows, (26, 34, 52, 38, 30))

    if view.failures.rows:
        heading("Every problem found")
        rows = [("Where", "Check", "Detail")]
        rows += [(_where(f.position), f.check, f.message) for f in view.failures.rows]
        table(rows, (28, 40, 112))
        if view.failures.more:
            text(f"... and {view.failures.more:,} more (all: ledger audit verify --json).", 9)
    if view.flags.rows:
        heading("Events signed with a key reported compromised")
        text(FLAGGED, 9.5)
        table([("Where", "Detail"), *((_where(f.position), f.message) for f in view.flags.rows)],
              (28, 152))  # fmt: skip
        if view.flags.more:
            text(f"... and {view.flags.more:,} more.", 9)
    if view.other_flags.rows:
        heading("Other findings")
        text(OTHER_FLAGS, 9.5)
        table([("Check", "Detail"), *((f.check, f.message) for f in view.other_flags.rows)],
              (40, 140))  # fmt: skip
    if view.unacknowledged:
        heading(f"Notices not acknowledged after {view.ack_days} days")
        text(UNACKNOWLEDGED.format(days=view.ack_days), 9.5)
        rows = [("Where", "Notice", "Agency told", "Told at")]
        rows += [(_where(p), kind, agency, at) for p, kind, agency, at in view.unacknowledged]
        table(rows, (28, 50, 52, 50))
        if view.unacknowledged_more:
            text(f"... and {view.unacknowledged_more:,} more.", 9)
    pdf.ln(4)
    text(f"Written {view.written_at} by ledger audit verify, from the log's entries, the "
         "auditor's own copy of the log's key and the keys the agencies gave the auditor; no "
         "decryption key was used. Positions count the log's entries from 0. This report "
         "names no case and holds no personal data.", 8.5, "", GREY)  # fmt: skip
    return bytes(pdf.output())


def _where(position: int | None) -> str:
    return "whole log" if position is None else f"position {position:,}"
