"""Section 4, projections: every read model rebuilt from position 0 of the ingested log."""

from __future__ import annotations

from ledger.bench.harness import Report, Sizes, timed
from ledger.bench.server import Deployment


def bench_rebuild(report: Report, sizes: Sizes, dep: Deployment) -> None:
    from ledger.deploy import open_ledger, open_readmodels

    ledger = open_ledger(dep.settings)
    models = open_readmodels(dep.settings, ledger)
    try:
        size = ledger.store.log_size()
        runs = [size / timed(models.runner.rebuild) for _ in range(sizes.repeats)]
        report.put(
            "rebuild_per_s",
            runs,
            f"ledger projections rebuild: log entries per second, all "
            f"{len(models.runner.projections)} read models rebuilt from position 0",
            size,
        )
    finally:
        models.views.close()
        ledger.store.close()
