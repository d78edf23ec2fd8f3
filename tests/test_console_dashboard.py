"""The supervisors' dashboard in the console, over HTTP against a real ledger: the numbers on
the page, in each CSV and in the PDF are the indicators' (worked out independently in
tests/test_indicators.py), every chart has its table, and caseworkers see none of it."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from tests.conftest import World
from tests.test_console import Desk, open_desk
from tests.test_indicators import MARCH, Scenario, scenario  # noqa: F401  (the fixture)

QUERY = f"from={MARCH['from']}&to={MARCH['to']}"


@pytest.fixture
def ngo_desk(world: World, scenario: Scenario, tmp_path: Path) -> Iterator[Desk]:  # noqa: F811
    made = open_desk(world, "ngo", tmp_path)
    yield made
    made.accounts.close()


def supervisor(desk: Desk) -> None:
    secret = desk.account("sup", "supervisor")
    assert secret is not None
    assert desk.login("sup", code=pyotp.TOTP(secret).at(desk.clock.now)).status_code == 303


def rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_the_dashboard_shows_each_figure_as_a_chart_with_its_table(ngo_desk: Desk) -> None:
    supervisor(ngo_desk)
    page = ngo_desk.http.get(f"/dashboard?{QUERY}")
    assert page.status_code == 200, page.text
    html = page.text
    assert 'lang="es"' in html and "Panel de la agencia" in html
    # The celerity sentence: 2 of the 4 cases identified in March, half of them.
    assert re.search(r"2 de 4 casos .* \(50 %\)", html), html[:3000]
    sections = re.findall(r'<section class="figure"[^>]*>(.*?)</section>', html, re.S)
    assert len(sections) == 5
    for section in sections:
        if "<svg" in section:
            assert 'role="img"' in section and "<table>" in section  # the data beside it
            assert "style=" not in section  # shows under the console's CSP
    assert html.count("<svg") == 4  # declined reasons is a table only
    # Links keep the filters.
    assert 'href="/dashboard.pdf?from=2027-03&amp;to=2027-03&amp;direction=made"' in html


def test_each_csv_holds_the_table_beside_its_chart(ngo_desk: Desk) -> None:
    supervisor(ngo_desk)
    celerity = ngo_desk.http.get(f"/dashboard/celerity.csv?{QUERY}")
    assert celerity.status_code == 200
    assert celerity.headers["content-type"].startswith("text/csv")
    assert 'filename="celerity-2027-03-2027-03.csv"' in celerity.headers["content-disposition"]
    header, march = rows(celerity.text)
    assert march[:5] == ["2027-03", "4", "2", "1", "1"]
    assert float(march[5]) == pytest.approx(23.98, abs=0.01)
    table = rows(ngo_desk.http.get(f"/dashboard/referrals.csv?{QUERY}").text)
    (health,) = [r for r in table if r[0].lower().startswith("salud")]
    assert health[1:7] == ["5", "3", "0", "1", "1", "3"]  # made, statuses, overdue now
    consents = rows(ngo_desk.http.get(f"/dashboard/consents.csv?{QUERY}").text)
    assert consents[1] == ["2027-03", "5", "1", "1"]
    assert ngo_desk.http.get(f"/dashboard/nothing.csv?{QUERY}").status_code == 404


def test_the_pdf_report_carries_every_figure(ngo_desk: Desk) -> None:
    supervisor(ngo_desk)
    r = ngo_desk.http.get(f"/dashboard.pdf?{QUERY}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF-") and len(r.content) > 20_000  # charts embedded
    assert r.content.count(b"/Subtype /Image") >= 4


def test_a_caseworker_sees_no_dashboard(ngo_desk: Desk) -> None:
    ngo_desk.account("ana")
    ngo_desk.login("ana")
    for path in ("/dashboard", "/dashboard/celerity.csv", "/dashboard.pdf"):
        r = ngo_desk.http.get(f"{path}?{QUERY}")
        assert r.status_code == 403, path
        assert "2027-03" not in r.text
    assert 'href="/dashboard"' not in ngo_desk.http.get("/cases").text


def test_bad_filters_fall_back_to_the_defaults(ngo_desk: Desk) -> None:
    supervisor(ngo_desk)
    page = ngo_desk.http.get("/dashboard?from=2027-13&component=nope&direction=x")
    assert page.status_code == 200
    assert 'value="made" selected' in page.text
