"""Consent register: every consent's scope, who gave it, assent, expiry and withdrawal."""

from __future__ import annotations

import json
from typing import Any

from ledger.storage.base import ViewStore
from projections.base import Event, Projection, dumps


class ConsentsProjection(Projection):
    name = "consents"
    tables = ("view_consents",)
    schema = (
        "CREATE TABLE IF NOT EXISTS {s}view_consents (case_id TEXT NOT NULL,"
        " consent_id TEXT NOT NULL, event_id TEXT NOT NULL, granted_by TEXT NOT NULL,"
        " granted_at TEXT NOT NULL, position BIGINT NOT NULL, purposes TEXT NOT NULL,"
        " recipients TEXT NOT NULL, categories TEXT NOT NULL, expires_at TEXT,"
        " given_by TEXT NOT NULL, child_assent INTEGER, assent_exempt INTEGER NOT NULL,"
        " withdrawn_at TEXT, withdrawn_by TEXT, PRIMARY KEY (case_id, consent_id))",
    )

    def on_event(self, views: ViewStore, cur: Any, position: int, event: Event) -> None:
        etype, case_id, facts = event.type, event.case_id, event.facts
        if etype == "consent.granted":
            assent = facts["child_assent"]
            cur.execute(
                views.sql(
                    "INSERT INTO {s}view_consents (case_id, consent_id, event_id, granted_by,"
                    " granted_at, position, purposes, recipients, categories, expires_at, given_by,"
                    " child_assent, assent_exempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    case_id,
                    facts["consent_id"],
                    event.event_id,
                    event.agency,
                    event.recorded_at,
                    position,
                    dumps(sorted(facts["purposes"])),
                    dumps(sorted(facts["recipients"])),
                    dumps(sorted(facts["categories"])),
                    facts["expires_at"],
                    facts["given_by"],
                    None if assent is None else int(assent),
                    int(facts["assent_exempt"]),
                ),
            )
        elif etype == "consent.withdrawn":
            cur.execute(
                views.sql(
                    "UPDATE {s}view_consents SET withdrawn_at = ?, withdrawn_by = ?"
                    " WHERE case_id = ? AND consent_id = ?"
                ),
                (event.recorded_at, event.agency, case_id, facts["consent_id"]),
            )


def consents_of(views: ViewStore, case_id: str) -> list[dict[str, Any]]:
    with views.read() as cur:
        cur.execute(
            views.sql("SELECT * FROM {s}view_consents WHERE case_id = ? ORDER BY position"),
            (case_id,),
        )
        rows = [dict(r) for r in cur.fetchall()]
    for row in rows:
        for name in ("purposes", "recipients", "categories"):
            row[name] = json.loads(row[name])
        row["assent_exempt"] = bool(row["assent_exempt"])
        row["child_assent"] = None if row["child_assent"] is None else bool(row["child_assent"])
    return rows


def consents_naming(views: ViewStore, agency: str) -> list[dict[str, Any]]:
    """Unwithdrawn consents whose recipients include the agency, for the case list."""
    like = f'%"{agency}"%'
    with views.read() as cur:
        cur.execute(
            views.sql(
                "SELECT case_id, consent_id, categories, purposes, recipients, expires_at,"
                " given_by, child_assent FROM {s}view_consents"
                " WHERE withdrawn_at IS NULL AND recipients LIKE ?"
            ),
            (like,),
        )
        rows = [dict(r) for r in cur.fetchall()]
    return [r for r in rows if agency in json.loads(r["recipients"])]
