"""Section 2, ingest through the real HTTP server: single events, then batches of 1,000."""

from __future__ import annotations

import http.client
import json
import os
import resource
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from ledger.bench.harness import Report, Sizes
from ledger.bench.server import Deployment, agency_for
from ledger.bench.workload import case_bodies
from ledger.settings import Settings


def _loadgen(
    url: str, token: str, work: list[list[bytes]], clients: int, stamps: bool = False
) -> dict[str, Any]:
    """The load generator process: `clients` threads, keep-alive connections, pre-signed
    bodies; returns latencies, wall time and its own CPU time (`stamps`: also the log
    position of each event and the wall-clock time its answer came)."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors: list[int] = []
    answered: list[tuple[int, float]] = []
    lock = threading.Lock()

    def client(cases: list[list[bytes]]) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        mine, bad, done = [], [], []
        for bodies in cases:
            for body in bodies:
                start = time.perf_counter()
                conn.request(
                    "POST",
                    "/v1/events",
                    body=body,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    },
                )
                response = conn.getresponse()
                answer = response.read()
                mine.append(time.perf_counter() - start)
                if response.status != 201:
                    bad.append(response.status)
                elif stamps:
                    done.append((int(json.loads(answer)["index"]), time.time()))
        conn.close()
        with lock:
            latencies.extend(mine)
            errors.extend(bad)
            answered.extend(done)

    shares = [work[i::clients] for i in range(clients)]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(s,)) for s in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "latencies": latencies, "wall": wall, "cpu": cpu, "errors": errors, "answered": answered,
    }  # fmt: skip


def _processes() -> list[tuple[int, int, str, float]]:
    """(pid, ppid, cmdline, user + system CPU seconds) of every live process, from /proc
    (empty where there is none)."""
    proc, out = Path("/proc"), []
    if not (proc / "self" / "stat").exists():
        return []
    tick = os.sysconf("SC_CLK_TCK")
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        cpu = (int(fields[11]) + int(fields[12])) / tick
        out.append((int(entry.name), int(fields[1]), cmdline, cpu))
    return out


def _cpu(root: int) -> tuple[float, float] | None:
    """CPU seconds of `root` and all its descendants (the server's processes), and of the
    local PostgreSQL server's processes, from one reading of /proc (None without /proc)."""
    processes = _processes()
    if not processes:
        return None
    children: dict[int, list[int]] = {}
    cpu = {}
    for pid, ppid, _, seconds in processes:
        children.setdefault(ppid, []).append(pid)
        cpu[pid] = seconds
    server, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        server += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, ()))
    database = sum(seconds for _, _, cmd, seconds in processes if cmd.startswith("postgres:"))
    return server, database


def _local_postgres(settings: Settings) -> bool:
    from psycopg.conninfo import conninfo_to_dict

    host = str(conninfo_to_dict(settings.database_url or "").get("host", "localhost"))
    return settings.is_postgres and (host in ("localhost", "127.0.0.1", "::1") or host[:1] == "/")


def bench_ingest(report: Report, sizes: Sizes, dep: Deployment) -> None:
    key, token = agency_for(dep, "bench-ngo")
    agency_for(dep, "bench-peer")
    rates, p50s, p99s, shares = [], [], [], []
    server_ms: list[float] = []
    db_ms: list[float] = []
    postgres = _local_postgres(dep.settings)
    for _ in range(sizes.repeats):
        work = [case_bodies(key, sizes.ingest_events_per_case) for _ in range(sizes.ingest_cases)]
        total = sum(len(w) for w in work)
        before = _cpu(dep.process.pid)
        with ProcessPoolExecutor(1) as pool:
            result = pool.submit(_loadgen, dep.url, token, work, sizes.clients).result()
        after = _cpu(dep.process.pid)
        if before is not None and after is not None:
            server_ms.append((after[0] - before[0]) * 1000 / total)
            if postgres:
                db_ms.append((after[1] - before[1]) * 1000 / total)
        if result["errors"]:
            raise RuntimeError(f"ingest refused {len(result['errors'])} events")
        lat = sorted(result["latencies"])
        rates.append(total / result["wall"])
        p50s.append(lat[len(lat) // 2] * 1000)
        p99s.append(lat[int(len(lat) * 0.99)] * 1000)
        shares.append(result["cpu"] / (result["wall"] * report.cores))
    count = sizes.ingest_cases * sizes.ingest_events_per_case
    method = (
        f"POST /v1/events, {sizes.clients} keep-alive clients in a separate process, "
        "pre-signed 1 KiB events"
    )
    report.put("ingest_single_per_s", rates, method, count, limit="raw_single_save_per_s")
    report.put("ingest_single_p50_ms", p50s, method, count)
    report.put("ingest_single_p99_ms", p99s, method, count)
    report.put("loadgen_cpu_share", shares, "load generator CPU time / (wall time x cores)", count)
    if server_ms:
        report.put(
            "ingest_server_cpu_ms_per_event",
            server_ms,
            "user + system CPU of the server's processes during single-event ingest, per event"
            " (on SQLite this includes the database's work)",
            count,
        )
    if db_ms:
        report.put(
            "ingest_db_cpu_ms_per_event",
            db_ms,
            "user + system CPU of the local PostgreSQL processes during single-event ingest,"
            " per event",
            count,
        )

    runs = []
    for _ in range(sizes.repeats):
        per_case = 5
        bodies = [
            b for _ in range(sizes.batch_events // per_case) for b in case_bodies(key, per_case)
        ]
        batches = [bodies[i : i + 1000] for i in range(0, len(bodies), 1000)]
        conn = http.client.HTTPConnection(dep.url.removeprefix("http://"), timeout=600)
        start = time.perf_counter()
        for batch in batches:
            raw = b'{"events":[' + b",".join(batch) + b"]}"
            conn.request(
                "POST",
                "/v1/events:batch",
                body=raw,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            response = conn.getresponse()
            answer = json.loads(response.read())
            if any(r["status"] != 201 for r in answer["results"]):
                raise RuntimeError("a batch event was refused")
        runs.append(len(bodies) / (time.perf_counter() - start))
        conn.close()
    report.put(
        "ingest_batch_per_s",
        runs,
        "POST /v1/events:batch, 1,000 events per request",
        sizes.batch_events,
        limit="raw_batch_save_per_s",
    )
