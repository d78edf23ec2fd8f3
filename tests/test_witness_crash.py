"""A real `ledger witness serve`, killed with SIGKILL at random moments while three writers send
it checkpoints of a log and of a fork of it (one key signing two histories that share their
first FORK_AT leaves), restarted each time. Whatever the kills interrupt:

- it never cosigned two checkpoints that are inconsistent with each other (no two past the
  fork point from different histories), every cosignature verifying with the tests' own
  implementation of the spec;
- nothing it answered 200 for is lost: after the last restart it holds a size at least the
  largest it cosigned, with that history's root.

The seed is printed; LEDGER_WITNESS_SEED replays the writers' choices and the kill times.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests import cosignature_spec as spec
from tests.witnesses import TestLog, WitnessProc

ORIGIN = "crash.test/log"
SIZE, FORK_AT, KILLS, WRITERS = 3_000, 1_200, 8, 3


@dataclass(frozen=True)
class Answered:
    history: str
    size: int
    line: str


def test_sigkill_at_random_moments_never_makes_the_witness_cosign_a_fork(tmp_path: Path) -> None:
    seed = int(os.environ.get("LEDGER_WITNESS_SEED") or random.randrange(2**32))
    print(f"LEDGER_WITNESS_SEED={seed}")
    rng = random.Random(seed)
    logs = {"honest": TestLog.new(ORIGIN, SIZE)}
    logs["forked"] = logs["honest"].fork(FORK_AT)
    witness = WitnessProc(tmp_path / "w", "witness.crash.test/w", [logs["honest"]])
    witness.start()
    known = [0]  # the size the writers last heard the witness holds
    answered: list[Answered] = []
    refused = [0]
    done = threading.Event()
    lock = threading.Lock()

    def write(worker: int) -> None:
        local = random.Random(seed + worker)
        with httpx.Client(timeout=2) as http:
            while not done.is_set():
                history = "honest" if local.random() < 0.7 else "forked"
                old = known[0]
                size = min(SIZE, old + local.randrange(0, 25))
                body = logs[history].request(old, size)
                try:
                    got = http.post(f"{witness.url}/add-checkpoint", content=body)
                except httpx.TransportError:
                    time.sleep(0.02)  # killed meanwhile: it may or may not have recorded it
                    continue
                with lock:
                    if got.status_code == 200:
                        answered.append(Answered(history, size, got.text))
                        known[0] = max(known[0], size)
                    elif got.status_code == 409:
                        known[0] = int(got.text)
                    elif got.status_code == 422:
                        refused[0] += 1
                    else:
                        raise AssertionError(f"{got.status_code} {got.text}")

    threads = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(WRITERS)]
    for t in threads:
        t.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.05, 0.5))
            witness.kill()
            time.sleep(rng.uniform(0, 0.1))
            witness.start()
        time.sleep(0.5)
    finally:
        done.set()
        for t in threads:
            t.join(10)
    try:
        # Every 200 is a valid cosignature of the checkpoint sent, by the witness's key.
        pub = witness.vkey.raw
        for a in answered:
            spec.verify_line(a.line, witness.name, pub, logs[a.history].body(a.size))
        # No two cosigned checkpoints contradict each other.
        past = {a.history for a in answered if a.size > FORK_AT}
        assert len(past) <= 1, "cosigned both histories past the fork point"
        # Nothing answered was lost, and what it holds is the history it cosigned.
        held = httpx.post(f"{witness.url}/add-checkpoint", content=logs["honest"].request(0, 0))
        held_size = int(held.text) if held.status_code == 409 else 0
        assert held_size >= max(a.size for a in answered)
        origin_hash = hashlib.sha256(ORIGIN.encode()).hexdigest()
        note = httpx.get(f"{witness.url}/{origin_hash}/checkpoint").text
        winner = past.pop() if past else "honest"
        assert note.startswith(logs[winner].note(held_size))
        assert len(answered) > KILLS and witness.proc.kills == KILLS
        print(f"{len(answered)} cosigned, {refused[0]} refused, held {held_size}, seed {seed}")
    finally:
        witness.stop()
