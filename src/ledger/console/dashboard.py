"""The supervisors' dashboard: the agency's guideline indicators (`GET /v1/agencies/{id}/
indicators`, counts only) as charts drawn on the server, each with its data table beside it,
a CSV of each table, and the whole as a PDF report to print or send.

Every view is one list of `Table`s built from the figures: the page, the CSV and the PDF show
the same numbers, in the person's language."""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import matplotlib
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from ledger.charts import Chart
from ledger.console.accounts import Session
from ledger.console.i18n import translations
from ledger.console.pages import Answered, Console, download
from ledger.contract.vocabulary import COMPONENTS

log = logging.getLogger("ledger.console")
MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"  # DejaVu Sans: every language's letters
STATUSES = ("pending", "accepted", "declined", "completed")


@dataclass(frozen=True)
class Table:
    """One figure of the dashboard: its chart, and the rows the chart is drawn from."""

    id: str  # its CSV's name
    title: str
    header: list[str]
    rows: list[list[str]]
    chart: Chart | None = None
    summary: str | None = None  # the figure in one sentence, above the chart


def number(value: Any) -> str:
    if value is None:
        return "—"
    # Two decimals: 23.98 h is not 24 h when the rule is 24 h.
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def tables(figures: dict[str, Any], _: Callable[[str], str]) -> list[Table]:
    """The dashboard's figures, each as a table with its chart."""
    c = figures["celerity"]
    months = [row["month"] for row in c["by_month"]]
    share = "—" if c["share_in_time"] is None else f"{round(100 * c['share_in_time'])} %"
    celerity = Table(
        "celerity",
        _("First health or psychosocial care within 24 hours (principle XI)"),
        [
            _("Month identified"),
            _("Cases identified"),
            _("In time"),
            _("Late"),
            _("No care referral yet"),
            _("Median hours"),
        ],
        [
            [
                r["month"],
                str(r["identified"]),
                str(r["in_time"]),
                str(r["late"]),
                str(r["no_care_yet"]),
                number(r["median_hours"]),
            ]
            for r in c["by_month"]
        ],
        Chart(
            _("First health or psychosocial care within 24 hours (principle XI)"),
            months,
            {
                _("In time"): [r["in_time"] for r in c["by_month"]],
                _("Late"): [r["late"] for r in c["by_month"]],
                _("No care referral yet"): [r["no_care_yet"] for r in c["by_month"]],
            },
            "stacked",
            _("cases"),
        ),
        _(
            "{in_time} of {identified} cases identified in the period ({share}) had their first"
            " health or psychosocial referral within 24 hours; median time: {median} hours."
        ).format(
            in_time=c["in_time"],
            identified=c["identified"],
            share=share,
            median=number(c["median_hours"]),
        ),
    )
    r = figures["referrals"]
    by = r["by_component"]
    referrals = Table(
        "referrals",
        _("Referrals by service and outcome"),
        [
            _("Service"),
            _("Made"),
            *(_(s) for s in STATUSES),
            _("Overdue now"),
            _("Median hours to answer"),
        ],
        [
            [
                _(row["component"]),
                str(row["made"]),
                *(str(row[s]) for s in STATUSES),
                str(row["overdue_now"]),
                number(row["median_hours_to_answer"]),
            ]
            for row in by
        ],
        Chart(
            _("Referrals by service and outcome"),
            [_(row["component"]) for row in by],
            {_(s): [row[s] for row in by] for s in STATUSES},
            "stacked",
            _("referrals"),
        )
        if by
        else None,
        _(
            "{made} referrals, {open} still open, {overdue} overdue now; median time to an"
            " answer: {median} hours."
        ).format(
            made=r["made"],
            open=r["open"],
            overdue=r["overdue_now"],
            median=number(r["median_hours_to_answer"]),
        ),
    )
    declined = Table(
        "declined",
        _("Declined referrals by reason"),
        [_("Reason"), _("Declined")],
        [[_(row["reason"]), str(row["declined"])] for row in r["declined_by_reason"]],
    )
    consents = Table(
        "consents",
        _("Consents by month"),
        [_("Month"), _("Granted"), _("Withdrawn"), _("Expired")],
        [
            [row["month"], str(row["granted"]), str(row["withdrawn"]), str(row["expired"])]
            for row in figures["consents"]
        ],
        Chart(
            _("Consents by month"),
            [row["month"] for row in figures["consents"]],
            {
                _(k.capitalize()): [row[k] for row in figures["consents"]]
                for k in ("granted", "withdrawn", "expired")
            },
            "bar",
            _("consents"),
        ),
    )
    cases = Table(
        "cases",
        _("Cases opened and closed by month"),
        [_("Month"), _("Opened in the month"), _("Closed in the month")],
        [[row["month"], str(row["opened"]), str(row["closed"])] for row in figures["cases"]],
        Chart(
            _("Cases opened and closed by month"),
            [row["month"] for row in figures["cases"]],
            {
                _("Opened in the month"): [row["opened"] for row in figures["cases"]],
                _("Closed in the month"): [row["closed"] for row in figures["cases"]],
            },
            "line",
            _("cases"),
        ),
    )
    return [celerity, referrals, declined, consents, cases]


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(table.header)
    writer.writerows(table.rows)
    return out.getvalue()


