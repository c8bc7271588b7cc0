"""The pytest plugin from a separate project: the docs' example file, with and without a target.

The test file is taken from the "The pytest plugin in your own tests" section of the harness guide
(docs/guide/harness.md), so the documented example is the one that runs (a sync test and an async one
with `@pytest.mark.anyio`).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "harness.md"


def readme_example() -> str:
    section = GUIDE.read_text().split("## The pytest plugin in your own tests", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run_pytest(project: Path, *args: str) -> subprocess.CompletedProcess:
    (project / "test_space.py").write_text(readme_example())
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_readme_example_passes_against_a_replica(qwen_replica, tmp_path):
    r = run_pytest(tmp_path, f"--qwen-space={qwen_replica.url}")
    assert r.returncode == 0 and " passed" in r.stdout, r.stdout + r.stderr
    assert "skipped" not in r.stdout and "failed" not in r.stdout


def test_without_a_target_live_tests_are_skipped(tmp_path):
    r = run_pytest(tmp_path)
    assert r.returncode == 0 and " skipped" in r.stdout and "passed" not in r.stdout, r.stdout + r.stderr
    assert "no --qwen-space target given" in r.stdout


def test_an_explicit_target_that_cannot_be_reached_fails_the_run(tmp_path):
    r = run_pytest(tmp_path, "--qwen-space=http://127.0.0.1:9")
    assert r.returncode == 1, r.stdout + r.stderr
    assert " errors" in r.stdout and "skipped" not in r.stdout and "passed" not in r.stdout
    assert "--qwen-space=http://127.0.0.1:9 was given but cannot be used: cannot reach http://127.0.0.1:9" in r.stdout
