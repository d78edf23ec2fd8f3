"""PostgreSQL backend (psycopg 3): ledger tables in one schema, case keys in another."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
from eventsourcing.persistence import StoredEvent, Tracking
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresTrackingRecorder,
)
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from ledger.storage.base import ViewStore
from ledger.storage.keytable import SQLKeyTable
from ledger.storage.schema import Cursor
from ledger.storage.sql import SQLStore

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


def check_schema(name: str) -> str:
    if not _SCHEMA.match(name):
        raise ValueError("schema names are lowercase letters, digits and underscores")
    return name


def datastore_for(url: str, schema: str, pool_size: int = 4) -> PostgresDatastore:
    info = conninfo_to_dict(url)
    return PostgresDatastore(
        dbname=str(info.get("dbname", "postgres")),
        host=str(info.get("host", "127.0.0.1")),
        port=str(info.get("port", "5432")),
        user=str(info.get("user", "postgres")),
        password=str(info.get("password", "")),
        schema=schema,
        pool_size=pool_size,
        max_overflow=8,
        lock_timeout=30,
    )


_DDL_LOCK = 0x6C65646765720001  # pg_advisory_lock key: "ledger" and 1


@contextmanager
def ddl_lock(url: str) -> Iterator[None]:
    """One process at a time creates schemas and tables: in PostgreSQL, two concurrent
    `CREATE ... IF NOT EXISTS` of one name can fail on the catalog's unique index (the API's
    processes and the worker all set up the read models when a new deployment starts)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_DDL_LOCK,))
        yield  # released when the connection closes


@contextmanager
def pipelined(cur: Any) -> Iterator[Any]:
    """A cursor of its own in pipeline mode, in `cur`'s transaction, for writes whose results
    nobody reads: they go out without waiting for each answer, and an error is raised by the
    end of the block. Nothing is fetched from it, and nothing is fetched from `cur` inside
    the block, so no read can be handed a result queued by these writes."""
    with cur.connection.pipeline(), cur.connection.cursor() as writer:
        yield writer


class PostgresStore(SQLStore):
    """Event store, log, tree, agencies and tokens in schema `<schema>`."""

    blob = "BYTEA"
    placeholder = "%s"
    # FOR SHARE, not FOR KEY SHARE: an UPDATE of a non-key column (removed_at) takes a
    # FOR NO KEY UPDATE lock, which only FOR SHARE and stronger conflict with.
    share_lock = " FOR SHARE"
    recorder: PostgresApplicationRecorder
    snapshots: PostgresAggregateRecorder

    def __init__(self, url: str, schema: str = "ledger") -> None:
        super().__init__()
        self.url = url
        self.schema = check_schema(schema)
        self.prefix = f"{self.schema}."
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
        self.datastore = datastore_for(url, self.schema)
        self.recorder = PostgresApplicationRecorder(self.datastore)
        self.snapshots = PostgresAggregateRecorder(
            self.datastore, events_table_name="case_snapshots"
        )

    def setup(self) -> None:
        self.recorder.create_table()
        self.snapshots.create_table()
        with self._write() as cur:
            self._create_ledger_tables(cur)

    def close(self) -> None:
        self.datastore.close()

    @contextmanager
    def _write(self) -> Iterator[Any]:
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    @contextmanager
    def _read(self) -> Iterator[Any]:
        with self.datastore.get_connection() as conn, conn.cursor() as cur:
            yield cur

    def _insert_stored_events(self, cur: Cursor, events: Sequence[StoredEvent]) -> None:
        # The columns eventsourcing's recorder writes, row by row in one pipelined
        # executemany: its own insert dumps the events as an array of a composite type, in
        # Python (265 ms for 1,000 events of 3 KB here, against 52 ms), and the application
        # recorder's adds a LOCK TABLE and a NOTIFY. Appends are already serialised by the log
        # head's row lock, and nothing here reads eventsourcing's notification ids or channel.
        self._insert_rows(cur, "stored_events", events)

    def _insert_snapshots(self, cur: Cursor, snapshots: Sequence[StoredEvent]) -> None:
        self._insert_rows(cur, "case_snapshots", snapshots)

    def _insert_rows(self, cur: Cursor, table: str, events: Sequence[StoredEvent]) -> None:
        cur.executemany(
            f"INSERT INTO {self.schema}.{table}"  # noqa: S608
            " (originator_id, originator_version, topic, state) VALUES (%s, %s, %s, %s)",
            [(e.originator_id, e.originator_version, e.topic, e.state) for e in events],
        )

    def _is_conflict(self, exc: BaseException) -> bool:
        from eventsourcing.persistence import IntegrityError

        return isinstance(exc, psycopg.errors.UniqueViolation | IntegrityError)

    def _writes(self, cur: Cursor) -> AbstractContextManager[Any]:
        return pipelined(cur)  # the append's reads (head, checks, tree edge) all come before

    def _after_append(self, cur: Cursor) -> None:
        cur.execute(f"NOTIFY {self.schema}_log")  # wakes the projections; delivered at commit

    def _case_versions(self, cur: Cursor, case_ids: Sequence[str]) -> dict[str, int]:
        if not case_ids:
            return {}
        cur.execute(
            f"SELECT originator_id, MAX(originator_version) AS v"  # noqa: S608
            f" FROM {self.schema}.stored_events WHERE originator_id = ANY(%s::uuid[])"
            " GROUP BY originator_id",
            (list(case_ids),),
        )
        return {str(r["originator_id"]): int(r["v"]) for r in cur.fetchall()}

    def _stored_versions(
        self, cur: Cursor, pairs: Sequence[tuple[str, int]]
    ) -> set[tuple[str, int]]:
        if not pairs:
            return set()
        cur.execute(
            f"SELECT s.originator_id, s.originator_version FROM {self.schema}.stored_events s"  # noqa: S608
            " JOIN unnest(%s::uuid[], %s::bigint[]) AS p(id, v)"
            " ON s.originator_id = p.id AND s.originator_version = p.v",
            ([c for c, _ in pairs], [v for _, v in pairs]),
        )
        return {(str(r["originator_id"]), int(r["originator_version"])) for r in cur.fetchall()}

    def _events_after(self, cur: Cursor, versions: Sequence[tuple[str, int]]) -> list[StoredEvent]:
        cur.execute(
            "SELECT s.originator_id, s.originator_version, s.topic, s.state"  # noqa: S608
            f" FROM {self.schema}.stored_events s"
            " JOIN unnest(%s::uuid[], %s::bigint[]) AS p(id, v)"
            " ON s.originator_id = p.id AND s.originator_version > p.v"
            " ORDER BY s.originator_id, s.originator_version",
            ([c for c, _ in versions], [v for _, v in versions]),
        )
        return [
            StoredEvent(r["originator_id"], r["originator_version"], r["topic"], bytes(r["state"]))
            for r in cur.fetchall()
        ]


