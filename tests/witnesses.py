"""Witnesses for tests: a log the test controls (its key, its leaves, any fork of them) that
builds add-checkpoint requests, and `ledger witness serve` as real processes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ledger.contract import crypto
from ledger.contract.notes import sign_note
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint
from tests.servers import LEDGER, Proc, free_port


class TestLog:
    """A log of `leaves` signed by `key`; `fork(at)` is another history sharing the first
    `at` leaves, signed by the same key (what a log keeping two views does)."""

    __test__ = False  # not a test class

    def __init__(self, key: crypto.SigningKey, leaves: Sequence[bytes]) -> None:
        self.key, self.leaves = key, list(leaves)
        self.tree = merkle.MemoryTree(self.leaves)

    @classmethod
    def new(cls, origin: str, size: int, seed: str = "honest") -> TestLog:
        leaves = [crypto.sha256(f"{seed} {i}".encode()) for i in range(size)]
        return cls(crypto.generate_signing_key(origin), leaves)

    def fork(self, at: int, seed: str = "forked") -> TestLog:
        rest = [crypto.sha256(f"{seed} {i}".encode()) for i in range(len(self.leaves) - at)]
        return TestLog(self.key, self.leaves[:at] + rest)

    @property
    def origin(self) -> str:
        return self.key.name

    def root(self, size: int) -> bytes:
        return merkle.root(size, self.tree)

    def body(self, size: int) -> str:
        return Checkpoint(self.origin, size, self.root(size)).body()

    def note(self, size: int) -> str:
        return sign_note(self.body(size), self.key)

    def proof(self, old: int, size: int) -> list[bytes]:
        return [] if old == 0 or old == size else merkle.consistency_proof(old, size, self.tree)

    def request(self, old: int, size: int, proof: Sequence[bytes] | None = None) -> bytes:
        lines = [f"old {old}", *(crypto.b64(p) for p in (self.proof(old, size) if proof is None
                                                          else proof))]  # fmt: skip
        return ("\n".join(lines) + "\n\n" + self.note(size)).encode()


@dataclass
class WitnessProc:
    """`ledger witness serve` in a process group of its own (SIGKILL kills all of it)."""

    root: Path
    name: str
    logs: Sequence[TestLog | tuple[str, crypto.VerifyKey]]
    port: int = field(default_factory=free_port)
    proc: Proc = field(init=False)
    key: crypto.SigningKey = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.key = crypto.generate_signing_key(self.name, crypto.COSIGNATURE_TYPE)
        (self.root / "witness.key").write_text(self.key.line() + "\n")
        lines = []
        for item in self.logs:
            origin, vkey = (item.origin, item.key.verify_key) if isinstance(item, TestLog) else item
            lines.append(f"{origin} {vkey.line()}")
        (self.root / "logs").write_text("\n".join(lines) + "\n")
        argv = [
            *LEDGER, "witness", "serve", "--key", str(self.root / "witness.key"),
            "--logs", str(self.root / "logs"), "--state", str(self.root / "state"),
            "--port", str(self.port), "--log-level", "warning",
        ]  # fmt: skip
        # Nothing of a ledger's settings: the witness reads only its key, logs and state.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        self.proc = Proc(argv, env | {"PYTHONUNBUFFERED": "1"}, self.root / "witness.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def vkey(self) -> crypto.VerifyKey:
        return self.key.verify_key

    def start(self, timeout: float = 30) -> None:
        self.proc.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.alive:
                raise RuntimeError("ledger witness serve exited:\n" + self.proc.tail())
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the witness did not answer in time:\n" + self.proc.tail())

    def elsewhere(self) -> tuple[Proc, str]:
        """The same witness (key, logs, state) started on another port, where no ledger
        knows it: its process (stop it before starting this one again) and its URL."""
        port = free_port()
        argv = [str(port) if a == str(self.port) else a for a in self.proc.argv]
        proc = Proc(argv, self.proc.env, self.root / "elsewhere.log")
        proc.start()
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("the witness did not answer elsewhere:\n" + proc.tail())

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        self.proc.stop()

    def evidence(self) -> list[Path]:
        folder = self.root / "state" / "evidence"
        return sorted(folder.glob("*.json")) if folder.exists() else []


@contextmanager
def witnesses(root: Path, logs: Sequence[TestLog | tuple[str, crypto.VerifyKey]],
              count: int = 1) -> Iterator[list[WitnessProc]]:  # fmt: skip
    """`count` witness processes of the same logs, started; stopped on the way out."""
    procs = [WitnessProc(root / f"w{i}", f"witness{i}.test/w", logs) for i in range(count)]
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()
