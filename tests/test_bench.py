"""`ledger bench --quick --json` runs and reports every figure (never a timed assertion)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ledger.bench.harness import KEYS


def test_bench_quick_json_runs_and_reports_every_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    result = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "bench", "--quick", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    for key in (*KEYS, "backend", "cores"):
        assert key in report, key
    numbers = [report[k] for k in KEYS]
    assert all(isinstance(v, int | float) for v in numbers), report
    assert report["backend"] == "sqlite" and report["cores"] >= 1
