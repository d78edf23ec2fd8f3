"""The console's own database: SQLite (a file made 0600) or PostgreSQL, one short transaction
per call, written with `?` placeholders whichever it is."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class Database:
    """SQLite or PostgreSQL with `?` placeholders, one short transaction per call."""

    def __init__(self, url: str | None, path: Path) -> None:
        self.url = url
        self._lock = threading.Lock()
        if url is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # 0600 from the start; SQLite gives its -wal and -shm files the database's mode.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            self._sqlite = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._sqlite.row_factory = sqlite3.Row
            self._sqlite.execute("PRAGMA journal_mode=WAL")
        else:
            import psycopg_pool
            from psycopg.rows import dict_row

            self._pool = psycopg_pool.ConnectionPool(
                url, min_size=1, max_size=4, kwargs={"row_factory": dict_row}, open=True
            )

    @contextmanager
    def cursor(self) -> Iterator[Any]:
        if self.url is None:
            with self._lock:
                cur: Any = self._sqlite.cursor()
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield Placeholders(cur, "?")
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
        else:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield Placeholders(cur, "%s")

    def close(self) -> None:
        if self.url is None:
            self._sqlite.close()
        else:
            self._pool.close()


class Placeholders:
    def __init__(self, cur: Any, mark: str) -> None:
        self.cur, self.mark = cur, mark

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.cur.execute(sql.replace("?", self.mark), params)

    def fetchone(self) -> Any:
        row = self.cur.fetchone()
        return None if row is None else dict(row)

    def fetchall(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.cur.fetchall()]
