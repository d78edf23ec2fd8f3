"""Erasure requests waiting for their second supervisor: each `erasure.requested` until its
case is erased (the purge of `case.erased` removes them). Cleartext facts only: the request's
reason is sealed, and is not here."""

from __future__ import annotations

from typing import Any

from ledger.storage.base import ViewStore
from projections.base import Event, Projection, select_page


class ErasureRequestsProjection(Projection):
    name = "erasure_requests"
    tables = ("view_erasure_requests",)
    schema = (
        "CREATE TABLE IF NOT EXISTS {s}view_erasure_requests (event_id TEXT PRIMARY KEY,"
        " case_id TEXT NOT NULL, agency TEXT NOT NULL, actor TEXT NOT NULL,"
        " requested_at TEXT NOT NULL, position BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS view_erasure_requests_agency"
        " ON {s}view_erasure_requests (agency, position)",
        "CREATE INDEX IF NOT EXISTS view_erasure_requests_case"
        " ON {s}view_erasure_requests (case_id)",
    )

    def on_event(self, views: ViewStore, cur: Any, position: int, event: Event) -> None:
        if event.type != "erasure.requested":
            return
        # Only a supervisor of the case's holder appends it: the signing agency holds the case.
        cur.execute(
            views.sql(
                "INSERT INTO {s}view_erasure_requests (event_id, case_id, agency, actor,"
                " requested_at, position) VALUES (?, ?, ?, ?, ?, ?)"
            ),
            (event.event_id, event.case_id, event.agency, event.actor, event.recorded_at, position),
        )


def erasure_requests_of(
    views: ViewStore, agency: str, *, after: int | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """The erasure requests of the cases an agency holds, oldest first (by log position, the
    list's paging order); `after`: only those after that position; `limit`: at most that
    many. Whether each still waits is for the caller to decide (the case's state)."""
    query = (
        "SELECT event_id, case_id, actor, requested_at, position FROM {s}view_erasure_requests"
        " WHERE agency = ?"
    )
    after_ = None if after is None else ("position > ?", [after])
    return select_page(views, query, [agency], [after_], "position", limit)
