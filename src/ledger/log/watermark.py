"""The newest checkpoint this deployment has signed, remembered outside its database.

Every process that signs a checkpoint also writes it to a file beside the deployment's keys
(`$LEDGER_KEYS/latest-checkpoint`, 0600), which no backup holds and no restore puts back.
Auditors, agencies and witnesses may hold that checkpoint. A database whose log is shorter,
or holds other entries below its size, is then a rollback of what they saw (a restored
backup, a database replaced by other means): `Watermark.check` refuses it, and the ledger
serves it only once the operator has said so (`accept`, by `ledger restore
--accept-rollback`), which keeps the superseded checkpoint in `rollbacks` beside it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ledger.contract.notes import NoteError
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint, verify_checkpoint
from ledger.log.service import LogService
from ledger.log.store import StoredCheckpoint
from ledger.private_files import replace_private


class RolledBack(Exception):
    """The log here does not extend the newest checkpoint this deployment signed."""

    def __init__(self, seen: int, size: int, diverged: bool, path: Path) -> None:
        self.seen, self.size, self.diverged, self.path = seen, size, diverged, path
        if diverged:
            what = f"the log here holds other entries below {seen}, the size of the checkpoint"
        else:
            what = f"the log here has {size} entries, fewer than the checkpoint of {seen}"
        super().__init__(
            f"{what} this deployment signed ({path}): serving it would show auditors, agencies "
            "and witnesses a rollback of what they may hold. If the database was restored on "
            "purpose, tell them, then accept it with `ledger restore --accept-rollback`"
        )


class Watermark:
    """The file holding the newest checkpoint signed, only ever moved forward."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rollbacks = path.with_name("rollbacks")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One process at a time reads and replaces the file (servers share the keys)."""
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _seen(self) -> tuple[str, Checkpoint | None] | None:
        """The note kept and its checkpoint (None if the file is not one), or None."""
        try:
            note = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return note, Checkpoint.parse(note.split("\n\n", 1)[0] + "\n")
        except NoteError:
            return note, None

    def remember(self, checkpoint: StoredCheckpoint) -> None:
        """Keep `checkpoint` if it is newer than the one kept (called after each signing)."""
        with self._locked():
            seen = self._seen()
            if seen is None or seen[1] is None or checkpoint.size > seen[1].size:
                replace_private(self.path, checkpoint.note.encode("utf-8"))

    def check(self, log: LogService) -> None:
        """RolledBack unless the stored log extends the checkpoint kept: as long, or longer,
        with the same root at its size."""
        seen = self._seen()
        if seen is None:
            return
        note, checkpoint = seen
        size = log.store.log_size()
        try:
            checkpoint = verify_checkpoint(note, log.verify_key, log.origin)
        except NoteError:  # another log's, or altered: nothing this log can be held to
            raise RolledBack(checkpoint.size if checkpoint else 0, size, True, self.path) from None
        if size < checkpoint.size:
            raise RolledBack(checkpoint.size, size, False, self.path)
        if checkpoint.size and merkle.root(checkpoint.size, log.reader) != checkpoint.root:
            raise RolledBack(checkpoint.size, size, True, self.path)

    def accept(self, log: LogService) -> int | None:
        """Take the log as it is now: the superseded checkpoint is appended to `rollbacks`
        (with the time and the size accepted), the newest one stored here kept instead.
        Returns the size of the checkpoint superseded, None if there was nothing to accept."""
        with self._locked():
            seen = self._seen()
            try:
                self.check(log)
                return None
            except RolledBack:
                pass
            assert seen is not None
            superseded = seen[1].size if seen[1] is not None else 0
            at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            size = log.store.log_size()
            record = f"# {at}: superseded by a log of {size} entries, accepted\n{seen[0]}\n"
            old = self.rollbacks.read_bytes() if self.rollbacks.exists() else b""
            replace_private(self.rollbacks, old + record.encode("utf-8"))
            latest = log.store.latest_checkpoint()
            if latest is None:
                self.path.unlink()
            else:
                replace_private(self.path, latest.note.encode("utf-8"))
            return superseded
