"""Driving the worker processes (`worker.py`, one client each) and the other measurements run in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .ratios import med
from .settings import HERE

WORKER = HERE / "worker.py"


def run_worker(specs: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    """Run one client's scenarios in a fresh process; errors come back as results, not crashes."""
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.run(
            [sys.executable, str(WORKER), json.dumps(specs)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            start_new_session=True,
        )
        out, err, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err, code = f"timed out after {timeout:.0f} s", -1
    results = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
    done = {r.get("key") for r in results}
    for spec in specs:
        if spec.get("key") not in done:
            tail = "\n".join(err.strip().splitlines()[-8:])
            results.append(
                {
                    "client": spec["client"],
                    "scenario": spec["scenario"],
                    "key": spec.get("key"),
                    "error": f"worker exit {code}: {tail}",
                }
            )
    return results


class Progress:
    """One stderr line per worker, so a long run shows where it is."""

    def __init__(self, start: float) -> None:
        self.start = start

    def __call__(self, label: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        bad = [r for r in results if "error" in r]
        note = f" ERROR: {bad[0]['error'][-300:]}" if bad else ""
        print(f"[{time.monotonic() - self.start:6.1f} s] {label}{note}", file=sys.stderr, flush=True)
        return results


def make_attachment(path: Path, size: int) -> None:
    """A UTF-8 text document of `size` bytes (lines of words, like a long report)."""
    line = "The quarterly report lists every shipment, its route and its weight in kilograms.\n"
    reps, rest = divmod(size, len(line))
    path.write_text(line * reps + "x" * rest, encoding="utf-8")


def import_costs(runs: int) -> dict[str, Any]:
    """Cumulative import time (`-X importtime`) of each package, fresh interpreter each time.

    The two packages alternate run by run, so that machine drift hits both alike.
    """
    modules = ("gradio_client", "qwen_space_adapter")
    values: dict[str, list[float]] = {m: [] for m in modules}
    for _ in range(runs):
        for module in modules:
            proc = subprocess.run(
                [sys.executable, "-X", "importtime", "-c", f"import {module}"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            for line in proc.stderr.splitlines():
                parts = [p.strip() for p in line.split("|")]
                if len(parts) == 3 and parts[2] == module:
                    values[module].append(int(parts[1]) / 1000.0)
    return {m: {"ms": v, "median_ms": med(v)} for m, v in values.items()}
