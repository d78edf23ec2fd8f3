"""Hostile traffic beside honest traffic, against the served ledger (`ledger bench --only
hostile`): what a caller without a token, a token that never appends and an agency token
sending costly bodies can do to the server's memory and to another agency's latency.

1. Resident memory of every process of the server (`ledger serve`, its workers and the
   large-body lane), idle, then at its peak while clients send 30 MB bodies without a token
   to every endpoint that takes a body, and with a monitor token to the batch endpoint, some
   declaring their length and some streaming it: the gate answers before reading them.
   Target: the peak within 2x the idle size.
2. Another agency's single-event latency, sequential submissions, quiet, then while a
   hostile caseworker token sends bodies of about 1 MiB built to cost the most to parse (a
   long list of small integers), back to back from several threads. Target: the victim's
   p99 within 2x its quiet p99. The server runs with its default per-token rate limit, in
   which a body weighs one request per 4 KiB: that bound, the in-flight budget and the
   large-body lane are what keep one token from taking everyone's share.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.bench.harness import ORIGIN
from ledger.bench.server import agency_for
from ledger.contract import crypto
from ledger.contract.envelope import build_submission

if TYPE_CHECKING:
    from ledger.bench.harness import Report, Sizes
    from ledger.bench.server import Deployment

BODY_BYTES = 30 * 1024 * 1024
BODY_PATHS = (
    "/v1/events",
    "/v1/events:batch",
    "/v1/tokens",
    "/v1/agencies",
    "/v1/agencies/x/keys",
    "/v1/stats/releases",
)


def resident_bytes(root: int) -> int:
    """VmRSS of a process and all its descendants, from /proc (0 without /proc)."""
    proc = Path("/proc")
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid, ppid = int(entry.name), int(fields.get("PPid", "0").strip() or 0)
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0] or 0) * 1024
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total


@contextmanager
def peak_of(root: int) -> Iterator[list[int]]:
    """Sample the server's resident memory every 20 ms while the block runs: [peak]."""
    peak, stop = [resident_bytes(root)], threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], resident_bytes(root))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join()


