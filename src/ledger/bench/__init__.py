"""`ledger bench`: the ledger's speed beside this machine's own limits, measured in one run.

Every figure says how it was measured (method, count, median and spread over repeats) and,
where there is one, its ratio to the limit measured in the same run. Nothing here is asserted
by the test suite beyond "it runs and reports every key".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from ledger.bench.audit import bench_audit
from ledger.bench.console import bench_console
from ledger.bench.dashboard import bench_dashboard
from ledger.bench.erasure import bench_erasure
from ledger.bench.harness import Report, Sizes
from ledger.bench.hostile import bench_hostile
from ledger.bench.ingest import bench_ingest
from ledger.bench.limits import bench_limits
from ledger.bench.notices import bench_notices
from ledger.bench.proofs import bench_proofs
from ledger.bench.rebuild import bench_rebuild
from ledger.bench.server import deployment
from ledger.bench.witness import bench_witness
from ledger.settings import Settings

SECTIONS = (
    "limits", "proofs", "audit", "ingest", "rebuild", "erasure", "notices", "hostile", "console",
    "dashboard", "witness",
)  # fmt: skip


def run(
    quick: bool,
    settings: Settings,
    progress: Callable[[str], None],
    only: Sequence[str] = SECTIONS,
) -> Report:
    """Every section by default; `only` picks some (the others' keys stay null)."""
    sizes = Sizes.of(quick)
    report = Report("postgres" if settings.is_postgres else "sqlite", os.cpu_count() or 1)
    if "limits" in only:
        progress("limits: Ed25519 verify, raw eventsourcing saves")
        bench_limits(report, sizes, settings)
    if "proofs" in only:
        progress("proofs")
        bench_proofs(report, sizes, settings)
    if "audit" in only:
        progress("audit")
        bench_audit(report, sizes)
    if {"ingest", "rebuild", "erasure"} & set(only):
        with deployment(settings) as dep:
            if "ingest" in only or "rebuild" in only:
                progress("ingest through the HTTP server")
                bench_ingest(report, sizes, dep)
            if "rebuild" in only:
                progress("projection rebuild")
                bench_rebuild(report, sizes, dep)
            if "erasure" in only:
                progress("erasure")
                bench_erasure(report, sizes, dep)
    if "notices" in only:
        progress("notices: webhook delivery while ingest runs")
        bench_notices(report, sizes, settings)
    if "hostile" in only:  # with the deployment's default rate limits, as it would run
        progress("hostile bodies: the server's memory, another agency's latency")
        with deployment(settings, throttled=True) as dep:
            bench_hostile(report, sizes, dep)
    if "console" in only:
        progress("console: case list and case page, beside the API")
        with deployment(settings) as dep:
            bench_console(report, sizes, dep)
    if "dashboard" in only:
        progress("dashboard: the indicators at many cases, through the API and the console")
        with deployment(settings) as dep:
            bench_dashboard(report, sizes, dep)
    if "witness" in only:
        progress("witnesses: cosigning latency, add-checkpoint throughput on one core")
        bench_witness(report, sizes, settings)
    return report
