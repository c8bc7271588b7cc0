"""The code stays lint-clean and type-checks: the same commands a contributor runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    r = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "qwen_space_adapter", "tests", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format_is_applied():
    r = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, "run `ruff format .`:\n" + r.stdout + r.stderr


def test_mypy_is_clean():
    # Its incremental cache beside the replica environments, so a fresh clone on a warm machine checks
    # in seconds, not 20: mypy re-reads every file whose hash changed, so a stale cache cannot hide an error.
    from qwen_space_adapter.replica.env import cache_root

    cache = cache_root() / "mypy" / f"{sys.version_info[0]}.{sys.version_info[1]}"
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(cache), "qwen_space_adapter"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
