"""SQLite backend: the embedded default, one database file under `LEDGER_HOME`."""

from __future__ import annotations

import fcntl
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
from eventsourcing.sqlite import (
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
    SQLiteDatastore,
    SQLiteTrackingRecorder,
)

from ledger.storage.base import IN_LIST, ViewStore, in_lists
from ledger.storage.keytable import SQLKeyTable
from ledger.storage.schema import Cursor
from ledger.storage.sql import SQLStore

LOCK_TIMEOUT_S = 30


class WriterLock:
    """One writer at a time across threads and processes, for one database file.

    SQLite's own busy handler makes a blocked writer sleep and poll (up to 100 ms a nap),
    which under several server processes turns into long tail latencies; a blocking `flock`
    on a lock file beside the database wakes the next writer as soon as the last one commits.
    """

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".lock")
        self._threads = threading.Lock()  # flock is per open file: threads need their own lock
        self._fd: int | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._threads:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._threads:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


@contextmanager
def immediate(datastore: SQLiteDatastore, lock: WriterLock) -> Iterator[Any]:
    """A cursor in a `BEGIN IMMEDIATE` transaction (writers serialised), committed on exit."""
    with lock.held(), datastore.get_connection(commit=True) as conn:
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
    snapshots: SQLiteAggregateRecorder

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        if not path.exists():  # owner-only from the start; SQLite gives -wal/-shm the same mode
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        super().__init__()
        self.path = path
        self.datastore = SQLiteDatastore(str(path), lock_timeout=LOCK_TIMEOUT_S, pool_size=8)
        self.writer = WriterLock(path)
        self.recorder = SQLiteApplicationRecorder(self.datastore)
        self.snapshots = SQLiteAggregateRecorder(self.datastore, "case_snapshots")

    def setup(self) -> None:
        self.recorder.create_table()
        self.snapshots.create_table()
        with self._write() as cur:
            self._create_ledger_tables(cur)

    def close(self) -> None:
        self.datastore.close()
        self.writer.close()

    def _write(self) -> AbstractContextManager[Any]:
        return immediate(self.datastore, self.writer)

    def _read(self) -> AbstractContextManager[Any]:
        return reading(self.datastore)

    def _insert_stored_events(self, cur: Cursor, events: Sequence[StoredEvent]) -> None:
        self.recorder._insert_events(cur, events)  # type: ignore[arg-type]

    def _insert_snapshots(self, cur: Cursor, snapshots: Sequence[StoredEvent]) -> None:
        self.snapshots._insert_events(cur, snapshots)  # type: ignore[arg-type]

    def _is_conflict(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    def _case_versions(self, cur: Cursor, case_ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk, in_list in in_lists(case_ids):
            cur.execute(
                "SELECT originator_id, MAX(originator_version) AS v FROM stored_events"  # noqa: S608
                f" WHERE originator_id IN {in_list} GROUP BY originator_id",
                [uuid.UUID(c).hex for c in chunk],
            )
            found.update((str(uuid.UUID(r["originator_id"])), int(r["v"])) for r in cur.fetchall())
        return found

    def _stored_versions(
        self, cur: Cursor, pairs: Sequence[tuple[str, int]]
    ) -> set[tuple[str, int]]:
        found: set[tuple[str, int]] = set()
        for where, params in _version_pairs(pairs, "="):
            cur.execute(
                f"SELECT originator_id, originator_version FROM stored_events WHERE {where}",  # noqa: S608
                params,
            )
            found.update(
                (str(uuid.UUID(r["originator_id"])), int(r["originator_version"]))
                for r in cur.fetchall()
            )
        return found

    def _events_after(self, cur: Cursor, versions: Sequence[tuple[str, int]]) -> list[StoredEvent]:
        found: list[StoredEvent] = []
        for where, params in _version_pairs(versions, ">"):
            cur.execute(
                "SELECT originator_id, originator_version, topic, state FROM stored_events"  # noqa: S608
                f" WHERE {where} ORDER BY originator_id, originator_version",
                params,
            )
            found.extend(
                StoredEvent(
                    uuid.UUID(r["originator_id"]), r["originator_version"], r["topic"], r["state"]
                )
                for r in cur.fetchall()
            )
        return found


def _version_pairs(
    pairs: Sequence[tuple[str, int]], op: str
) -> Iterator[tuple[str, list[str | int]]]:
    """`(case, version)` pairs as `WHERE` conditions on stored events (`originator_version
    <op> version` for each case), in chunks within SQLite's parameter limit, with their
    parameters."""
    for chunk, _ in in_lists(pairs, IN_LIST // 2):  # two parameters a pair
        where = " OR ".join([f"(originator_id = ? AND originator_version {op} ?)"] * len(chunk))
        yield where, [v for c, version in chunk for v in (uuid.UUID(c).hex, version)]


class SQLiteKeyTable(SQLKeyTable):
    """Wrapped case keys in their own file under `LEDGER_KEYS`, with secure_delete on."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.writer = WriterLock(path)
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
        self.writer.close()

    @contextmanager
    def _write(self) -> Iterator[Any]:
        with self.writer.held():
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
        with self.writer.held():
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
        self.writer = WriterLock(path)

    def close(self) -> None:
        self.datastore.close()
        self.writer.close()

    def transaction(self) -> AbstractContextManager[Any]:
        return immediate(self.datastore, self.writer)

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
