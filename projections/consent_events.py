"""Consent events: which `consent.granted` and `consent.withdrawn` each case holds, by event
id (a receipt's code is keyed by the case's key over one of these ids: the look-up of a
printed code reads them here, not every record of every case)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.storage.base import ViewStore, in_lists
from projections.base import Projection, event_of

KINDS = {"consent.granted": "granted", "consent.withdrawn": "withdrawn"}


class ConsentEventsProjection(Projection):
    name = "consent_events"
    tables = ("view_consent_events",)
    schema = (
        "CREATE TABLE IF NOT EXISTS {s}view_consent_events (event_id TEXT PRIMARY KEY,"
        " case_id TEXT NOT NULL, consent_id TEXT NOT NULL, kind TEXT NOT NULL,"
        " position BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS view_consent_events_case ON {s}view_consent_events (case_id)",
    )

    def apply(self, views: ViewStore, cur: Any, position: int, entry: dict[str, Any]) -> None:
        event = event_of(entry)
        if event is None:
            return
        etype, case_id, facts, env = event
        if etype == "case.erased":
            self.purge(views, cur, case_id)
        elif etype in KINDS:
            cur.execute(
                views.sql(
                    "INSERT INTO {s}view_consent_events"
                    " (event_id, case_id, consent_id, kind, position) VALUES (?, ?, ?, ?, ?)"
                ),
                (env["event_id"], case_id, facts["consent_id"], KINDS[etype], position),
            )


def consent_events_of(
    views: ViewStore, case_ids: Sequence[str]
) -> dict[str, list[tuple[str, str, str]]]:
    """(consent_id, event_id, kind) of each case's consent events, in log order."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    with views.read() as cur:
        for chunk, in_list in in_lists(case_ids):
            cur.execute(
                views.sql(
                    "SELECT case_id, consent_id, event_id, kind FROM {s}view_consent_events"  # noqa: S608
                    f" WHERE case_id IN {in_list} ORDER BY position"
                ),
                chunk,
            )
            for r in cur.fetchall():
                out.setdefault(r["case_id"], []).append((r["consent_id"], r["event_id"], r["kind"]))
    return out
