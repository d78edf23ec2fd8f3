"""Disclosure register: every share, referral and unsealed read of a case — to whom, which
categories, when, under which consent. The answer to "who has my data?"."""

from __future__ import annotations

import json
from typing import Any

from ledger.storage.base import ViewStore
from projections.base import Event, Projection, dumps, select_page


class DisclosuresProjection(Projection):
    name = "disclosures"
    tables = ("view_disclosures",)
    schema = (
        "CREATE TABLE IF NOT EXISTS {s}view_disclosures (position BIGINT PRIMARY KEY,"
        " case_id TEXT NOT NULL, kind TEXT NOT NULL, agency TEXT NOT NULL,"
        " by_agency TEXT, categories TEXT NOT NULL, consent_id TEXT, purpose TEXT,"
        " at TEXT NOT NULL, actor TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS view_disclosures_case ON {s}view_disclosures (case_id)",
        "CREATE INDEX IF NOT EXISTS view_disclosures_agency ON {s}view_disclosures (agency, kind)",
    )

    def on_access(self, views: ViewStore, cur: Any, position: int, entry: dict[str, Any]) -> None:
        row = (entry["case_id"], "read", entry["agency"], None, dumps(entry["categories"]), None)
        self._insert(views, cur, position, (*row, None, entry["recorded_at"], entry["actor"]))

    def on_event(self, views: ViewStore, cur: Any, position: int, event: Event) -> None:
        facts = event.facts
        if event.type == "data.shared":
            kind, recipient, purpose = "share", facts["recipient"], facts["purpose"]
        elif event.type == "referral.made":
            kind, recipient, purpose = "referral", facts["to"], "referral"
        else:
            return
        row = (event.case_id, kind, recipient, event.agency, dumps(sorted(facts["categories"])))
        at = (event.recorded_at, event.actor)
        self._insert(views, cur, position, (*row, facts["consent_id"], purpose, *at))

    @staticmethod
    def _insert(views: ViewStore, cur: Any, position: int, row: tuple[Any, ...]) -> None:
        cur.execute(
            views.sql(
                "INSERT INTO {s}view_disclosures (position, case_id, kind, agency, by_agency,"
                " categories, consent_id, purpose, at, actor)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            (position, *row),
        )


def disclosures_of(
    views: ViewStore, case_id: str, *, after: int | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """A case's disclosures in log order (the list's paging order); `after`: only those
    after that position; `limit`: at most that many."""
    query = (
        "SELECT position, kind, agency, by_agency, categories, consent_id, purpose, at"
        " FROM {s}view_disclosures WHERE case_id = ?"
    )
    after_ = None if after is None else ("position > ?", [after])
    rows = select_page(views, query, [case_id], [after_], "position", limit)
    for row in rows:
        row["categories"] = json.loads(row["categories"])
    return rows


def shares_to(views: ViewStore, agency: str) -> list[dict[str, Any]]:
    """(case_id, consent_id, categories) of every share an agency received."""
    with views.read() as cur:
        cur.execute(
            views.sql(
                "SELECT case_id, consent_id, categories FROM {s}view_disclosures"
                " WHERE agency = ? AND kind = 'share'"
            ),
            (agency,),
        )
        rows = [dict(r) for r in cur.fetchall()]
    for row in rows:
        row["categories"] = json.loads(row["categories"])
    return rows
