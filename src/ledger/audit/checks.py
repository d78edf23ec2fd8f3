"""Steps 3 and 5 for each entry (canonical bytes, event signature), on worker processes."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

from ledger.audit.report import AuditFailure
from ledger.contract import crypto
from ledger.contract.canonical import jcs, signing_input

_PARALLEL_FROM = 4096  # entries; below this one core is faster than starting workers
CHUNK = 2048  # entries per job for a worker process


def _check_entries(items: Sequence[tuple[int, bytes, bytes | None]]) -> list[AuditFailure]:
    """Steps 3 (canonical bytes) and 5 (signature, when a key is given) for a chunk of
    (position, entry bytes, signer's raw key); runs in worker processes."""
    failures = []
    for position, raw, key_raw in items:
        try:
            entry = json.loads(raw)
        except ValueError:  # not JSON at all: the main process reports that
            continue
        try:
            canonical = jcs(entry)
        except Exception:  # JSON that JCS cannot express (NaN, huge numbers): not canonical
            canonical = b""
        if canonical != raw:  # also catches duplicate member names: the parse dropped one
            failures.append(
                AuditFailure("canonical bytes", "entry bytes are not the canonical JCS", position)
            )
            continue
        if key_raw is None:
            continue
        try:
            message = signing_input(entry["envelope"])
            signature = crypto.b64decode_strict(entry["signature"])
            crypto.verify(crypto.VerifyKey("k", key_raw), message, signature)
        except (crypto.BadSignature, KeyError, TypeError, ValueError):
            failures.append(
                AuditFailure("event signature", "the signature does not verify", position)
            )
    return failures


class Checks:
    """Runs `_check_entries` on chunks: inline for small logs, then on worker processes."""

    def __init__(self, workers: int | None, expected: int) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.parallel = self.workers > 1 and expected >= _PARALLEL_FROM
        self.pool: ProcessPoolExecutor | None = None
        self.pending: list[Future[list[AuditFailure]]] = []
        self.done: list[AuditFailure] = []
        self.chunk: list[tuple[int, bytes, bytes | None]] = []
        self.signatures = 0

    def add(self, position: int, raw: bytes, key_raw: bytes | None) -> None:
        self.chunk.append((position, raw, key_raw))
        self.signatures += key_raw is not None
        if len(self.chunk) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        chunk, self.chunk = self.chunk, []
        if not chunk:
            return
        if self.pool is None and self.parallel:
            self.pool = ProcessPoolExecutor(max_workers=self.workers)
        if self.pool is None:
            self.done.extend(_check_entries(chunk))
        else:
            self.pending.append(self.pool.submit(_check_entries, chunk))

    def results(self) -> list[AuditFailure]:
        self.flush()
        try:
            for future in self.pending:
                self.done.extend(future.result())
        finally:
            if self.pool is not None:
                self.pool.shutdown()
        return self.done
