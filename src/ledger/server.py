"""`ledger serve`: one or several uvicorn processes on one address.

With several processes each binds its own listening socket with `SO_REUSEPORT`, so the kernel
spreads connections across the processes. (A single shared socket, as `uvicorn --workers`
uses, lets whichever process is idle first accept: with keep-alive clients one process ended
up with nearly every connection while the others idled.) The supervisor restarts a process
that dies and stops them all on SIGTERM or SIGINT.

Several processes share one directory for their Prometheus counters (prometheus-client's
multiprocess mode, `PROMETHEUS_MULTIPROC_DIR`): the one set in the environment, emptied at
start, or a temporary one made and removed here. Whichever process answers `GET /metrics`
sums them all, those of processes that exited included.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

log = logging.getLogger("ledger.server")

APP = "ledger.api.app:app_from_settings"
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
RESTART_BACKOFF_S = 1.0


def listening_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _config(log_level: str) -> Any:
    import uvicorn

    return uvicorn.Config(APP, factory=True, log_level=log_level, server_header=False)


def _serve_process(host: str, port: int, log_level: str) -> None:
    import uvicorn

    sock = listening_socket(host, port, reuse_port=True)
    uvicorn.Server(_config(log_level)).run(sockets=[sock])


def serve(host: str, port: int, processes: int, log_level: str) -> None:
    """Serve until SIGTERM or SIGINT."""
    import uvicorn

    if processes <= 1:
        uvicorn.Server(_config(log_level)).run(sockets=[listening_socket(host, port, False)])
        return
    if port == 0:  # every process must bind the same port: choose it once
        with listening_socket(host, 0, reuse_port=True) as probe:
            port = probe.getsockname()[1]
    metrics_dir, made = _metrics_dir()
    try:
        _supervise(host, port, processes, log_level, metrics_dir)
    finally:
        if made:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _metrics_dir() -> tuple[Path, bool]:
    """The processes' shared metrics directory, emptied (and whether it was made here);
    set in the environment the processes inherit."""
    given = os.environ.get(MULTIPROCESS_DIR)
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="ledger-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):  # counts of an earlier run would add up with these
        stale.unlink()
    os.environ[MULTIPROCESS_DIR] = str(folder)
    return folder, not given


def _supervise(host: str, port: int, processes: int, log_level: str, metrics_dir: Path) -> None:
    from prometheus_client import multiprocess

    context = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> tuple[BaseProcess, float]:
        process = context.Process(target=_serve_process, args=(host, port, log_level))
        process.start()
        return process, time.monotonic()

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    running = [start() for _ in range(processes)]
    quick_failures = 0
    log.info("serving on %s:%d with %d processes", host, port, processes)
    while not stopping:
        time.sleep(0.2)
        for i, (process, started) in enumerate(running):
            if process.is_alive() or stopping:
                continue
            log.warning("server process %s exited (%s)", process.pid, process.exitcode)
            if process.pid is not None:
                multiprocess.mark_process_dead(process.pid, str(metrics_dir))
            quick_failures = quick_failures + 1 if time.monotonic() - started < 10 else 0
            if quick_failures >= 3:  # it cannot start (configuration, database): give up
                stopping = True
                break
            time.sleep(RESTART_BACKOFF_S)
            running[i] = start()
    for process, _ in running:
        process.terminate()  # uvicorn finishes requests in flight, then exits
    for process, _ in running:
        process.join(30)
        if process.is_alive():
            process.kill()
    if quick_failures >= 3:
        raise SystemExit("server processes keep exiting at start; see the log above")
