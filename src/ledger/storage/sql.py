"""The SQL store both backends subclass: table access (`tables.py`) and the append engine
(`append.py`); each backend supplies connections, placeholders and the eventsourcing
recorder (`sqlite.py`, `postgres.py`)."""

from __future__ import annotations

from ledger.storage.append import SQLAppendEngine


class SQLStore(SQLAppendEngine):
    """The ledger's tables in SQL (`SQLTables`) with the append engine that writes the log
    (`SQLAppendEngine`); a backend subclasses it with its connections and hooks."""