def send_big_body(url: str, path: str, token: str | None, declared: bool) -> int:
    """POST 30 MB of JSON-looking bytes; the status, or 0 when the server closed the
    connection while the body was still going out (it answered without reading it)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    chunk = b'{"events": [' + b"[1]," * (1 << 18)

    def body() -> Iterator[bytes]:
        sent = 0
        while sent < BODY_BYTES:
            yield chunk
            sent += len(chunk)

    try:
        if declared:
            headers["Content-Length"] = str(len(chunk) * (BODY_BYTES // len(chunk) + 1))
        conn.request("POST", path, body=body(), headers=headers, encode_chunked=not declared)
        response = conn.getresponse()
        response.read()
        return response.status
    except (BrokenPipeError, ConnectionResetError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def memory(report: Report, dep: Deployment, monitor: str) -> None:
    root = dep.process.pid
    time.sleep(0.5)
    idle = resident_bytes(root)
    jobs: list[tuple[str, str | None, bool]] = []
    for declared in (True, False):
        jobs += [(path, None, declared) for path in BODY_PATHS]
        jobs += [("/v1/events:batch", monitor, declared), ("/v1/events", monitor, declared)]
    statuses: list[int] = []
    with peak_of(root) as peak:
        threads = [
            threading.Thread(target=lambda j=job: statuses.append(send_big_body(dep.url, *j)))
            for job in jobs
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.2)
    if any(s not in (0, 401, 403, 413) for s in statuses):
        raise RuntimeError(f"a hostile body was answered {sorted(set(statuses))}")
    method = (
        f"VmRSS of the server's process tree, idle and peak (every 20 ms) while {len(jobs)} "
        "clients send 30 MB bodies at once: without a token to every body-taking endpoint, "
        "with a monitor token to both event endpoints, half declaring their length"
    )
    report.put("hostile_idle_rss_mb", [idle / 2**20], method, len(jobs))
    report.put("hostile_peak_rss_mb", [peak[0] / 2**20], method, len(jobs))
    report.put("hostile_rss_ratio", [peak[0] / max(idle, 1)], method + " (target <= 2)", len(jobs))


def _victim_bodies(key: crypto.SigningKey, origin: str, n: int) -> list[bytes]:
    case_id = str(uuid.uuid4())
    bodies = [
        build_submission(
            key, log=origin, case_id=case_id, type="case.opened", facts={"minor": False},
            attrs={"age_band": "adult", "gender": "female", "exploitation": ["labour"],
                   "identified_at": "2026-10-01"},
        )
    ]  # fmt: skip
    for _ in range(n - 1):
        bodies.append(
            build_submission(
                key, log=origin, case_id=case_id, type="service.delivered",
                facts={"referral_id": None}, attrs={"component": "housing"},
                payload={"notes": "z" * 1024},
            )
        )  # fmt: skip
    return [json.dumps(b).encode() for b in bodies]


def _post(conn: http.client.HTTPConnection, token: str, body: bytes) -> tuple[int, float]:
    start = time.perf_counter()
    conn.request(
        "POST",
        "/v1/events",
        body=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    response.read()
    return response.status, time.perf_counter() - start


def _victim_p99(url: str, token: str, bodies: list[bytes]) -> float:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    latencies = []
    for body in bodies:
        status, seconds = _post(conn, token, body)
        if status != 201:
            raise RuntimeError(f"the victim's submission was answered {status}")
        latencies.append(seconds)
        time.sleep(0.005)  # a steady, light stream, as an agency's system sends
    conn.close()
    latencies.sort()
    return latencies[int(len(latencies) * 0.99)] * 1000


def _costly(key: crypto.SigningKey, origin: str, integers: int) -> bytes:
    """A well-formed event whose payload is a long list of small integers: the body that
    costs the most to parse for its size (it is refused at step 3: its case is unknown)."""
    return json.dumps(
        build_submission(
            key, log=origin, case_id=str(uuid.uuid4()), type="service.delivered",
            facts={"referral_id": None}, attrs={"component": "housing"},
            payload={"notes": [1] * integers},
        )
    ).encode()  # fmt: skip


def _under_attack(
    dep: Deployment, victim: tuple[crypto.SigningKey, str], hostile: str, costly: bytes, n: int
) -> tuple[float, Counter[int]]:
    """The victim's p99 while 4 threads of the hostile token send `costly` back to back;
    and how the hostile requests were answered."""
    stop, answers = threading.Event(), Counter[int]()
    host, port = dep.url.removeprefix("http://").split(":")

    def attack() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        while not stop.is_set():
            try:
                status, _ = _post(conn, hostile, costly)
                answers[status] += 1
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.close()

    attackers = [threading.Thread(target=attack, daemon=True) for _ in range(4)]
    for t in attackers:
        t.start()
    time.sleep(0.5)
    try:
        return _victim_p99(dep.url, victim[1], _victim_bodies(victim[0], ORIGIN, n)), answers
    finally:
        stop.set()
        for t in attackers:
            t.join()


def latency(report: Report, sizes: Sizes, dep: Deployment) -> None:
    """Two attacks, each by a hostile token of its own: ~1 MiB bodies (the large-body lane
    and its per-token share), and ~40 KB ones (parsed in the submissions' group, bounded by
    the rate limit, where a body weighs one request per 4 KiB)."""
    victim = agency_for(dep, "bench-victim")
    n = 150 if sizes.repeats == 1 else 400
    quiet = _victim_p99(dep.url, victim[1], _victim_bodies(victim[0], ORIGIN, n))
    report.put("victim_p99_quiet_ms", [quiet], f"{n} sequential single events (p99)", n)
    for key, integers in (("", 330_000), ("_small", 20_000)):
        hostile_key, hostile = agency_for(dep, f"bench-hostile{key.replace('_', '-')}")
        costly = _costly(hostile_key, ORIGIN, integers)
        under, answers = _under_attack(dep, victim, hostile, costly, n)
        method = (
            f"{n} sequential single events of another agency (p99) while 4 threads of a "
            f"hostile caseworker token send {len(costly) / 1024:.0f} KiB bodies of small "
            "integers back to back, under the default rate limit (answers: "
            f"{', '.join(f'{count} x {status}' for status, count in sorted(answers.items()))})"
        )
        report.put(f"victim_p99_hostile{key}_ms", [under], method, n)
        target = " (target <= 2)" if not key else ""
        report.put(f"victim_p99{key}_ratio", [under / max(quiet, 1e-9)], method + target, n)


def bench_hostile(report: Report, sizes: Sizes, dep: Deployment) -> None:
    from ledger.client import LedgerClient

    with LedgerClient(dep.url, dep.admin) as admin:
        monitor = str(admin.create_token("monitor", "bench monitor")["token"])
    memory(report, dep, monitor)
    latency(report, sizes, dep)
