"""The console follows the ledger's pages (issue 21): its case list reads one page of the
ledger's list per page it shows (it used to read the whole list for each), the Older links
carry the ledger's cursor, and a case's page reads that case alone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.console.app import PAGE
from tests.conftest import World
from tests.test_api_operations import TOKEN, counted
from tests.test_console import Desk, open_desk


@pytest.fixture
def desk(world: World, tmp_path: Path) -> Iterator[Desk]:
    made = open_desk(world, "ngo-a", tmp_path)
    yield made
    made.accounts.close()


def case_reads(world: World) -> float:
    """GET /v1/cases requests the ledger answered so far (its own metrics)."""
    text = world.http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    return counted(text, "ledger_http_requests", route="/v1/cases")


def test_the_case_list_reads_one_ledger_page_per_page_and_follows_its_cursor(
    world: World, desk: Desk
) -> None:
    world.http.app.state.metrics_token = TOKEN  # type: ignore[attr-defined]
    opened = [desk.agency.open_case() for _ in range(2 * PAGE + 4)]
    desk.account("ana")
    desk.login("ana")
    seen: list[set[str]] = []
    path = "/cases"
    while path:
        before = case_reads(world)
        page = desk.http.get(path)
        assert page.status_code == 200
        assert case_reads(world) - before == 1  # one page of the ledger's list, not all
        seen.append({c for c in opened if f"/cases/{c}" in page.text})
        older = re.search(r'href="(/cases\?page=\d+&amp;cursor=[A-Za-z0-9_-]+)"', page.text)
        path = older[1].replace("&amp;", "&") if older else ""
    assert [len(s) for s in seen] == [PAGE, PAGE, 4]
    assert set().union(*seen) == set(opened)
    # A Newer link (no cursor) is followed from the first page: page 2 again, the same cases.
    again = desk.http.get("/cases?page=2").text
    assert {c for c in opened if f"/cases/{c}" in again} == seen[1]
    assert "?page=1" in again
    # A case's own page reads that one case of the list.
    before = case_reads(world)
    assert desk.http.get(f"/cases/{opened[0]}").status_code == 200
    assert case_reads(world) - before == 1
    # A cursor the console did not give is not passed on: the first page instead.
    forged = desk.http.get("/cases?page=3&cursor=not%20a%20cursor")
    assert forged.status_code == 200 and {c for c in opened if c in forged.text} == seen[0]