class PostgresKeyTable(SQLKeyTable):
    """Wrapped case keys in schema `<schema>_keys`, apart from the event store."""

    blob = "BYTEA"
    placeholder = "%s"

    def __init__(self, url: str, schema: str = "ledger") -> None:
        self.url = url
        self.schema = check_schema(f"{schema}_keys")
        self.prefix = f"{self.schema}."
        from psycopg_pool import ConnectionPool

        self.pool = ConnectionPool(
            url, min_size=1, max_size=8, open=True, kwargs={"row_factory": dict_row}
        )

    def setup(self) -> None:
        with self._write() as cur:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
        super().setup()

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def _write(self) -> Iterator[Any]:
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    @contextmanager
    def _read(self) -> Iterator[Any]:
        with self.pool.connection() as conn, conn.cursor() as cur:
            yield cur

    def compact(self) -> None:
        """Outside any transaction: reclaim dead tuples that still hold old wrapped keys."""
        with self.pool.connection() as conn:
            conn.autocommit = True
            conn.execute(f"VACUUM {self.schema}.case_keys")
            conn.autocommit = False


class PostgresViewStore(ViewStore):
    """Read models in schema `<schema>_views`, tracked by eventsourcing's tracking recorder,
    woken by NOTIFY from the ledger's appends (with a polling fallback)."""

    placeholder = "%s"
    blob = "BYTEA"

    def __init__(self, url: str, schema: str = "ledger", poll_s: float = 2.0) -> None:
        self.url = url
        self.log_channel = f"{check_schema(schema)}_log"
        self.schema = check_schema(f"{schema}_views")
        self.prefix = f"{self.schema}."
        self.poll_s = poll_s
        with ddl_lock(url), psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
        self.datastore = datastore_for(url, self.schema)
        self.tracking = PostgresTrackingRecorder(self.datastore)
        self._listener: psycopg.Connection[Any] | None = None

    def setup(self, statements: Sequence[str]) -> None:
        with ddl_lock(self.url):
            super().setup(statements)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self.datastore.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    @contextmanager
    def read(self) -> Iterator[Any]:
        with self.datastore.get_connection() as conn, conn.cursor() as cur:
            yield cur

    def writes(self, cur: Any) -> AbstractContextManager[Any]:
        return pipelined(cur)  # positions are read before, and tracked after, the block

    def track(self, cur: Any, name: str, position: int) -> None:
        self.tracking._insert_tracking(cur, Tracking(name, position))

    def position(self, name: str) -> int:
        return int(self.tracking.max_tracking_id(name) or 0)

    def position_in(self, cur: Any, name: str) -> int:
        cur.execute(
            f"SELECT notification_id FROM {self.schema}.{self.tracking.tracking_table_name}"  # noqa: S608
            " WHERE application_name = %s FOR UPDATE",
            (name,),
        )
        row = cur.fetchone()
        return 0 if row is None else int(row["notification_id"])

    def forget(self, cur: Any, name: str) -> None:
        # Back to 0 (not deleted): the row stays, so `position_in` can always lock it.
        cur.execute(
            f"INSERT INTO {self.schema}.{self.tracking.tracking_table_name}"  # noqa: S608
            " (application_name, notification_id) VALUES (%s, 0)"
            " ON CONFLICT (application_name) DO UPDATE SET notification_id = 0",
            (name,),
        )

    def start_tracking(self, cur: Any, name: str) -> None:
        cur.execute(
            f"INSERT INTO {self.schema}.{self.tracking.tracking_table_name}"  # noqa: S608
            " (application_name, notification_id) VALUES (%s, 0)"
            " ON CONFLICT (application_name) DO NOTHING",
            (name,),
        )

    def wait_for_appends(self, timeout: float) -> None:
        """LISTEN for the ledger's NOTIFY; a lost notification costs at most `poll_s`."""
        try:
            if self._listener is None or self._listener.closed:
                self._listener = psycopg.connect(self.url, autocommit=True)
                self._listener.execute(f"LISTEN {self.log_channel}")
            for _ in self._listener.notifies(timeout=min(timeout, self.poll_s), stop_after=1):
                pass
        except psycopg.Error:
            if self._listener is not None:
                self._listener.close()
            self._listener = None
            time.sleep(min(timeout, self.poll_s))
