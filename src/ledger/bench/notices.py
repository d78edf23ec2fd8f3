"""Section: notices delivered to a local webhook receiver while single-event ingest runs.

One deployment whose API processes deliver notices (`LEDGER_NOTICES_IN_API`), a receiver in
a process of its own, and a workload with one share (one notice) per case. Each repeat
ingests the same amount twice: without an endpoint (the notices are recorded, nobody is
called), then with the receiver registered (every notice delivered while ingest runs). The
latency of a notice is from the moment its event's 201 reached the load generator to the
moment the receiver had the delivery, both on this machine's clock.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

from ledger.bench.harness import Report, Sizes
from ledger.bench.ingest import _loadgen
from ledger.bench.server import agency_for, deployment, free_port, wait_until_up
from ledger.bench.workload import case_bodies
from ledger.settings import Settings


def _receive(port: int, out: str) -> None:
    """The receiver process: answers 204 and appends `position time` per delivery."""
    sink = Path(out).open("a", buffering=1)  # noqa: SIM115 (open for the process's life)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a receiver in production would

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            at = time.time()
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()
            position = json.loads(body)["data"]["position"]
            sink.write(f"{position} {at}\n")

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def _received(path: Path) -> dict[int, float]:
    if not path.exists():
        return {}
    out: dict[int, float] = {}
    for line in path.read_text().splitlines():
        position, at = line.split()
        out.setdefault(int(position), float(at))
    return out


def bench_notices(report: Report, sizes: Sizes, settings: Settings) -> None:
    folder = Path(mkdtemp(prefix="ledger-bench-receiver-"))
    port = free_port()
    receiver = multiprocessing.get_context("spawn").Process(
        target=_receive, args=(port, str(folder / "received")), daemon=True
    )
    receiver.start()
    wait_until_up(f"http://127.0.0.1:{port}/", tries=200)
    extra = {
        "LEDGER_NOTICES_IN_API": "true",
        "LEDGER_WEBHOOK_ALLOW_HTTP_LOOPBACK": "true",  # the receiver is on this machine
    }
    try:
        with deployment(settings, extra=extra) as dep:
            _measure(report, sizes, dep, port, folder / "received")
    finally:
        receiver.terminate()
        receiver.join(10)


def _measure(report: Report, sizes: Sizes, dep: Any, port: int, received: Path) -> None:
    from ledger.client import LedgerClient

    key, token = agency_for(dep, "bench-ngo")
    agency_for(dep, "bench-peer")
    with LedgerClient(dep.url, dep.admin) as admin:
        supervisor = admin.create_token("supervisor", "bench hooks", "bench-peer")["token"]
    peer = LedgerClient(dep.url, supervisor)
    off, on, p50s, p99s, per_s = [], [], [], [], []
    cases, events = sizes.ingest_cases, sizes.ingest_events_per_case

    def ingest() -> dict[str, Any]:
        work = [case_bodies(key, events, share=True) for _ in range(cases)]
        with ProcessPoolExecutor(1) as pool:
            result = pool.submit(_loadgen, dep.url, token, work, sizes.clients, True).result()
        if result["errors"]:
            raise RuntimeError(f"ingest refused {len(result['errors'])} events")
        return dict(result)

    for _ in range(sizes.repeats):
        off.append(cases * events / ingest()["wall"])
        hook = peer.register_webhook("bench-peer", f"http://127.0.0.1:{port}/notices")
        result = ingest()
        on.append(cases * events / result["wall"])
        answered = dict(result["answered"])
        deadline = time.monotonic() + 120
        while True:
            got = {p: t for p, t in _received(received).items() if p in answered}
            if len(got) >= cases or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        peer.remove_webhook("bench-peer", hook["id"])
        if len(got) < cases:
            raise RuntimeError(f"only {len(got)} of {cases} notices delivered in 120 s")
        waits = sorted((t - answered[p]) * 1000 for p, t in got.items())
        p50s.append(waits[len(waits) // 2])
        p99s.append(waits[int(len(waits) * 0.99)])
        first = min(result["answered"], key=lambda a: a[1])[1]
        per_s.append(len(got) / max(max(got.values()) - first, 1e-6))
    peer.close()
    count = cases * events
    method = (
        f"POST /v1/events, {sizes.clients} keep-alive clients, 1 KiB events, one share (one"
        f" notice) per case of {events} events"
    )
    report.put("notice_ingest_off_per_s", off, method + ": no endpoint registered", count)
    report.put(
        "notice_ingest_on_per_s",
        on,
        method + ": every notice delivered to a local receiver meanwhile",
        count,
        limit="notice_ingest_off_per_s",
    )
    delivery = (
        "a notice's event answered 201 to its webhook delivery received, local receiver,"
        " during that ingest"
    )
    report.put("notice_delivery_p50_ms", p50s, delivery, cases)
    report.put("notice_delivery_p99_ms", p99s, delivery, cases)
    report.put(
        "notice_deliveries_per_s",
        per_s,
        "deliveries to one endpoint (in order, one at a time) from the first notice's event to"
        " the last delivery",
        cases,
    )
