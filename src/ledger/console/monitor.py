"""The coordinating body's console: monitor accounts, bound to monitor tokens, in a console
run with no agency signing key. A monitor sees the frozen statistics releases as tables and
charts (a suppressed cell marked as suppressed, never shown as zero), freezes the release of
a month that has ended, and downloads a closed year's HTCDS export. Nothing per case: every
other page of the console answers a monitor with a refusal (`pages.MONITOR_PAGES`)."""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ledger.charts import Chart
from ledger.console.accounts import Session
from ledger.console.i18n import translations
from ledger.console.pages import Answered, Console, download

log = logging.getLogger("ledger.console")
PERIOD = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")


def release_views(release: dict[str, Any], _: Any) -> list[dict[str, Any]]:
    """Each table of a release as the page shows it: a header, rows with each cell's count
    or the word for suppressed, and a chart whose suppressed cells are not drawn."""
    suppressed = _("suppressed")
    views = []
    for name, table in release["tables"].items():
        dims, cells = table["dims"], table["cells"]
        rows_of = list(dict.fromkeys(c[dims[0]] for c in cells))
        cols_of = list(dict.fromkeys(c[dims[1]] for c in cells)) if len(dims) > 1 else [""]
        value: dict[tuple[str, str], int | None] = {}
        for c in cells:
            key = (c[dims[0]], c[dims[1]] if len(dims) > 1 else "")
            value[key] = None if c["suppressed"] else c["count"]
        series_names = [_(col) if col else _("cases") for col in cols_of]
        series: dict[str, Sequence[float | None]] = {
            label: [value[r, col] for r in rows_of]
            for label, col in zip(series_names, cols_of, strict=True)
        }
        notes = {
            (label, _(r)): suppressed
            for label, col in zip(series_names, cols_of, strict=True)
            for r in rows_of
            if value[r, col] is None
        }
        title = _("table " + name)
        chart = Chart(title, [_(r) for r in rows_of], series, "bar", _("cases"), notes)
        views.append(
            {
                "id": name,
                "title": title,
                "chart": chart,
                "rows": chart.rows(),
                "suppressed": sum(1 for v in value.values() if v is None),
            }
        )
    return views


def release_csv(release: dict[str, Any]) -> str:
    """Every cell of the release, one a line: table, dimension values, count (empty when
    suppressed) and whether it is suppressed."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["table", "dim_1", "value_1", "dim_2", "value_2", "count", "suppressed"])
    for name, table in release["tables"].items():
        dims = list(table["dims"])
        for c in table["cells"]:
            pairs = [(d, c[d]) for d in dims] + [("", "")] * (2 - len(dims))
            count = "" if c["suppressed"] else c["count"]
            writer.writerow(
                [
                    name,
                    *(x for pair in pairs for x in pair),
                    count,
                    "true" if c["suppressed"] else "false",
                ]
            )
    return out.getvalue()


def add_monitor(app: FastAPI, console: Console) -> None:
    def monitor(request: Request) -> Session:
        why = "statistics are for monitor accounts"
        return console.in_role(console.person(request), "monitor", why)

    @app.get("/statistics", response_class=HTMLResponse)
    def statistics(request: Request) -> Response:
        session = monitor(request)
        releases = console.ask(session, lambda ledger: ledger.releases())
        last_year = datetime.now(UTC).year - 1
        return console.page(
            "statistics.html.j2",
            session.account.language,
            session,
            releases=releases,
            last_year=last_year,
        )

    @app.post("/statistics/releases", response_class=HTMLResponse)
    async def freeze(request: Request) -> Response:
        form = await request.form()
        session = console.poster(request, form.get("csrf"))
        monitor(request)
        period = str(form.get("period", ""))
        if not PERIOD.fullmatch(period):
            raise Answered(
                console.page(
                    "error.html.j2",
                    session.account.language,
                    session,
                    422,
                    message="choose a month",
                )
            )
        console.ask(session, lambda ledger: ledger.freeze_release(period))
        log.info("console release frozen account=%s period=%s", session.account.id, period)
        return RedirectResponse(f"/statistics/{period}", status_code=303)

    @app.get("/statistics/{period}.csv")  # before /statistics/{period}, which would take it
    def release_download(request: Request, period: str) -> Response:
        session = monitor(request)
        if not PERIOD.fullmatch(period):
            raise Answered(console.not_found(session))
        found = console.ask(session, lambda ledger: ledger.release(period))
        return download(release_csv(found), "text/csv; charset=utf-8", f"release-{period}.csv")

    @app.get("/statistics/{period}", response_class=HTMLResponse)
    def release(request: Request, period: str) -> Response:
        session = monitor(request)
        if not PERIOD.fullmatch(period):
            raise Answered(console.not_found(session))
        found = console.ask(session, lambda ledger: ledger.release(period))
        _ = translations(session.account.language).gettext
        return console.page(
            "statistics-release.html.j2",
            session.account.language,
            session,
            release=found,
            views=release_views(found, _),
        )

    @app.post("/statistics/htcds")
    async def htcds(request: Request) -> Response:
        form = await request.form()
        session = console.poster(request, form.get("csrf"))
        monitor(request)
        year = str(form.get("year", ""))
        if not re.fullmatch(r"[0-9]{4}", year):
            raise Answered(
                console.page(
                    "error.html.j2",
                    session.account.language,
                    session,
                    422,
                    message="choose a year that has ended",
                )
            )
        text = console.ask(session, lambda ledger: ledger.htcds_export(int(year)))
        log.info("console htcds export account=%s year=%s", session.account.id, year)
        return download(text, "text/csv; charset=utf-8", f"htcds-{year}.csv")
