"""Section 9, the supervisors' dashboard at `dashboard_cases` cases of one agency (100,000 in
a full run): building the indicators' index from the stored events (the first query after a
restart), then the indicators through the API and the console's dashboard page, p50 and p95:
viewed again unchanged (its charts drawn once), and after a new case before each view (the
charts whose figures changed drawn again, as in use).

The cases are identified over the last twelve months; every third has a consent and a
health referral, half of those in time."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from ledger.bench.console import _percentiles, _timed_gets, start_console
from ledger.bench.harness import ORIGIN, Report, Sizes
from ledger.bench.server import Deployment, agency_for
from ledger.contract import crypto
from ledger.contract.envelope import build_submission
from ledger.contract.vocabulary import format_timestamp

OPENED = {"age_band": "adult", "gender": "female", "exploitation": ["labour"]}
CONSENT = {"language": "es", "interpreter": False, "notice_version": "bench"}


def case_events(key: crypto.SigningKey, i: int, now: datetime) -> list[bytes]:
    case_id = str(uuid.uuid4())
    identified = (now - timedelta(days=i % 365)).strftime("%Y-%m-%d")

    def event(type: str, facts: dict[str, Any], attrs: dict[str, Any]) -> bytes:
        body = build_submission(key, log=ORIGIN, case_id=case_id, type=type, facts=facts,
                                attrs=attrs, signed_at=now)  # fmt: skip
        return json.dumps(body).encode()

    out = [event("case.opened", {"minor": False}, OPENED | {"identified_at": identified})]
    if i % 3 == 0:
        consent = str(uuid.uuid4())
        out.append(event("consent.granted", {
            "consent_id": consent, "purposes": ["referral"], "recipients": ["bench-dash-peer"],
            "categories": ["identity"], "expires_at": None, "given_by": "survivor",
            "child_assent": None, "assent_exempt": False}, CONSENT))  # fmt: skip
        due = format_timestamp(now + timedelta(hours=24))
        out.append(event("referral.made", {
            "referral_id": str(uuid.uuid4()), "to": "bench-dash-peer", "consent_id": consent,
            "categories": ["identity"]},
            {"component": "health_psychosocial", "due_by": due, "urgency": "routine"}))  # fmt: skip
    return out


def bench_dashboard(report: Report, sizes: Sizes, dep: Deployment) -> None:
    from ledger.client import LedgerClient

    cases, n = sizes.dashboard_cases, sizes.console_reads
    key, token = agency_for(dep, "bench-dash")
    agency_for(dep, "bench-dash-peer")
    with LedgerClient(dep.url, dep.admin) as admin:
        supervisor = str(admin.create_token("supervisor", "bench", "bench-dash")["token"])
    api = httpx.Client(base_url=dep.url, timeout=600)
    events, batch, now = 0, [], datetime.now(UTC)
    for i in range(cases):
        batch += case_events(key, i, now)
        if len(batch) >= 990 or i == cases - 1:
            body = b'{"events": [' + b",".join(batch) + b"]}"
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
            r = api.post("/v1/events:batch", content=body, headers=headers)
            assert r.status_code == 200, r.text[:200]
            events, batch = events + len(batch), []
    path = "/v1/agencies/bench-dash/indicators"
    auth = {"Authorization": f"Bearer {supervisor}"}
    started = time.perf_counter()
    first = api.get(path, headers=auth)
    built = time.perf_counter() - started
    assert first.status_code == 200, first.text[:200]
    assert first.json()["celerity"]["identified"] > 0
    report.put("dashboard_index_build_s", [built],
               f"the first indicators query after {events} events of {cases} cases were"
               " ingested: what the answering process's index still had to read (it follows"
               " the log every 5 s; a process started cold reads them all), seconds",
               cases)  # fmt: skip
    api.headers.update(auth)
    runs = _timed_gets(api, path, n)
    p50, p95 = _percentiles(runs)
    what = f"GET {path} (the twelve months to now, all services), warm, ms over {n}"
    report.put("dashboard_api_p50_ms", [p50], f"{what}: median", cases)
    report.put("dashboard_api_p95_ms", [p95], f"{what}: p95", cases)
    proc, console = start_console(dep, key, supervisor, role="supervisor")
    try:
        started = time.perf_counter()
        assert console.get("/dashboard").status_code == 200
        report.put("console_dashboard_first_ms", [(time.perf_counter() - started) * 1000],
                   "the console's dashboard page, its first view: every chart drawn, ms",
                   cases)  # fmt: skip
        runs = _timed_gets(console, "/dashboard", n)
        p50, p95 = _percentiles(runs)
        what = f"the console's dashboard page (GET /dashboard, a supervisor), ms over {n}"
        report.put("console_dashboard_p50_ms", [p50], f"{what}: median", cases)
        report.put("console_dashboard_p95_ms", [p95], f"{what}: p95", cases)
        report.details["console_dashboard_p95_ms"]["spread_ms"] = round(statistics.pstdev(runs), 1)
        # As in use: a case opened before each view, so the figures and charts have changed.
        changing = []
        write = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        for _ in range(n):
            (opened,) = case_events(key, 1, datetime.now(UTC))
            assert api.post("/v1/events", content=opened, headers=write).status_code == 201
            started = time.perf_counter()
            assert console.get("/dashboard").status_code == 200
            changing.append((time.perf_counter() - started) * 1000)
        p50, p95 = _percentiles(changing)
        what = f"the dashboard page after a new case each time (charts drawn again), ms over {n}"
        report.put("console_dashboard_changed_p50_ms", [p50], f"{what}: median", cases)
        report.put("console_dashboard_changed_p95_ms", [p95], f"{what}: p95", cases)
    finally:
        proc.terminate()
        proc.wait(10)
        api.close()
