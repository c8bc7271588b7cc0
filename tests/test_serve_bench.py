"""`benchmarks/serve_bench.py --quick` completes and reports every serving figure.

Structure and completeness only, never timings (those are the full run's business), so it cannot
flake on a busy machine; a benchmark that silently stopped measuring would fail here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]


def test_serve_bench_quick_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "serve_bench.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["complete"], "every stamped update reached both clients"
    f = data["figures"]
    assert f["stamps_served"] == f["stamps_expected"] == f["stamps_direct"] > 0
    for key in ("latency_p50", "latency_p99", "cpu_per_delta", "loop_lag_p99_ms"):
        value = data["ratios"][key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
        assert key in data["met"]
    assert f["loop_lag_samples"] > 0
    for label in ("latency p50", "latency p99", "CPU per delivered delta", "event-loop lag"):
        assert label in proc.stdout
