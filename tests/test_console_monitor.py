"""The coordinating body's console: monitor accounts on a console with no agency key see the
frozen statistics releases (suppressed cells marked so, never as zero), freeze a month's
release, download the HTCDS export, and nothing else: every other page of the console, the
dashboard and each of its downloads included, answers a monitor 403."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ledger.console.accounts import Accounts, Policy
from ledger.console.app import create_app
from ledger.console.pages import MONITOR_PAGES, Console
from ledger.console.settings import ConsoleSettings
from ledger.contract import crypto
from tests.conftest import OPENED_ATTRS, World
from tests.test_console import PASSWORD, Clock, Desk, open_desk

PERIOD = OPENED_ATTRS["identified_at"][:7]  # the month the scenario's cases were identified


@pytest.fixture
def office(world: World, tmp_path: Path) -> Iterator[TestClient]:
    """The coordinating body's console: no agency key, one monitor account, logged in."""
    ngo = world.agency("ngo-a")
    for i in range(14):  # adults, all female: 14 -> 10 after rounding, others suppressed
        ngo.ok("case.opened", str(uuid.uuid4()), {"minor": False},
               OPENED_ATTRS | {"exploitation": [("labour", "sexual")[i % 2]]})  # fmt: skip
    accounts = Accounts(crypto.new_data_key(), tmp_path / "office.db", policy=Policy(),
                        clock=Clock())  # fmt: skip
    accounts.create("mon", "Monitor", "monitor", PASSWORD, world.token("monitor"))
    console = Console(ConsoleSettings(ledger_url="http://testserver"), accounts, None,
                      transport=world.http._transport)  # fmt: skip
    http = TestClient(create_app(console), base_url="http://127.0.0.1")
    page = http.get("/login")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    form = {"username": "mon", "password": PASSWORD, "code": "", "csrf": found[1]}
    login = http.post("/login", data=form, follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/statistics"
    yield http
    accounts.close()


def csrf(http: TestClient) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', http.get("/statistics").text)
    assert found is not None
    return found[1]


def test_a_monitor_freezes_a_release_and_reads_it_as_tables_and_charts(
    office: TestClient,
) -> None:
    assert "Todavía no se ha congelado" in office.get("/statistics").text
    made = office.post("/statistics/releases", data={"csrf": csrf(office), "period": PERIOD},
                       follow_redirects=False)  # fmt: skip
    assert made.status_code == 303 and made.headers["location"] == f"/statistics/{PERIOD}"
    listed = office.get("/statistics").text
    assert f'href="/statistics/{PERIOD}"' in listed and f"{PERIOD}.csv" in listed
    page = office.get(f"/statistics/{PERIOD}").text
    assert page.count('<svg role="img"') == 5  # every table of the release, with its chart
    assert "style=" not in page.split("<main", 1)[1]  # the charts show under the CSP
    # Adults: 14 cases, published rounded down to 10; the other bands are suppressed: the
    # word, never a zero.
    rows = dict(re.findall(r"<tr><th scope=\"row\">([^<]+)</th><td>([^<]+)</td></tr>", page))
    assert rows, page[:2000]
    assert "10" in rows.values() and "suprimido" in rows.values()
    assert "0" not in rows.values()
    download = office.get(f"/statistics/{PERIOD}.csv")
    assert download.status_code == 200
    assert f'filename="release-{PERIOD}.csv"' in download.headers["content-disposition"]
    cells = list(csv.DictReader(io.StringIO(download.text)))
    age = {c["value_1"]: c for c in cells if c["table"] == "age_band"}
    assert age["adult"]["count"] == "10" and age["adult"]["suppressed"] == "false"
    assert age["0-5"]["count"] == "" and age["0-5"]["suppressed"] == "true"


def test_a_monitor_downloads_the_htcds_export_of_a_closed_year(
    world: World, office: TestClient
) -> None:
    year = world.clock.now.year - 1
    r = office.post("/statistics/htcds", data={"csrf": csrf(office), "year": str(year)})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert f'filename="htcds-{year}.csv"' in r.headers["content-disposition"]
    assert r.text.startswith("year_of_identification,")
    still_open = office.post("/statistics/htcds",
                             data={"csrf": csrf(office), "year": str(year + 1)})  # fmt: skip
    assert still_open.status_code == 422 and "has not ended" in still_open.text
    forged = office.post("/statistics/htcds", data={"csrf": "nope", "year": str(year)})
    assert forged.status_code == 403


def test_a_monitor_sees_nothing_per_case_on_any_other_page(
    world: World, office: TestClient
) -> None:
    """Every GET page of the console but the statistics and the account's own: the dashboard
    and each of its downloads, case pages, receipts, referrals, notices, erasures."""
    case_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    app = office.app
    paths = sorted({r.path for r in app.routes if "GET" in getattr(r, "methods", ())})  # type: ignore[attr-defined]
    checked = 0
    for path in paths:
        if path in ("/login", "/") or path.startswith(("/static", *MONITOR_PAGES)):
            continue
        url = re.sub(r"\{[a-z_]+\}", lambda m: case_id if "case" in m[0] else other, path)
        r = office.get(url, follow_redirects=False)
        assert r.status_code == 403, (url, r.status_code)
        assert "monitoreo solo ve las estadísticas" in r.text
        checked += 1
    assert checked >= 15 and "/dashboard.pdf" in paths and "/dashboard/{name}.csv" in paths
    nav = office.get("/statistics").text
    assert 'href="/cases"' not in nav and 'href="/dashboard"' not in nav


def test_agency_staff_see_no_statistics_pages(world: World, tmp_path: Path) -> None:
    desk: Desk = open_desk(world, "ngo-a", tmp_path)
    try:
        desk.account("ana")
        desk.login("ana")
        for path in ("/statistics", f"/statistics/{PERIOD}", f"/statistics/{PERIOD}.csv"):
            assert desk.http.get(path).status_code == 403, path
        sent = desk.http.post("/statistics/htcds", data={"csrf": desk.csrf(), "year": "2025"})
        assert sent.status_code == 403
    finally:
        desk.accounts.close()
