"""The projection contract: tables, a handler per entry, and a purge on erasure."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any

from ledger.storage.base import ViewStore


class Projection(ABC):
    """One read model: its name, its tables and how each log entry changes them."""

    name: str
    tables: tuple[str, ...]
    schema: tuple[str, ...]  # CREATE statements, `{s}` for the schema prefix

    @abstractmethod
    def apply(self, views: ViewStore, cur: Any, position: int, entry: dict[str, Any]) -> None:
        """Apply one log entry (already parsed) inside the page's transaction."""

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


def event_of(entry: dict[str, Any]) -> tuple[str, str, dict[str, Any], dict[str, Any]] | None:
    """(type, case_id, facts, envelope) of an event entry, None for other kinds."""
    if entry.get("kind") != "event":
        return None
    env = entry["envelope"]
    return env["type"], env["case_id"], env["facts"], env
