"""Section: witnesses. Two figures:

- cosigning latency: a served ledger with three local `ledger witness serve` processes; one
  event at a time, from the moment its checkpoint is first served to the moment the served
  checkpoint carries all three cosignatures (polled every 5 ms);
- a witness's add-checkpoint throughput on one core (the witness process pinned to core 0,
  the load generator to the others) at a log of `proof_leaves` leaves (1,000,000 in a full
  run): pre-signed checkpoints a few leaves apart with their consistency proofs, sent by 8
  keep-alive clients, one log each (a log's requests are sequential by the protocol: each
  old size is the one before), and by one client alone; and the witness's own CPU time per
  request (from /proc), whose inverse is what one core can do.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ledger.bench.harness import Report, Sizes
from ledger.bench.server import agency_for, deployment, free_port, wait_until_up
from ledger.bench.workload import case_bodies
from ledger.contract import crypto
from ledger.contract.notes import sign_note
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint
from ledger.settings import Settings

LEDGER = [sys.executable, "-m", "ledger.cli"]
LOGS = 8  # concurrent logs (clients) in the throughput run


class _Witness:
    """A `ledger witness serve` process of its own key, logs file and state folder."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name, self.port = root, name, free_port()
        root.mkdir(parents=True)
        self.key = crypto.generate_signing_key(f"{name}.bench/w", crypto.COSIGNATURE_TYPE)
        (root / "witness.key").write_text(self.key.line() + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, logs: list[tuple[str, crypto.VerifyKey]], cpu: int | None = None) -> None:
        (self.root / "logs").write_text("".join(f"{o} {k.line()}\n" for o, k in logs))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        self.proc = subprocess.Popen(  # noqa: S603
            [*LEDGER, "witness", "serve", "--key", str(self.root / "witness.key"),
             "--logs", str(self.root / "logs"), "--state", str(self.root / "state"),
             "--port", str(self.port), "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
        )  # fmt: skip
        wait_until_up(f"{self.url}/health", tries=400)

    def cpu_s(self) -> float:
        """The process's user and system CPU time so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def bench_witness(report: Report, sizes: Sizes, settings: Settings) -> None:
    with tempfile.TemporaryDirectory(prefix="ledger-bench-witness-") as tmp:
        _latency(report, sizes, settings, Path(tmp) / "latency")
        _throughput(report, sizes, Path(tmp) / "throughput")


def _latency(report: Report, sizes: Sizes, settings: Settings, root: Path) -> None:
    witnesses = [_Witness(root / n, n) for n in ("w1", "w2", "w3")]
    listed = [{"name": w.name, "key": w.key.verify_key.line(), "url": w.url} for w in witnesses]
    extra = {
        "LEDGER_WITNESSES": json.dumps(listed),
        "LEDGER_WITNESS_RETRY_MAX_S": "1",  # the witnesses start after the ledger here
        "LEDGER_CHECKPOINT_INTERVAL_S": "0.2",
    }
    rounds = 20 if sizes.repeats == 1 else 100
    with deployment(settings, extra=extra) as dep, ExitStack() as stack:
        log_key = crypto.parse_verify_key((dep.settings.keys / "log.vkey").read_text())
        for w in witnesses:
            w.start([(log_key.name, log_key)])
            stack.callback(w.stop)
        key, token = agency_for(dep, "bench-witnessed")
        host, port = dep.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        names = {w.key.name for w in witnesses}

        def served() -> tuple[int, set[str]]:
            conn.request("GET", "/v1/log/checkpoint", headers={"Authorization": f"Bearer {token}"})
            text = conn.getresponse().read().decode()
            lines = text.split("\n")
            signers = {line.split(" ")[1] for line in lines if line.startswith("\u2014 ")}
            return int(lines[1]), signers & names

        waits = []
        for i in range(rounds + 1):
            body = case_bodies(key, 1)[0]  # a case opened: one entry
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            conn.request("POST", "/v1/events", body=body, headers=headers)
            index = json.loads(conn.getresponse().read())["index"]
            seen = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                size, signers = served()
                if size > index and seen is None:
                    seen = time.perf_counter()
                if size > index and signers == names:
                    if i > 0:  # the first round waits for the witnesses to come up
                        waits.append((time.perf_counter() - (seen or 0)) * 1000)
                    break
                time.sleep(0.005)
            else:
                raise RuntimeError("the checkpoint was not cosigned by three witnesses in 60 s")
        conn.close()
    waits.sort()
    method = (
        "one event, then its checkpoint served to the three cosignatures on it (3 local"
        f" witness processes, {dep.env['LEDGER_WORKERS']} API processes, polled every 5 ms)"
    )
    report.put("cosign_latency_p50_ms", [statistics.median(waits)], method, rounds)
    report.put("cosign_latency_p99_ms", [waits[int(len(waits) * 0.99)]], method, rounds)


def _requests(log: crypto.SigningKey, tree: merkle.MemoryTree, count: int) -> list[bytes]:
    """`count` add-checkpoint bodies growing one log to the tree's size, a few leaves apart,
    after a first one from size 0."""
    sizes = [tree.size - 3 * (count - 1) + 3 * i for i in range(count)]
    out, old = [], 0
    for size in sizes:
        note = sign_note(Checkpoint(log.name, size, merkle.root(size, tree)).body(), log)
        proof = [] if old == 0 else merkle.consistency_proof(old, size, tree)
        lines = [f"old {old}", *(crypto.b64(p) for p in proof)]
        out.append(("\n".join(lines) + "\n\n" + note).encode())
        old = size
    return out


def _drive(port: int, bodies: list[bytes], failures: list[int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for body in bodies:
        conn.request("POST", "/add-checkpoint", body=body)
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            failures.append(answer.status)
    conn.close()


@contextmanager
def _pinned(cpus: set[int]) -> Iterator[None]:
    """This process on `cpus` (its threads included) for the while."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _throughput(report: Report, sizes: Sizes, root: Path) -> None:
    leaves = sizes.proof_leaves
    tree = merkle.MemoryTree([crypto.sha256(i.to_bytes(8, "big")) for i in range(leaves)])
    per_log = 200 if sizes.repeats == 1 else 800
    logs = [crypto.generate_signing_key(f"bench{i}.localhost/log") for i in range(LOGS + 1)]
    work = [_requests(log, tree, per_log + 1) for log in logs]
    del tree
    cores = sorted(os.sched_getaffinity(0))
    witness_cpu = cores[0]
    others = set(cores[1:]) or {witness_cpu}
    witness = _Witness(root / "w", "throughput")
    witness.start([(k.name, k.verify_key) for k in logs], cpu=witness_cpu)
    failures: list[int] = []
    try:
        with _pinned(others):
            for bodies in work:  # each log's first checkpoint, from size 0: not measured
                _drive(witness.port, bodies[:1], failures)
            cpu0, start = witness.cpu_s(), time.perf_counter()
            threads = [
                threading.Thread(target=_drive, args=(witness.port, bodies[1:], failures))
                for bodies in work[:LOGS]
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall, cpu = time.perf_counter() - start, witness.cpu_s() - cpu0
            start = time.perf_counter()
            _drive(witness.port, work[LOGS][1:], failures)
            alone = time.perf_counter() - start
    finally:
        witness.stop()
    if failures:
        raise RuntimeError(f"the witness refused {len(failures)} checkpoints: {failures[:5]}")
    count = LOGS * per_log
    where = f"at {leaves:,} leaves, the witness pinned to one core"
    report.put(
        "witness_add_checkpoint_per_s",
        [count / wall],
        f"add-checkpoint cosigned (each fsynced before its answer), {LOGS} logs at once {where}",
        count,
    )
    report.put(
        "witness_one_log_per_s",
        [per_log / alone],
        f"the same for one log alone (one request at a time: latency-bound) {where}",
        per_log,
    )
    report.put(
        "witness_cpu_ms_per_add",
        [1000 * cpu / count],
        "the witness process's CPU time per add-checkpoint in the run of several logs",
        count,
    )
    report.values["witness_leaves"] = leaves
    report.details["witness_leaves"] = {"method": "leaves in the witnessed logs", "count": leaves}
