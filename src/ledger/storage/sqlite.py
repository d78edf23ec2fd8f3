"""SQLite backend: the embedded default, one database file under `LEDGER_HOME`."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from eventsourcing.persistence import StoredEvent, Tracking
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore, SQLiteTrackingRecorder

from ledger.storage.base import ViewStore
from ledger.storage.sql import Cursor, SQLKeyTable, SQLStore

LOCK_TIMEOUT_S = 30


@contextmanager
def immediate(datastore: SQLiteDatastore) -> Iterator[Any]:
    """A cursor in a `BEGIN IMMEDIATE` transaction (writers serialised), committed on exit."""
    with datastore.get_connection(commit=True) as conn:
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


@contextmanager
def reading(datastore: SQLiteDatastore) -> Iterator[Any]:
    with datastore.get_connection(commit=False) as conn:
        yield conn.cursor()


class SQLiteStore(SQLStore):
    """Event store, log, tree, agencies and tokens in `<home>/ledger.db` (WAL mode)."""

    recorder: SQLiteApplicationRecorder

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        if not path.exists():  # owner-only from the start; SQLite gives -wal/-shm the same mode
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.path = path
        self.datastore = SQLiteDatastore(str(path), lock_timeout=LOCK_TIMEOUT_S, pool_size=8)
        self.recorder = SQLiteApplicationRecorder(self.datastore)

    def setup(self) -> None:
        self.recorder.create_table()
        with self._write() as cur:
            self._create_ledger_tables(cur)

    def close(self) -> None:
        self.datastore.close()

    def _write(self) -> AbstractContextManager[Any]:
        return immediate(self.datastore)

    def _read(self) -> AbstractContextManager[Any]:
        return reading(self.datastore)

    def _insert_stored_events(self, cur: Cursor, events: Sequence[StoredEvent]) -> None:
        self.recorder._insert_events(cur, events)  # type: ignore[arg-type]

    def _is_conflict(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    def _case_version(self, cur: Cursor, case_id: str) -> int:
        cur.execute(
            "SELECT MAX(originator_version) AS v FROM stored_events WHERE originator_id = ?",
            (uuid.UUID(case_id).hex,),
        )
        row = cur.fetchone()
        return int(row["v"] or 0)


class SQLiteKeyTable(SQLKeyTable):
    """Wrapped case keys in their own file under `LEDGER_KEYS`, with secure_delete on."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()  # one writer at a time in this process
        self._local = threading.local()  # one connection per thread
        self._all: list[sqlite3.Connection] = []

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=LOCK_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA secure_delete = ON")
            conn.execute("PRAGMA journal_mode = WAL")
            self._local.conn = conn
            self._all.append(conn)
        return conn

    def setup(self) -> None:
        super().setup()
        self.path.chmod(0o600)

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._local = threading.local()

    @contextmanager
    def _write(self) -> Iterator[Any]:
        with self._lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn.cursor()
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    @contextmanager
    def _read(self) -> Iterator[Any]:
        yield self._conn().cursor()

    def compact(self) -> None:
        """Keep no copy of a destroyed or re-wrapped key in the write-ahead log."""
        with self._lock:
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")


class SQLiteViewStore(ViewStore):
    """Read models in `<home>/views.db`, tracked by eventsourcing's SQLiteTrackingRecorder."""

    def __init__(self, path: Path, poll_s: float = 0.5) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.path = path
        self.poll_s = poll_s
        self.datastore = SQLiteDatastore(str(path), lock_timeout=LOCK_TIMEOUT_S, pool_size=4)
        self.tracking = SQLiteTrackingRecorder(self.datastore)

    def close(self) -> None:
        self.datastore.close()

    def transaction(self) -> AbstractContextManager[Any]:
        return immediate(self.datastore)

    def read(self) -> AbstractContextManager[Any]:
        return reading(self.datastore)

    def track(self, cur: Any, name: str, position: int) -> None:
        self.tracking._insert_tracking(cur, Tracking(name, position))

    def position(self, name: str) -> int:
        return int(self.tracking.max_tracking_id(name) or 0)

    def position_in(self, cur: Any, name: str) -> int:
        # BEGIN IMMEDIATE already serialises writers: the read is stable until commit.
        cur.execute("SELECT notification_id FROM tracking WHERE application_name = ?", (name,))
        row = cur.fetchone()
        return 0 if row is None else int(row[0])

    def forget(self, cur: Any, name: str) -> None:
        cur.execute(
            "INSERT INTO tracking (application_name, notification_id) VALUES (?, 0)"
            " ON CONFLICT (application_name) DO UPDATE SET notification_id = 0",
            (name,),
        )

    def start_tracking(self, cur: Any, name: str) -> None:
        cur.execute(
            "INSERT INTO tracking (application_name, notification_id) VALUES (?, 0)"
            " ON CONFLICT (application_name) DO NOTHING",
            (name,),
        )

    def wait_for_appends(self, timeout: float) -> None:
        time.sleep(min(timeout, self.poll_s))  # SQLite has no notifications: poll
