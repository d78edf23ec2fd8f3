"""Section 8, the agency console: p50 and p95 of its case list and of a case page with an
agency holding many cases, beside the same reads through the API, in one run."""

from __future__ import annotations

import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from ledger.bench.harness import Report, Sizes
from ledger.bench.server import Deployment, agency_for, free_port, wait_until_up
from ledger.bench.workload import case_bodies
from ledger.contract import crypto

PASSWORD = secrets.token_urlsafe(16)  # the bench account's, for this run only


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return statistics.median(ordered), p95


def _timed_gets(client: httpx.Client, path: str, n: int) -> list[float]:
    runs = []
    for _ in range(n):
        start = time.perf_counter()
        response = client.get(path)
        runs.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return runs


def start_console(
    dep: Deployment, key: crypto.SigningKey, token: str, role: str = "caseworker"
) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    """A real `ledger console serve` for the agency, and a client logged in to it as a person
    bound to `token` (a supervisor with a second factor, as the console requires)."""
    import pyotp

    from ledger.console.cli import open_accounts
    from ledger.console.settings import ConsoleSettings

    folder = Path(tempfile.mkdtemp(prefix="ledger-bench-console-"))
    key_file = folder / "agency.key"
    key_file.write_text(key.line())
    accounts = open_accounts(ConsoleSettings(state_dir=folder / "state"))
    _, secret = accounts.create("bench", "Bench", role, PASSWORD, token)
    accounts.close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")} | {
        "LEDGER_CONSOLE_LEDGER_URL": dep.url,
        "LEDGER_CONSOLE_AGENCY_KEY_FILE": str(key_file),
        "LEDGER_CONSOLE_STATE_DIR": str(folder / "state"),
        "LEDGER_CONSOLE_PORT": str(port),
    }
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "ledger.cli", "console", "serve"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/login", tries=300)
    console = httpx.Client(base_url=url, timeout=120)
    csrf = re.search(r'name="csrf" value="([^"]+)"', console.get("/login").text)
    assert csrf is not None
    code = pyotp.TOTP(secret).now() if secret else ""
    login = {"username": "bench", "password": PASSWORD, "csrf": csrf[1], "code": code}
    assert console.post("/login", data=login).status_code in (200, 303)
    return proc, console


def listed(api: httpx.Client) -> int:
    """How many cases the agency's list holds now, following its pages."""
    count, cursor = 0, None
    while True:
        params = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        page = api.get("/v1/cases", params=params).json()
        count += len(page["cases"])
        cursor = page.get("next")
        if not cursor:
            return count


def bench_console(report: Report, sizes: Sizes, dep: Deployment) -> None:
    cases = sizes.console_cases
    key, token = agency_for(dep, "bench-console")
    api = httpx.Client(base_url=dep.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    case_ids = []
    batch: list[bytes] = []
    for _ in range(cases):
        body = case_bodies(key, 1)[0]  # the intake: a case of its own
        case_ids.append(json.loads(body)["envelope"]["case_id"])
        batch.append(body)
        if len(batch) == 1000 or len(case_ids) == cases:
            events = b'{"events": [' + b",".join(batch) + b"]}"
            r = api.post("/v1/events:batch", content=events,
                          headers={"Content-Type": "application/json"})  # fmt: skip
            assert r.status_code == 200, r.text[:200]
            batch = []
    # PostgreSQL deployments project in a worker of their own: run one, and wait for it.
    worker = None
    if dep.settings.is_postgres:
        worker = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "ledger.cli", "worker"], env=dep.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    deadline = time.monotonic() + 300
    while listed(api) < cases:
        assert time.monotonic() < deadline, "the read models did not catch up"
        time.sleep(0.5)
    proc, console = start_console(dep, key, token)
    try:
        n = sizes.console_reads
        one = case_ids[len(case_ids) // 2]
        figures = {
            "console_case_list": _timed_gets(console, "/cases", n),
            "api_case_list": _timed_gets(api, "/v1/cases", n),
            "console_case_page": _timed_gets(console, f"/cases/{one}", n),
            "api_case_read": _timed_gets(api, f"/v1/cases/{one}", n),
        }
        what = {
            "console_case_list": "the console's case list page (GET /cases, logged in)",
            "api_case_list": "GET /v1/cases through the API (its first page)",
            "console_case_page": "a case's page in the console (GET /cases/{id})",
            "api_case_read": "GET /v1/cases/{id} through the API (an unsealed, logged read)",
        }
        for name, runs in figures.items():
            p50, p95 = _percentiles(runs)
            report.put(f"{name}_p50_ms", [p50], f"{what[name]}: median of {n}, ms", cases)
            report.put(f"{name}_p95_ms", [p95], f"{what[name]}: p95 of {n}, ms", cases)
    finally:
        for running in (proc, worker):
            if running is not None:
                running.terminate()
                running.wait(10)
        api.close()
