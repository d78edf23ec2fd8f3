"""Storage backends, chosen by configuration (`open_store`), never by `if backend == ...`
scattered through the code."""

from __future__ import annotations

from ledger.settings import Settings
from ledger.storage.base import Store, ViewStore
from ledger.storage.keytable import KeyTable


def open_store(settings: Settings) -> tuple[Store, KeyTable]:
    """The event/log store and the case key table for these settings (not yet set up)."""
    if settings.is_postgres:
        from ledger.storage.postgres import PostgresKeyTable, PostgresStore

        url = settings.database_url or ""
        return PostgresStore(url, settings.pg_schema), PostgresKeyTable(url, settings.pg_schema)
    from ledger.storage.sqlite import SQLiteKeyTable, SQLiteStore

    return (
        SQLiteStore(settings.home / "ledger.db"),
        SQLiteKeyTable(settings.keys / "keystore.db"),
    )


def open_views(settings: Settings) -> ViewStore:
    """The read-model store for these settings (not yet set up)."""
    if settings.is_postgres:
        from ledger.storage.postgres import PostgresViewStore

        return PostgresViewStore(settings.database_url or "", settings.pg_schema)
    from ledger.storage.sqlite import SQLiteViewStore

    return SQLiteViewStore(settings.home / "views.db")
