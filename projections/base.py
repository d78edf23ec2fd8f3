"""The projection contract: tables, a handler per event (and per access entry), and a purge
on erasure. The opening every projection shares is here: registry entries change no read
model, `case.erased` purges the case's rows, every other event goes to `on_event`."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ledger.storage.base import ViewStore


@dataclass(frozen=True)
class Event:
    """An event entry as projections use it: its envelope's cleartext and who recorded it."""

    type: str
    case_id: str
    facts: dict[str, Any]
    agency: str  # the agency that signed it
    event_id: str
    recorded_at: str
    actor: str  # the token that recorded it

    @classmethod
    def of(cls, entry: dict[str, Any]) -> Event:
        env = entry["envelope"]
        return cls(
            env["type"],
            env["case_id"],
            env["facts"],
            env["agency"],
            env["event_id"],
            entry["recorded_at"],
            entry["actor"],
        )


class Projection(ABC):
    """One read model: its name, its tables and how each log entry changes them."""

    name: str
    tables: tuple[str, ...]
    schema: tuple[str, ...]  # CREATE statements, `{s}` for the schema prefix

    def apply(self, views: ViewStore, cur: Any, position: int, entry: dict[str, Any]) -> None:
        """Apply one log entry (already parsed) inside the page's transaction."""
        kind = entry.get("kind")
        if kind == "access":
            self.on_access(views, cur, position, entry)
        elif kind == "event":
            event = Event.of(entry)
            if event.type == "case.erased":
                self.purge(views, cur, event.case_id)
            elif event.type == "notice.acknowledged":
                return  # in no read model (an erased case's rows would come back)
            else:
                self.on_event(views, cur, position, event)

    @abstractmethod
    def on_event(self, views: ViewStore, cur: Any, position: int, event: Event) -> None:
        """An event other than `case.erased`."""

    def on_access(self, views: ViewStore, cur: Any, position: int, entry: dict[str, Any]) -> None:
        """An access entry (an unsealed read): most read models ignore it."""
        return

    def purge(self, views: ViewStore, cur: Any, case_id: str) -> None:
        """Erasure: remove every row derived from the case."""
        for table in self.tables:
            cur.execute(views.sql(f"DELETE FROM {{s}}{table} WHERE case_id = ?"), (case_id,))  # noqa: S608

    def clear(self, views: ViewStore, cur: Any) -> None:
        """Remove every row (before a rebuild)."""
        for table in self.tables:
            cur.execute(views.sql(f"DELETE FROM {{s}}{table}"))  # noqa: S608


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


Filter = tuple[str, Sequence[Any]] | None  # a condition and its parameters; None: not asked


def select_page(
    views: ViewStore,
    query: str,
    params: Sequence[Any],
    filters: Sequence[Filter],
    order: str,
    limit: int | None,
) -> list[dict[str, Any]]:
    """The rows of `query` (its WHERE begun) with each filter asked for ANDed to it, in
    `order` (the list's paging order), at most `limit` of them: the list queries' one shape."""
    params = list(params)
    for given in filters:
        if given is not None:
            query += f" AND {given[0]}"
            params.extend(given[1])
    query += f" ORDER BY {order}"
    if limit is not None:
        query += " LIMIT ?"
        params.append(limit)
    with views.read() as cur:
        cur.execute(views.sql(query), params)
        return [dict(r) for r in cur.fetchall()]
