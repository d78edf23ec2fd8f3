"""Case list: each case's status and the agencies related to it (its holder and the others)."""

from __future__ import annotations

from typing import Any

from ledger.storage.base import ViewStore
from projections.base import Event, Projection, select_page


class CasesProjection(Projection):
    name = "cases"
    tables = ("view_cases", "view_case_agencies")
    schema = (
        "CREATE TABLE IF NOT EXISTS {s}view_cases (case_id TEXT PRIMARY KEY,"
        " opened_at TEXT NOT NULL, opened_by TEXT NOT NULL, status TEXT NOT NULL,"
        " minor INTEGER NOT NULL, version INTEGER NOT NULL, updated_at TEXT NOT NULL,"
        " position BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS view_cases_position ON {s}view_cases (position)",
        "CREATE TABLE IF NOT EXISTS {s}view_case_agencies (case_id TEXT NOT NULL,"
        " agency TEXT NOT NULL, holder INTEGER NOT NULL, PRIMARY KEY (case_id, agency))",
        "CREATE INDEX IF NOT EXISTS view_case_agencies_agency ON {s}view_case_agencies (agency)",
    )

    def on_event(self, views: ViewStore, cur: Any, position: int, event: Event) -> None:
        etype, case_id, facts = event.type, event.case_id, event.facts
        at, agency = event.recorded_at, event.agency
        if etype == "case.opened":
            cur.execute(
                views.sql(
                    "INSERT INTO {s}view_cases (case_id, opened_at, opened_by, status, minor,"
                    " version, updated_at, position) VALUES (?, ?, ?, 'open', ?, 0, ?, ?)"
                ),
                (case_id, at, agency, int(facts["minor"]), at, position),
            )
        cur.execute(
            views.sql(
                "UPDATE {s}view_cases SET version = version + 1, updated_at = ? WHERE case_id = ?"
            ),
            (at, case_id),
        )
        if etype == "age.assessed":
            cur.execute(
                views.sql("UPDATE {s}view_cases SET minor = ? WHERE case_id = ?"),
                (int(facts["minor"]), case_id),
            )
        elif etype == "case.closed":
            cur.execute(
                views.sql("UPDATE {s}view_cases SET status = 'closed' WHERE case_id = ?"),
                (case_id,),
            )
        named = set(facts.get("recipients") or ())
        named.update(facts[k] for k in ("recipient", "to") if facts.get(k))
        holder = etype == "case.opened"  # the agency that opened the case holds it
        for other in sorted(named | {agency}):
            cur.execute(
                views.sql(
                    "INSERT INTO {s}view_case_agencies (case_id, agency, holder) VALUES (?, ?, 0)"
                    " ON CONFLICT DO NOTHING"
                ),
                (case_id, other),
            )
        if holder:
            cur.execute(
                views.sql(
                    "UPDATE {s}view_case_agencies SET holder = 1 WHERE case_id = ? AND agency = ?"
                ),
                (case_id, agency),
            )


def cases_of(
    views: ViewStore,
    agency: str,
    *,
    before: int | None = None,
    limit: int | None = None,
    case_id: str | None = None,
) -> list[dict[str, Any]]:
    """The cases an agency is related to, newest first (by the log position of their
    `case.opened`, a key that never changes: the list's paging order); `before`: only those
    opened before that position; `limit`: at most that many; `case_id`: that case only."""
    query = (
        "SELECT c.case_id, c.status, c.minor, c.opened_at, c.updated_at, c.position, a.holder"
        " FROM {s}view_case_agencies a JOIN {s}view_cases c ON c.case_id = a.case_id"
        " WHERE a.agency = ?"
    )
    filters = [
        None if before is None else ("c.position < ?", [before]),
        None if case_id is None else ("c.case_id = ?", [case_id]),
    ]
    return select_page(views, query, [agency], filters, "c.position DESC", limit)


def cases_opened_from(views: ViewStore, position: int) -> list[tuple[str, int]]:
    """(case_id, position of its case.opened) of the cases opened at or after a position."""
    with views.read() as cur:
        cur.execute(
            views.sql(
                "SELECT case_id, position FROM {s}view_cases WHERE position >= ? ORDER BY position"
            ),
            (position,),
        )
        return [(str(r["case_id"]), int(r["position"])) for r in cur.fetchall()]
