"""A witness's durable state, in its state folder:

- `state.db` (SQLite in WAL mode with `synchronous=FULL`: every commit is written and fsynced
  before it returns): per origin, the latest checkpoint it cosigned, as the log signed it
  with the witness's cosignature appended. It is replaced only by a compare-and-set on the
  size and root it replaces, so no two requests can both advance from one record;
- `evidence/`: one file per fork seen (`ledger.log.evidence`), written and fsynced before the
  refusal is answered, to hand to anyone who holds the log's key;
- `lock`: held (flock) while a witness process runs, so a second one on the same folder
  cannot start and race the first.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ledger.log.evidence import ForkEvidence
from ledger.private_files import replace_private

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cosigned (
  origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL, note TEXT NOT NULL,
  cosigned_at INTEGER NOT NULL)
"""


class StateBusy(RuntimeError):
    """Another witness process holds this state folder."""


@dataclass(frozen=True)
class Cosigned:
    """The latest checkpoint cosigned for a log: its size, root and signed note, and when."""

    origin: str
    size: int
    root: bytes
    note: str
    cosigned_at: int


class State:
    """The latest cosigned checkpoint per origin, and the evidence folder (see the module)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        self.folder = folder
        self.evidence_dir = folder / "evidence"
        self._lock_file: IO[str] = (folder / "lock").open("a")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_file.close()
            raise StateBusy(f"another witness process holds {folder}") from exc
        self._db = sqlite3.connect(
            folder / "state.db", isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
        self._db.execute(_SCHEMA)
        self._mutex = threading.Lock()
        self._cache: dict[str, Cosigned] = {}

    def close(self) -> None:
        with self._mutex:
            self._db.close()
        self._lock_file.close()

    def latest(self, origin: str) -> Cosigned | None:
        """The latest checkpoint cosigned for `origin`, or None if never."""
        cached = self._cache.get(origin)
        if cached is not None:
            return cached
        with self._mutex:  # read and cached as committed: `advance` updates both under it
            row = self._db.execute(
                "SELECT size, root, note, cosigned_at FROM cosigned WHERE origin = ?", (origin,)
            ).fetchone()
            if row is None:
                return None
            found = Cosigned(origin, int(row[0]), bytes(row[1]), str(row[2]), int(row[3]))
            return self._cache.setdefault(origin, found)

    def advance(self, held: Cosigned | None, new: Cosigned) -> bool:
        """Replace `held` (None: no record yet) by `new`, committed and fsynced, if `held`
        is still the record; False, changing nothing, if another request moved it first."""
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT size, root FROM cosigned WHERE origin = ?", (new.origin,)
                ).fetchone()
                now = None if row is None else (int(row[0]), bytes(row[1]))
                if now != (None if held is None else (held.size, held.root)):
                    self._db.execute("ROLLBACK")
                    self._cache.pop(new.origin, None)
                    return False
                self._db.execute(
                    "INSERT OR REPLACE INTO cosigned (origin, size, root, note, cosigned_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (new.origin, new.size, new.root, new.note, new.cosigned_at),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._cache[new.origin] = new
            return True

    def keep_evidence(self, evidence: ForkEvidence) -> Path:
        """Write the evidence to its own file (the same fork seen again: the same file),
        flushed to disk before this returns."""
        digest = hashlib.sha256((evidence.cosigned + evidence.refused).encode()).hexdigest()
        origin = hashlib.sha256(evidence.origin.encode()).hexdigest()
        path = self.evidence_dir / f"fork-{origin[:12]}-{digest[:16]}.json"
        if not path.exists():
            replace_private(path, evidence.to_json().encode())
            directory = os.open(self.evidence_dir, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        return path
