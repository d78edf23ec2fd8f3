"""The bench's harness: the report's keys, the run's sizes, timing, and the report itself."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEYS = (
    "verify_per_s_one_core",
    "verify_per_s_all_cores",
    "raw_single_save_per_s",
    "raw_batch_save_per_s",
    "ingest_single_per_s",
    "ingest_single_p50_ms",
    "ingest_single_p99_ms",
    "ingest_batch_per_s",
    "loadgen_cpu_share",
    "audit_per_s",
    "audit_events",
    "audit_report_html_per_s",
    "audit_report_pdf_per_s",
    "audit_report_import_ms",
    "rebuild_per_s",
    "inclusion_proof_ms",
    "consistency_proof_ms",
    "proof_leaves",
    "erasure_ms_small",
    "erasure_ms_large",
    "key_destroy_ms",
    "hostile_idle_rss_mb",
    "hostile_peak_rss_mb",
    "hostile_rss_ratio",
    "victim_p99_quiet_ms",
    "victim_p99_hostile_ms",
    "victim_p99_ratio",
    "victim_p99_hostile_small_ms",
    "victim_p99_small_ratio",
    "notice_ingest_off_per_s",
    "notice_ingest_on_per_s",
    "notice_delivery_p50_ms",
    "notice_delivery_p99_ms",
    "notice_deliveries_per_s",
    "console_case_list_p50_ms",
    "console_case_list_p95_ms",
    "api_case_list_p50_ms",
    "api_case_list_p95_ms",
    "console_case_page_p50_ms",
    "console_case_page_p95_ms",
    "api_case_read_p50_ms",
    "api_case_read_p95_ms",
    "cosign_latency_p50_ms",
    "cosign_latency_p99_ms",
    "witness_add_checkpoint_per_s",
    "witness_one_log_per_s",
    "witness_cpu_ms_per_add",
    "witness_leaves",
    "dashboard_index_build_s",
    "dashboard_api_p50_ms",
    "dashboard_api_p95_ms",
    "console_dashboard_first_ms",
    "console_dashboard_p50_ms",
    "console_dashboard_p95_ms",
    "console_dashboard_changed_p50_ms",
    "console_dashboard_changed_p95_ms",
)
PAYLOAD_BYTES = 1024
ORIGIN = "bench.localhost/log"


@dataclass(frozen=True)
class Sizes:
    verifies: int
    raw_single: int
    raw_batches: int
    ingest_cases: int
    ingest_events_per_case: int
    clients: int
    batch_events: int
    audit_events: int
    proof_leaves: int
    erasure_large: int
    erasure_ledger: int
    repeats: int
    console_cases: int = 10_000
    console_reads: int = 40
    dashboard_cases: int = 100_000

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(
                2_000, 200, 2, 64, 4, 32, 400, 10_000, 100_000, 300, 3_000, 1, 1_000, 20, 3_000
            )
        return cls(20_000, 1_000, 5, 320, 8, 32, 5_000, 100_000, 1_000_000, 10_000, 100_000, 3)


@dataclass
class Report:
    backend: str
    cores: int
    values: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)

    def put(
        self, key: str, runs: list[float], method: str, count: int, *, limit: str | None = None
    ) -> float:
        median = statistics.median(runs)
        self.values[key] = round(median, 3)
        detail: dict[str, Any] = {
            "method": method,
            "count": count,
            "median": round(median, 3),
            "min": round(min(runs), 3),
            "max": round(max(runs), 3),
        }
        if limit is not None and self.values.get(limit):
            detail["ratio_to"] = limit
            detail["ratio"] = round(median / float(self.values[limit] or 1), 3)
        self.details[key] = detail
        return median

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict.fromkeys(KEYS)
        out.update(self.values)
        return {
            **out,
            "backend": self.backend,
            "cores": self.cores,
            "details": self.details,
            "machine": machine(),
        }


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": sys.version.split()[0]}


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