def to_pdf(title: str, lines: list[str], views: list[Table]) -> bytes:
    """The dashboard as an A4 report: its title and filters, then each figure's sentence,
    chart and table (fpdf2, DejaVu Sans for every language's letters)."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_creator("ledger console")
    pdf.set_creation_date(datetime(2000, 1, 1, tzinfo=UTC))  # the figures date it, not this
    pdf.add_font("DejaVu", fname=str(FONTS / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", style="B", fname=str(FONTS / "DejaVuSans-Bold.ttf"))
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    pdf.set_font("DejaVu", size=16)
    pdf.multi_cell(0, 8, title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", size=9)
    for line in lines:
        pdf.multi_cell(0, 5, line, new_x="LMARGIN", new_y="NEXT")
    for view in views:
        pdf.ln(4)
        pdf.set_font("DejaVu", size=12)
        pdf.multi_cell(0, 6, view.title, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("DejaVu", size=9)
        if view.summary:
            pdf.multi_cell(0, 5, view.summary, new_x="LMARGIN", new_y="NEXT")
        if view.chart is not None and view.rows:
            pdf.image(io.BytesIO(view.chart.png(dpi=120)), w=170)
        if view.rows:
            with pdf.table(text_align="RIGHT", first_row_as_headings=True) as grid:
                for row in [view.header, *view.rows]:
                    cells = grid.row()
                    for cell in row:
                        cells.cell(cell)
    return bytes(pdf.output())


def add_dashboard(app: FastAPI, console: Console) -> None:
    def figures_for(request: Request) -> tuple[Session, dict[str, Any], dict[str, str]]:
        session = console.in_role(
            console.person(request), "supervisor", "the dashboard is for supervisors"
        )
        q = request.query_params
        chosen = {
            "from": q.get("from", "") if MONTH.fullmatch(q.get("from", "")) else "",
            "to": q.get("to", "") if MONTH.fullmatch(q.get("to", "")) else "",
            "component": q.get("component", "") if q.get("component") in COMPONENTS else "",
            "direction": "received" if q.get("direction") == "received" else "made",
        }
        agency = console.agency_name or ""
        figures = console.ask(
            session,
            lambda ledger: ledger.indicators(
                agency,
                chosen["from"] or None,
                chosen["to"] or None,
                chosen["component"] or None,
                chosen["direction"],
            ),
        )
        return session, figures, chosen

    def views_of(session: Session, figures: dict[str, Any]) -> list[Table]:
        return tables(figures, translations(session.account.language).gettext)

    @app.get("/dashboard", response_class=HTMLResponse)
    def dashboard(request: Request) -> Response:
        session, figures, chosen = figures_for(request)
        query = urlencode({k: v for k, v in chosen.items() if v})
        return console.page(
            "dashboard.html.j2",
            session.account.language,
            session,
            figures=figures,
            views=views_of(session, figures),
            chosen=chosen,
            components=COMPONENTS,
            query=query,
        )

    @app.get("/dashboard/{name}.csv")
    def dashboard_csv(request: Request, name: str) -> Response:
        session, figures, _ = figures_for(request)
        found = [v for v in views_of(session, figures) if v.id == name]
        if not found:
            raise Answered(console.not_found(session))
        period = figures["period"]
        filename = f"{name}-{period['from']}-{period['to']}.csv"
        return download(to_csv(found[0]), "text/csv; charset=utf-8", filename)

    @app.get("/dashboard.pdf")
    def dashboard_pdf(request: Request) -> Response:
        session, figures, chosen = figures_for(request)
        _ = translations(session.account.language).gettext
        period = figures["period"]
        lines = [
            f"{_('Agency')}: {figures['agency']}",
            f"{_('Period')}: {period['from']} — {period['to']}",
            f"{_('Referrals')}: {_('made by the agency') if chosen['direction'] == 'made' else _('received by the agency')}"  # noqa: E501
            + (f" · {_(chosen['component'])}" if chosen["component"] else ""),
            f"{_('Computed at')}: {figures['computed_at']}",
            _("Counts only: nothing here identifies a person."),
        ]
        body = to_pdf(_("Agency dashboard"), lines, views_of(session, figures))
        log.info("console dashboard pdf account=%s", session.account.id)
        filename = f"dashboard-{period['from']}-{period['to']}.pdf"
        return download(body, "application/pdf", filename)
