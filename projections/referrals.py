"""Referral tracker: each referral's parties, consent, categories and status."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ledger.storage.base import ViewStore
from projections.base import Event, Projection, dumps, select_page

ANSWERS = {
    "referral.accepted": "accepted",
    "referral.declined": "declined",
    "referral.completed": "completed",
}


class ReferralsProjection(Projection):
    name = "referrals"
    tables = ("view_referrals",)
    schema = (
        "CREATE TABLE IF NOT EXISTS {s}view_referrals (case_id TEXT NOT NULL,"
        " referral_id TEXT NOT NULL, event_id TEXT NOT NULL, from_agency TEXT NOT NULL,"
        " to_agency TEXT NOT NULL, consent_id TEXT NOT NULL, categories TEXT NOT NULL,"
        " status TEXT NOT NULL, made_at TEXT NOT NULL, updated_at TEXT NOT NULL,"
        " PRIMARY KEY (case_id, referral_id))",
        "CREATE INDEX IF NOT EXISTS view_referrals_to ON {s}view_referrals (to_agency)",
        "CREATE INDEX IF NOT EXISTS view_referrals_from ON {s}view_referrals (from_agency)",
    )

    def on_event(self, views: ViewStore, cur: Any, position: int, event: Event) -> None:
        etype, case_id, facts = event.type, event.case_id, event.facts
        at = event.recorded_at
        if etype == "referral.made":
            cur.execute(
                views.sql(
                    "INSERT INTO {s}view_referrals (case_id, referral_id, event_id, from_agency,"
                    " to_agency, consent_id, categories, status, made_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)"
                ),
                (
                    case_id,
                    facts["referral_id"],
                    event.event_id,
                    event.agency,
                    facts["to"],
                    facts["consent_id"],
                    dumps(sorted(facts["categories"])),
                    at,
                    at,
                ),
            )
        elif etype in ANSWERS:
            cur.execute(
                views.sql(
                    "UPDATE {s}view_referrals SET status = ?, updated_at = ?"
                    " WHERE case_id = ? AND referral_id = ?"
                ),
                (ANSWERS[etype], at, case_id, facts["referral_id"]),
            )


def referrals_of(
    views: ViewStore,
    agency: str,
    status: str | None = None,
    *,
    after: tuple[str, str, str] | None = None,
    limit: int | None = None,
    to: str | None = None,
    case_ids: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Referrals an agency made or received, oldest first: by (made_at, case_id,
    referral_id), keys that never change (the list's paging order); `after`: only those
    after that key; `limit`: at most that many; `to`: those made to that agency;
    `case_ids`: those of these cases."""
    query = "SELECT * FROM {s}view_referrals WHERE (from_agency = ? OR to_agency = ?)"
    if case_ids is not None and not case_ids:
        return []
    filters = [
        None if status is None else ("status = ?", [status]),
        None if to is None else ("to_agency = ?", [to]),
        None if after is None else ("(made_at, case_id, referral_id) > (?, ?, ?)", after),
        None if case_ids is None
        else (f"case_id IN ({', '.join('?' for _ in case_ids)})", case_ids),
    ]  # fmt: skip
    order = "made_at, case_id, referral_id"
    rows = select_page(views, query, [agency, agency], filters, order, limit)
    for row in rows:
        row["categories"] = json.loads(row["categories"])
    return rows
