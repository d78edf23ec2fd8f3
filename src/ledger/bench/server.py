"""A served throwaway ledger (`ledger init`, `ledger serve` in a subprocess) and its agencies."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ledger.bench.harness import ORIGIN
from ledger.contract import crypto
from ledger.settings import Settings


@dataclass
class Deployment:
    settings: Settings
    env: dict[str, str]
    url: str
    process: subprocess.Popen[bytes]
    admin: str


@contextmanager
def deployment(
    settings: Settings, *, throttled: bool = False, extra: dict[str, str] | None = None
) -> Iterator[Deployment]:
    """A served throwaway ledger; `throttled` keeps the default per-token rate limit (the
    load generator shares one token, so the other sections lift it); `extra`: more
    `LEDGER_*` settings, by their variable names."""
    folder = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    schema = f"bench_{secrets.token_hex(4)}"
    env = {
        **os.environ,
        "LEDGER_HOME": str(folder / "home"),
        "LEDGER_KEYS": str(folder / "keys"),
        "LEDGER_LOG_LEVEL": "warning",
        "LEDGER_PG_SCHEMA": schema,
        "LEDGER_WORKERS": str(os.cpu_count() or 1),
        **(extra or {}),
    }
    if not throttled:
        env["LEDGER_RATE_PER_S"] = "1000000"  # the load generator shares one token
    if settings.database_url:
        env["LEDGER_DATABASE_URL"] = settings.database_url
    else:
        env.pop("LEDGER_DATABASE_URL", None)
    ledger_cmd = [sys.executable, "-m", "ledger.cli"]
    subprocess.run(  # noqa: S603
        [*ledger_cmd, "init", "--origin", ORIGIN],
        env=env,
        check=True,  # noqa: S603
        capture_output=True,
    )
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603
        [*ledger_cmd, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/v1/health", tries=200)
    bench_settings = Settings(
        home=folder / "home",
        keys=folder / "keys",
        database_url=settings.database_url,
        pg_schema=schema,
    )
    admin = (folder / "keys" / "admin.token").read_text().strip()
    try:
        yield Deployment(bench_settings, env, url, proc, admin)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
        if settings.is_postgres:
            import psycopg

            with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
                for suffix in ("", "_keys", "_views"):
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema}{suffix} CASCADE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, tries: int) -> None:
    """Until `url` answers at all, every 50 ms, `tries` times at most."""
    import httpx

    for _ in range(tries):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)


def agency_for(dep: Deployment, name: str) -> tuple[crypto.SigningKey, str]:
    from ledger.client import LedgerClient

    key = crypto.generate_signing_key(name)
    with LedgerClient(dep.url, dep.admin) as admin:
        admin.register_agency(name, name, "ngo", key.verify_key.line())
        token = str(admin.create_token("caseworker", "bench", name)["token"])
    return key, token
