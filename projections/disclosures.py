"""Disclosure register: every share, referral and unsealed read of a case — to whom, which
categories, when, under which consent. The answer to "who has my data?"."""

from __future__ import annotations

import json
from typing import Any

from ledger.storage.base import ViewStore
from projections.base import Projection, dumps, event_of


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

    def apply(self, views: ViewStore, cur: Any, position: int, entry: dict[str, Any]) -> None:
        row: tuple[Any, ...] | None = None
        if entry.get("kind") == "access":
            row = (
                entry["case_id"],
                "read",
                entry["agency"],
                None,
                dumps(entry["categories"]),
                None,
                None,
            )
        elif (event := event_of(entry)) is not None:
            etype, case_id, facts, env = event
            if etype == "case.erased":
                self.purge(views, cur, case_id)
            elif etype == "data.shared":
                row = (
                    case_id,
                    "share",
                    facts["recipient"],
                    env["agency"],
                    dumps(sorted(facts["categories"])),
                    facts["consent_id"],
                    facts["purpose"],
                )
            elif etype == "referral.made":
                row = (
                    case_id,
                    "referral",
                    facts["to"],
                    env["agency"],
                    dumps(sorted(facts["categories"])),
                    facts["consent_id"],
                    "referral",
                )
        if row is not None:
            cur.execute(
                views.sql(
                    "INSERT INTO {s}view_disclosures (position, case_id, kind, agency, by_agency,"
                    " categories, consent_id, purpose, at, actor)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (position, *row, entry["recorded_at"], entry["actor"]),
            )


def disclosures_of(views: ViewStore, case_id: str) -> list[dict[str, Any]]:
    with views.read() as cur:
        cur.execute(
            views.sql(
                "SELECT position, kind, agency, by_agency, categories, consent_id, purpose, at"
                " FROM {s}view_disclosures WHERE case_id = ? ORDER BY position"
            ),
            (case_id,),
        )
        rows = [dict(r) for r in cur.fetchall()]
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
