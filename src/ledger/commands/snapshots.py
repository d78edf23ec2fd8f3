"""Consistent copies of a deployment's databases, and putting them back, one class per
backend (`snapshots_for` chooses by the settings).

SQLite: each file copied with SQLite's online backup API in one step (one read transaction:
a consistent copy while servers write), the read models first, then the ledger, then the case
keys: the read models are never ahead of the log, and every case of the copied log has its
key (a key made meanwhile for a case not in the copy is an orphan that recovery drops).
PostgreSQL: one exported snapshot (`pg_export_snapshot`) shared by two `pg_dump` runs, the
ledger with its read models, and the case keys in a file of their own; put back with `psql`
in one transaction. Neither ever copies the key-encryption key, which is a file.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.commands.exits import UNREACHABLE, CommandError
from ledger.settings import Settings

Step = Callable[[str], None]  # called as each file is done, with its name


@dataclass(frozen=True)
class Facts:
    """What a snapshot holds, read inside it: for the manifest and the restore's checks."""

    origin: str | None
    log_size: int
    checkpoint: str | None  # the newest signed checkpoint in it (a note)
    kek_ids: list[str]  # the KEKs its case keys are wrapped by
    case_keys: int


def _facts(cur: Any, ledger: str, keys: str) -> Facts:
    """`ledger` and `keys`: the tables' prefixes (a schema and a dot, or a database alias)."""
    cur.execute(f"SELECT value FROM {ledger}ledger_meta WHERE key = 'origin'")  # noqa: S608
    origin = cur.fetchone()
    cur.execute(f"SELECT size FROM {ledger}log_head WHERE id = 1")  # noqa: S608
    size = cur.fetchone()
    cur.execute(f"SELECT note FROM {ledger}checkpoints ORDER BY size DESC LIMIT 1")  # noqa: S608
    note = cur.fetchone()
    cur.execute(f"SELECT kek_id, COUNT(*) FROM {keys}case_keys GROUP BY kek_id")  # noqa: S608
    keks = {str(r[0]): int(r[1]) for r in cur.fetchall()}
    return Facts(
        None if origin is None else str(origin[0]),
        0 if size is None else int(size[0]),
        None if note is None else str(note[0]),
        sorted(keks),
        sum(keks.values()),
    )


class SQLiteSnapshots:
    FILES = ("views.db", "ledger.db", "keystore.db")  # in the order they are copied

    def __init__(self, settings: Settings) -> None:
        self.live = {
            "views.db": settings.home / "views.db",
            "ledger.db": settings.home / "ledger.db",
            "keystore.db": settings.keys / "keystore.db",
        }

    @staticmethod
    def _copy(source: Path, target: Path, journal: str | None = None) -> None:
        """The whole database in one backup step: a consistent copy, whatever writes."""
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():  # owner-only from the start
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o600))
        uri = f"file:{source}?mode=ro"
        with (
            closing(sqlite3.connect(uri, uri=True)) as src,
            closing(sqlite3.connect(target)) as dst,
        ):
            src.backup(dst, pages=-1)
            if journal is not None:
                dst.execute(f"PRAGMA journal_mode = {journal}")

    def take(self, out: Path, step: Step) -> Facts:
        for name in self.FILES:
            if self.live[name].exists():
                self._copy(self.live[name], out / name, "DELETE")  # one file each
            step(name)
        return self.facts(out)

    def facts(self, folder: Path) -> Facts:
        with closing(sqlite3.connect(f"file:{folder / 'ledger.db'}?mode=ro", uri=True)) as db:
            db.execute("ATTACH DATABASE ? AS k", (f"file:{folder / 'keystore.db'}?mode=ro",))
            return _facts(db.cursor(), "", "k.")

    def files(self) -> tuple[str, ...]:
        return self.FILES

    def put_back(self, backup: Path, step: Step) -> None:
        """Each copy written into the live file through the backup API (which takes the
        file's write lock and leaves no stale journal behind): the servers must be stopped."""
        for name in self.FILES:
            if (backup / name).exists():
                self._copy(backup / name, self.live[name])
            step(name)


class PostgresSnapshots:
    FILES = ("database.sql", "keystore.sql")

    def __init__(self, settings: Settings) -> None:
        from ledger.storage.postgres import check_schema

        self.url = settings.database_url or ""
        self.schema = check_schema(settings.pg_schema)

    def _env(self) -> dict[str, str]:
        """The connection for pg_dump and psql, in their environment: never a password on
        a command line, where any user of the machine could read it."""
        from psycopg.conninfo import conninfo_to_dict

        names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD",
                 "dbname": "PGDATABASE", "sslmode": "PGSSLMODE"}  # fmt: skip
        info = conninfo_to_dict(self.url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return env | {names[k]: str(v) for k, v in info.items() if k in names}

    def _run(self, argv: list[str]) -> None:
        program = shutil.which(argv[0])
        if program is None:
            raise CommandError(
                f"{argv[0]} is not installed: install the PostgreSQL client of the server's "
                "version (Debian: postgresql-client)",
                UNREACHABLE,
            )
        done = subprocess.run(  # noqa: S603 (a program found on PATH, no shell)
            [program, *argv[1:]], env=self._env(), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            said = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise CommandError(f"{argv[0]} failed: {said}", UNREACHABLE)

    @contextmanager
    def _snapshot(self) -> Iterator[tuple[str, Any]]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur = conn.cursor()
            cur.execute("SELECT pg_export_snapshot()")
            row = cur.fetchone()
            assert row is not None
            yield str(row[0]), cur
            conn.execute("COMMIT")

    def take(self, out: Path, step: Step) -> Facts:
        s = self.schema
        dump = ["pg_dump", "--no-owner", "--no-privileges", "--format=plain"]
        with self._snapshot() as (snapshot, cur):
            facts = _facts(cur, f"{s}.", f"{s}_keys.")
            for name, schemas in (
                ("database.sql", [s, f"{s}_views"]),
                ("keystore.sql", [f"{s}_keys"]),
            ):
                target = out / name
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                only = [f"--schema={x}" for x in schemas]
                self._run([*dump, f"--snapshot={snapshot}", *only, f"--file={target}"])
                step(name)
        return facts

    def files(self) -> tuple[str, ...]:
        return self.FILES

    def put_back(self, backup: Path, step: Step) -> None:
        """The three schemas dropped and the dumps run, all in one transaction: the database
        is the backup's, or (on any error) as it was. The servers must be stopped."""
        s = self.schema
        drop = "; ".join(
            f"DROP SCHEMA IF EXISTS {x} CASCADE" for x in (s, f"{s}_keys", f"{s}_views")
        )
        files = [f"--file={backup / name}" for name in self.FILES]
        self._run(["psql", "-X", "-q", "--single-transaction", "-v", "ON_ERROR_STOP=1",
                   f"--command={drop}", *files])  # fmt: skip
        for name in self.FILES:
            step(name)


def snapshots_for(settings: Settings) -> SQLiteSnapshots | PostgresSnapshots:
    return PostgresSnapshots(settings) if settings.is_postgres else SQLiteSnapshots(settings)
