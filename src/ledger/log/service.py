"""The log as its readers see it: signed checkpoints, entries and proofs, with permissions.

A checkpoint is signed only after the new tree head is proved consistent with the last signed
one (RFC 9162 section 2.1.4), so the server itself cannot sign a fork of its own history.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from ledger.concurrency import Background
from ledger.contract import crypto
from ledger.contract.notes import sign_note
from ledger.contract.roles import AGENCY_ROLES, LOG_READERS
from ledger.contract.vocabulary import format_timestamp
from ledger.errors import BadRequest, Forbidden
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint
from ledger.log.store import LogStore, StoredCheckpoint

log = logging.getLogger("ledger.log")

PAGE = 1000


class ForkError(Exception):
    """The log's current head is not consistent with the last signed checkpoint."""


class _StoreNodes:
    def __init__(self, store: LogStore) -> None:
        self.store = store

    def nodes(self, keys: Sequence[tuple[int, int]]) -> Sequence[bytes]:
        return self.store.tree_nodes(keys)


class LogService:
    """Checkpoints, entries and proofs over the stored tree."""

    def __init__(
        self, store: LogStore, key: crypto.SigningKey, origin: str, clock: Callable[[], datetime]
    ) -> None:
        if key.name != origin:
            raise ValueError("the log key's name must be the log origin")
        self.store, self.key, self.origin, self.clock = store, key, origin, clock
        self.reader = _StoreNodes(store)
        self._lock = threading.Lock()
        self._on_signed: list[Callable[[], None]] = []

    def on_signed(self, callback: Callable[[], None]) -> None:
        """Call `callback` (quickly: it runs in the signer's thread) after each new checkpoint
        this process signs; the witnesses' cosigner wakes up with it."""
        self._on_signed.append(callback)

    @property
    def verify_key(self) -> crypto.VerifyKey:
        return self.key.verify_key

    # -- checkpoints -----------------------------------------------------------------------------

    def sign_checkpoint(self) -> StoredCheckpoint:
        """Sign the current tree head if it is new, after proving it extends the last one."""
        with self._lock:
            last = self.store.latest_checkpoint()
            size = self.store.log_size()
            if last is not None and last.size >= size:
                return last
            root = merkle.root(size, self.reader) if size else merkle.EMPTY_ROOT
            if last is not None and last.size > 0:
                proof = merkle.consistency_proof(last.size, size, self.reader)
                try:
                    merkle.verify_consistency(last.size, size, last.root, root, proof)
                except merkle.MerkleError as exc:
                    log.critical(
                        "refusing to sign: tree at %d is not consistent with %d", size, last.size
                    )
                    raise ForkError("the log is not consistent with its last checkpoint") from exc
            note = sign_note(Checkpoint(self.origin, size, root).body(), self.key)
            self.store.save_checkpoint(size, root, note, format_timestamp(self.clock()))
            log.info("checkpoint signed size=%d", size)
            saved = self.store.latest_checkpoint()
            assert saved is not None
        for callback in self._on_signed:
            callback()
        return saved

    def checkpoint(self) -> str:
        """The newest signed checkpoint, as `GET /v1/log/checkpoint` serves it: the log's
        signed note with the witnesses' cosignatures gathered on it so far appended, one
        note signature line each (verifiers ignore the lines of keys they do not know).

        Never signs when one exists, however much the log has grown: signing reads the tree,
        proves consistency and stores a checkpoint for good, and readers (any token) must not
        be able to make the server do that at will. `CheckpointSigner` signs on its schedule;
        only the very first checkpoint of a log may be signed here, so that a reader never
        finds none.
        """
        latest = self.store.latest_checkpoint()
        if latest is None:
            latest = self.sign_checkpoint()
        return latest.note + "".join(f"{line}\n" for line in self.store.cosignatures(latest.size))

    def witness_proof(self, old_size: int, size: int) -> list[bytes]:
        """The consistency proof a witness that holds `old_size` asks for (none from 0, or
        between equal sizes): for the cosigner, which sends it with the checkpoint."""
        if not 0 <= old_size <= size <= self.store.log_size():
            raise BadRequest("a witness proof needs 0 <= old size <= size <= log size")
        if old_size in (0, size):
            return []
        return merkle.consistency_proof(old_size, size, self.reader)

    # -- reads -----------------------------------------------------------------------------------

    def entries(self, role: str, start: int, end: int) -> list[tuple[int, bytes]]:
        if role not in LOG_READERS:
            raise Forbidden("log entries are for auditor and admin tokens")
        if start < 0 or end < start:
            raise BadRequest("entries need 0 <= start <= end")
        size = self.store.log_size()
        if start >= size:
            return []  # past the end: an empty page, without asking the store
        return self.store.entries(start, min(end, start + PAGE, size))

    def inclusion(self, role: str, agency: str | None, index: int, size: int) -> list[bytes]:
        if role not in LOG_READERS and role not in AGENCY_ROLES:
            raise Forbidden("inclusion proofs are for auditors, admins and agencies")
        if not 0 <= index < size <= self.store.log_size():
            raise BadRequest("inclusion proofs need 0 <= index < size <= log size")
        if role in AGENCY_ROLES:
            owner = self.store.entry_owner(index)
            if owner is None or owner[1] != agency:
                raise Forbidden("agencies get inclusion proofs of their own entries only")
        return merkle.inclusion_proof(index, size, self.reader)

    def consistency(self, role: str, first: int, second: int) -> list[bytes]:
        if role not in LOG_READERS and role not in AGENCY_ROLES:
            raise Forbidden("consistency proofs are for auditors, admins and agencies")
        if not 1 <= first <= second <= self.store.log_size():
            raise BadRequest("consistency proofs need 1 <= from <= to <= log size")
        return merkle.consistency_proof(first, second, self.reader)


class CheckpointSigner(Background):
    """Signs a checkpoint every `every` entries or `interval_s` seconds (a daemon thread)."""

    name = "checkpoint-signer"
    join_s = 5.0

    def __init__(self, service: LogService, every: int, interval_s: float) -> None:
        super().__init__()
        self.service, self.every, self.interval_s = service, every, interval_s
        self.failing_since: float | None = None  # monotonic time of the first failure in a row

    @property
    def running(self) -> bool:
        """Whether its thread is alive (and not stopping)."""
        return self._thread.is_alive() and not self.stopping.is_set()

    def run(self) -> None:
        last_signed = time.monotonic()
        while not self.stopping.wait(min(1.0, self.interval_s)):
            try:
                latest = self.service.store.latest_checkpoint()
                behind = self.service.store.log_size() - (latest.size if latest else 0)
                due = time.monotonic() - last_signed >= self.interval_s
                if behind >= self.every or (behind > 0 and due):
                    self.service.sign_checkpoint()
                    last_signed = time.monotonic()
                self.failing_since = None
            except Exception as exc:  # keep signing later; say what failed, not the data
                log.error("checkpoint signer: %s", type(exc).__name__)
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
