"""`ledger serve`: one or several uvicorn processes on one address.

With several processes each binds its own listening socket with `SO_REUSEPORT`, so the kernel
spreads connections across the processes. (A single shared socket, as `uvicorn --workers`
uses, lets whichever process is idle first accept: with keep-alive clients one process ended
up with nearly every connection while the others idled.) The supervisor restarts a process
that dies and stops them all on SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger("ledger.server")

APP = "ledger.api.app:app_from_settings"
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
