"""Real ledger processes for tests: `ledger serve` and `ledger worker` as subprocesses, each in
its own process group so a test can SIGKILL every process of one at once (uvicorn's workers
included), on SQLite or PostgreSQL."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ledger.client import LedgerClient
from ledger.contract import crypto
from ledger.settings import Settings
from tests.conftest import drop_schemas, require_postgres

LEDGER = [sys.executable, "-m", "ledger.cli"]
ORIGIN = "crash.example/log"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """One command in its own process group: start, SIGKILL the whole group, stop."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal_group(self, sig: int, wait_s: float) -> bool:
        """Signal the group; True once no process of it is left."""
        assert self.proc is not None
        pgid = self.proc.pid
        with suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            self.proc.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        """SIGKILL every process of the group, and wait until none is left."""
        if self.proc is None:
            return
        if not self._signal_group(signal.SIGKILL, 20):
            raise RuntimeError(f"{self.argv[3:]} survived SIGKILL")
        self.proc.wait()
        self.kills += 1
        self.proc = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it takes longer than 15 s."""
        if self.proc is None:
            return
        if not self._signal_group(signal.SIGTERM, 15):
            self._signal_group(signal.SIGKILL, 20)
        self.proc.wait()
        self.proc = None

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


@dataclass
class Deployment:
    """A fresh, initialised ledger (`ledger init`) with its server and projection worker."""

    root: Path
    backend: str
    env: dict[str, str]
    settings: Settings
    port: int
    workers: int = 2
    server: Proc = field(init=False)
    worker: Proc = field(init=False)

    def __post_init__(self) -> None:
        self.server = Proc(
            [*LEDGER, "serve", "--port", str(self.port), "--workers", str(self.workers)],
            self.env,
            self.root / "server.log",
        )
        self.worker = Proc([*LEDGER, "worker"], self.env, self.root / "worker.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def keys(self) -> Path:
        return self.settings.keys

    @property
    def admin_token(self) -> str:
        return (self.keys / "admin.token").read_text().strip()

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LEDGER, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start_server(self, timeout: float = 90) -> None:
        self.server.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.server.alive:
                raise RuntimeError("ledger serve exited:\n" + self.server.tail())
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("ledger serve did not answer in time:\n" + self.server.tail())

    def stop(self) -> None:
        self.worker.stop()
        self.server.stop()


@contextmanager
def deployment(backend: str, root: Path, *, workers: int = 2, **env: str) -> Iterator[Deployment]:
    """`ledger init` on SQLite files under `root`, or in a PostgreSQL schema unique to this
    run (dropped afterwards); the processes are stopped on the way out."""
    root.mkdir(parents=True, exist_ok=True)
    url = require_postgres() if backend == "postgres" else None
    schema = f"t_{secrets.token_hex(6)}"
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LEDGER_") or k == "LEDGER_TEST_DATABASE_URL"
    }
    full = (
        base
        | {
            "LEDGER_HOME": str(root / "home"),
            "LEDGER_KEYS": str(root / "keys"),
            "LEDGER_LOG_LEVEL": "warning",
            "LEDGER_PROJECTIONS_IN_API": "false",  # the worker runs them, on both backends
            "LEDGER_CHECKPOINT_INTERVAL_S": "1",
            "LEDGER_RATE_PER_S": "0",
            "PYTHONUNBUFFERED": "1",
        }
        | env
    )
    if url is not None:
        full |= {"LEDGER_DATABASE_URL": url, "LEDGER_PG_SCHEMA": schema}
    settings = Settings(home=root / "home", keys=root / "keys", database_url=url, pg_schema=schema)
    dep = Deployment(root, backend, full, settings, free_port(), workers)
    try:
        init = dep.cli("init", "--origin", ORIGIN)
        assert init.returncode == 0, init.stdout + init.stderr
        yield dep
    finally:
        dep.stop()
        if url is not None:
            drop_schemas(url, schema)


@dataclass
class AgencyCreds:
    id: str
    key: crypto.SigningKey
    caseworker: str
    supervisors: list[str]


def register_agencies(dep: Deployment, names: list[str]) -> dict[str, AgencyCreds]:
    """Register agencies through the admin API, each with a caseworker and two supervisors."""
    out = {}
    with LedgerClient(dep.url, dep.admin_token) as admin:
        for name in names:
            key = crypto.generate_signing_key(name)
            admin.register_agency(name, name.upper(), "ngo", key.verify_key.line())
            out[name] = AgencyCreds(
                name,
                key,
                admin.create_token("caseworker", f"{name} cw", name)["token"],
                [admin.create_token("supervisor", f"{name} sup{i}", name)["token"] for i in (1, 2)],
            )
    return out


def write_audit_inputs(dep: Deployment, agencies: dict[str, AgencyCreds]) -> list[str]:
    """An auditor token file and the agency key file; the `audit verify` arguments."""
    with LedgerClient(dep.url, dep.admin_token) as admin:
        (dep.root / "auditor.token").write_text(admin.create_token("auditor", "auditor")["token"])
    (dep.root / "agency-keys").write_text(
        "".join(a.key.verify_key.line() + "\n" for a in agencies.values())
    )
    return [
        "audit", "verify", "--url", dep.url, "--token-file", str(dep.root / "auditor.token"),
        "--log-key", str(dep.keys / "log.vkey"), "--agency-keys", str(dep.root / "agency-keys"),
    ]  # fmt: skip


def log_entries(dep: Deployment) -> list[tuple[int, dict[str, Any]]]:
    """Every entry of the log, page by page, with the index the server gave it."""
    import json

    out: list[tuple[int, dict[str, Any]]] = []
    headers = {"Authorization": f"Bearer {dep.admin_token}"}
    with httpx.Client(base_url=dep.url, headers=headers, timeout=30) as http:
        while True:
            start = out[-1][0] + 1 if out else 0
            page = http.get("/v1/log/entries", params={"start": start, "end": 1 << 40})
            page.raise_for_status()
            items = page.json()["entries"]
            if not items:
                return out
            for item in items:
                out.append((item["index"], json.loads(crypto.b64decode_strict(item["leaf"]))))
