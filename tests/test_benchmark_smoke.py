"""`benchmarks/run.py --quick` runs end to end and reports every figure, for all three clients.

Why: a benchmark that silently stops measuring one client (or measures a broken stream fast) is
worse than none. This test checks structure and correctness only, never timings, so it cannot
flake on a busy machine; the timings themselves are the full run's business.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"
CLIENTS = ("sse", "gc", "adapter")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    """One quick run shared by the tests below (it starts and stops its own servers)."""
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"run.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads((out / "latest.json").read_text()), out, proc.stdout


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x >= 0


def test_every_stream_was_complete_and_correct(report: tuple[dict[str, Any], Path, str]) -> None:
    data, _, _ = report
    assert data["complete"], "no completeness checks were recorded"
    assert all(data["complete"].values()), [k for k, v in data["complete"].items() if not v]
    assert not [r for r in data["results"] if "error" in r]


def test_latency_for_all_three_clients(report: tuple[dict[str, Any], Path, str]) -> None:
    data, _, _ = report
    lat = data["figures"]["latency"]
    n = data["settings"]["latency_n"]
    for client in CLIENTS:
        assert lat[client]["complete"]
        assert len(lat[client]["samples_ms"]) == n * data["settings"]["latency_runs"]
        for q in ("p50_ms", "p90_ms", "p99_ms"):
            assert finite(lat[client][q])
    plain = data["figures"]["plain_latency"]
    if "skipped" in plain:
        assert plain["skipped"], "a skipped current-Gradio row must say why"
    else:
        for client in ("sse6", "gc6", "bridge"):
            assert plain[client]["complete"] and finite(plain[client]["p50_ms"])


def test_concurrency_figures(report: tuple[dict[str, Any], Path, str]) -> None:
    data, _, _ = report
    level = str(data["settings"]["levels"][0])
    for client in (*CLIENTS, "gcwait"):
        row = data["figures"]["concurrency"][client][level]
        assert row["complete"] == int(level)
        for key in ("cpu_s", "wall_s", "peak_rss_mb"):
            assert finite(row[key])
        assert row["peak_threads"] >= 1


def test_growth_turns_attachment_requests_imports(report: tuple[dict[str, Any], Path, str]) -> None:
    data, _, _ = report
    f = data["figures"]
    small, large = data["settings"]["growth_sizes"]
    for client in CLIENTS:
        g = f["growth"][client]
        assert g["complete"] and finite(g[f"cpu_{small}_s"]) and finite(g[f"cpu_{large}_s"])
        t = f["turns"][client]
        assert t["complete"] and t["turns"] == data["settings"]["turns"]
        assert finite(t["turn_1_cpu_s"]) and finite(t["turn_last_cpu_s"])
        a = f["attachment"][client]
        assert a["complete"] and a["bytes"] == data["settings"]["attach_bytes"] and finite(a["wall_s"])
    # Requests are counts, not timings: these are exact.
    join_and_stream = ["GET /queue/data"] * 2 + ["POST /queue/join"] * 2
    for client in ("sse", "adapter"):
        for turn in ("new conversation", "continued conversation"):
            detail = sorted(d for d in f["requests"][client][turn]["detail"] if not d.endswith("/app_id"))
            assert detail == join_and_stream
    # Every turn asks the Space once whether its app is still the one whose page this process holds
    # (a restarted Space may run another page; a continued conversation's history is gone then).
    for turn in ("new conversation", "continued conversation"):
        assert [d for d in f["requests"]["adapter"][turn]["detail"] if d.endswith("/app_id")] == ["GET /app_id"]
    assert any(d.endswith("/config") for d in f["requests"]["gc"]["new conversation"]["detail"])
    for module in ("gradio_client", "qwen_space_adapter"):
        assert finite(f["imports"][module]["median_ms"])


def test_load_generator_against_its_floor(report: tuple[dict[str, Any], Path, str]) -> None:
    data, _, stdout = report
    load = data["figures"]["load"]
    users, n = data["settings"]["load_users"], data["settings"]["load_n"]
    assert load["complete"] and len(load["rounds"]) == data["settings"]["load_rounds"]
    for entry in load["rounds"].values():
        for client in ("sse", "adapter", "load"):  # the same work delivered by all: every update of every answer
            assert entry[client]["updates_delivered"] == users * n and entry[client]["users"] == users
            assert finite(entry[client]["cpu_per_update_us"]) and not entry[client]["errors"]
    assert finite(load["ratio"]) and finite(load["adapter_ratio"]) and finite(load["generator_over_adapter"])
    assert any(t["target"].startswith(f"load generator, {users} users") for t in data["targets"])
    assert "client CPU per delivered update" in stdout


def test_outputs_written(report: tuple[dict[str, Any], Path, str]) -> None:
    data, out, stdout = report
    table = (out / "table.md").read_text()
    assert "| figure | raw SSE | raw gradio_client | adapter |" in table
    assert "| target | measured | limit | met |" in table
    assert "| figure | raw SSE |" in stdout
    names = {t["target"] for t in data["targets"]}
    assert any("latency p50" in n for n in names) and any("import" in n for n in names)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert any("matplotlib" in n for n in data["notes"])
    else:
        assert (out / "latency.png").stat().st_size > 0
        assert (out / "cpu_concurrency.png").stat().st_size > 0
