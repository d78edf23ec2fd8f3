"""Gathering witness cosignatures (c2sp.org/tlog-witness): every new checkpoint goes to every
witness in the ledger's list, each in a thread of its own with a timeout, so a slow or dead
witness holds up nobody: the log grows and checkpoints are signed whatever the witnesses do.

For each witness the cosigner sends `old <size it holds>`, the consistency proof from that
size and the checkpoint; a 409 names the size it does hold, and the request is sent again
with the proof from there. The cosignature it answers is verified against its key before it
is kept (`storage.witnesses`) and served appended to the checkpoint. A witness that refuses
the checkpoint as inconsistent with one it cosigned (422), or holds a size the ledger never
signed, is an ALARM: someone showed it another history signed by the log key. Failures are
retried with exponential backoff and jitter; one process at a time talks to each witness
(a lease), so several API processes do not send each checkpoint several times.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from ledger.concurrency import Background
from ledger.contract import crypto
from ledger.contract.notes import NoteError
from ledger.contract.vocabulary import format_timestamp
from ledger.log.cosignature import cosignatures
from ledger.log.service import LogService
from ledger.log.store import StoredCheckpoint
from ledger.services.logtime import utc_now
from ledger.storage.base import Store
from ledger.storage.witnesses import WitnessStatus

log = logging.getLogger("ledger.witnesses")
MAX_ANSWER_BYTES = 65_536
ROUNDS = 3  # requests per checkpoint and witness: a 409 costs one more


@dataclass(frozen=True)
class Witness:
    name: str
    key: crypto.VerifyKey  # its cosignature/v1 key (type 0x04)
    url: str  # its submission prefix


def add_checkpoint_body(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """The add-checkpoint request: `old <size>`, one base64 proof line per hash, an empty
    line, the signed checkpoint."""
    lines = [f"old {old_size}", *(crypto.b64(h) for h in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode()


class Cosigner(Background):
    """Sends each new checkpoint to every witness and keeps the cosignatures they answer."""

    name = "cosigner"

    def __init__(
        self,
        store: Store,
        log_service: LogService,
        witnesses: Sequence[Witness],
        *,
        timeout_s: float = 5.0,
        retry_max_s: float = 60.0,
        poll_s: float = 0.05,  # a process that did not sign the checkpoint sees it this late
    ) -> None:
        super().__init__()
        self.store, self.log, self.witnesses = store, log_service, list(witnesses)
        self.timeout_s, self.retry_max_s, self.poll_s = timeout_s, retry_max_s, poll_s
        self.lease_s = max(30.0, 3 * ROUNDS * timeout_s)
        self.owner = f"cosigner-{uuid.uuid4().hex[:12]}"
        self.wake = threading.Event()
        log_service.on_signed(self.wake.set)
        held = {s.witness: s for s in store.witness_statuses()}
        self._held = {w.name: _held(held.get(w.name)) for w in self.witnesses}
        self._done: dict[str, int] = {}  # the size each witness's cosignature was kept for
        self._failures = dict.fromkeys(self._held, 0)
        self._next = dict.fromkeys(self._held, 0.0)  # monotonic time of the next attempt
        self._busy: set[str] = set()
        self._pool = ThreadPoolExecutor(max(1, len(self.witnesses)), thread_name_prefix="cosign")
        self._http = {
            w.name: httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False)
            for w in self.witnesses
        }

    def run(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(self.poll_s)
            self.wake.clear()
            try:
                latest = self.store.latest_checkpoint()
            except Exception as exc:  # the store is back later; say what failed only
                log.error("cosigner: %s", type(exc).__name__)
                continue
            if latest is None:
                continue
            now = time.monotonic()
            for witness in self.witnesses:
                name = witness.name
                if name in self._busy or self._done.get(name) == latest.size:
                    continue
                if now < self._next[name]:
                    continue
                self._busy.add(name)
                self._pool.submit(self._gather_in_thread, witness, latest)

    def stop(self) -> None:
        super().stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for client in self._http.values():
            client.close()

    def _gather_in_thread(self, witness: Witness, checkpoint: StoredCheckpoint) -> None:
        try:
            self.gather(witness, checkpoint)
        except Exception as exc:  # never the thread's end: the next checkpoint tries again
            log.error("cosigner: %s while asking %s", type(exc).__name__, witness.name)
        finally:
            self._busy.discard(witness.name)
            if self._done.get(witness.name) != checkpoint.size:
                self.wake.set()  # a newer checkpoint may be waiting for this witness

    def gather(self, witness: Witness, checkpoint: StoredCheckpoint) -> bool:
        """Ask `witness` to cosign `checkpoint`; True once its cosignature is kept."""
        now_ms = int(time.time() * 1000)
        if not self.store.claim_witness(
            witness.name, self.owner, now_ms, now_ms + int(self.lease_s * 1000)
        ):
            self._next[witness.name] = time.monotonic() + self.lease_s / 3
            return False  # another process talks to it
        error = "no answer"
        for _ in range(ROUNDS):
            held = self._held[witness.name]
            if held is not None and held > checkpoint.size:
                return self._ahead(witness, checkpoint, held)
            old = held or 0
            body = add_checkpoint_body(
                old, self.log.witness_proof(old, checkpoint.size), checkpoint.note
            )
            try:
                status, text = self._post(witness, body)
            except httpx.HTTPError as exc:
                return self._failed(witness, f"unreachable: {type(exc).__name__}")
            if status == 200:
                return self._cosigned(witness, checkpoint, text)
            if status == 409 and text.strip().isdigit():
                self._held[witness.name] = int(text.strip())  # and send again from there
                continue
            if status == 422:
                log.critical(
                    "ALARM: witness %s refused the checkpoint of size %d as inconsistent with"
                    " the one of size %d it cosigned: it was shown another history signed by"
                    " the log key (a split view), or this log forked",
                    witness.name,
                    checkpoint.size,
                    old,
                )
                return self._failed(witness, f"refused as inconsistent with size {old} (422)")
            error = f"answered {status}: {text.strip()[:200]}"
            break
        return self._failed(witness, error)

    def _post(self, witness: Witness, body: bytes) -> tuple[int, str]:
        """POST add-checkpoint; the status and at most MAX_ANSWER_BYTES of the answer."""
        client = self._http[witness.name]
        url = witness.url.rstrip("/") + "/add-checkpoint"
        with client.stream("POST", url, content=body) as answer:
            data = bytearray()
            for chunk in answer.iter_bytes():
                data += chunk
                if len(data) > MAX_ANSWER_BYTES:
                    return answer.status_code, "an answer too large"
            return answer.status_code, data.decode("utf-8", errors="replace")

    def _cosigned(self, witness: Witness, checkpoint: StoredCheckpoint, text: str) -> bool:
        try:
            _, found = cosignatures(checkpoint.note + text, [witness.key])
        except NoteError as exc:
            return self._failed(witness, f"its answer is not a valid cosignature: {exc}")
        if witness.key not in found:
            return self._failed(witness, "its answer holds no cosignature by its key")
        at = format_timestamp(utc_now())
        self.store.add_cosignature(witness.name, checkpoint.size, found[witness.key].line, at)
        self._held[witness.name] = checkpoint.size
        self._done[witness.name] = checkpoint.size
        self._failures[witness.name] = 0
        self._next[witness.name] = 0.0
        log.info("cosigned by %s size=%d", witness.name, checkpoint.size)
        return True

    def _ahead(self, witness: Witness, checkpoint: StoredCheckpoint, held: int) -> bool:
        """The witness holds a larger size than this checkpoint's: a newer checkpoint (signed
        by another process) went first, or the log key signed a size this log never had."""
        latest = self.store.latest_checkpoint()
        if latest is not None and latest.size >= held:
            self._next[witness.name] = 0.0
            return False  # the newer checkpoint's turn
        log.critical(
            "ALARM: witness %s holds size %d, larger than any checkpoint this log signed (%d):"
            " the log key signed a checkpoint of another history",
            witness.name,
            held,
            checkpoint.size,
        )
        return self._failed(witness, f"holds size {held}, which this log never signed")

    def _failed(self, witness: Witness, error: str) -> bool:
        name = witness.name
        self._failures[name] += 1
        full = min(self.retry_max_s, 2 ** min(self._failures[name] - 1, 20))
        self._next[name] = time.monotonic() + full * (0.5 + 0.5 * random.random())
        self.store.witness_attempt(name, format_timestamp(utc_now()), self._held[name], error)
        log.warning("witness %s: %s", name, error)
        return False


def _held(status: WitnessStatus | None) -> int | None:
    return None if status is None else status.held


def status_lines(store: Store, witnesses: Sequence[Witness]) -> list[str]:
    """`ledger log status`: the log's size and newest checkpoint, then per witness the size
    it holds, the last size it cosigned and when, and its last failure."""
    latest = store.latest_checkpoint()
    lines = [
        f"log: {store.log_size()} entries; newest checkpoint "
        + ("none yet" if latest is None else f"{latest.size}, signed {latest.signed_at}")
    ]
    statuses = {s.witness: s for s in store.witness_statuses()}
    if not witnesses:
        lines.append("no witnesses configured (LEDGER_WITNESSES)")
    for witness in witnesses:
        s = statuses.get(witness.name)
        if s is None or s.cosigned_size is None:
            cosigned = "never cosigned"
        else:
            behind = "" if latest is None else f", {latest.size - s.cosigned_size} behind"
            cosigned = f"last cosigned {s.cosigned_size} at {s.cosigned_at}{behind}"
        failing = "" if s is None or s.error is None else f"; at {s.attempted_at}: {s.error}"
        lines.append(f"witness {witness.name} ({witness.url}): {cosigned}{failing}")
    return lines
