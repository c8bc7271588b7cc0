"""The harness imports without gradio_client, but for the recorder that drives a Space with it.

Why: reading a report offline (a check's JSON, a load run's JSON or PNG), computing percentiles or
planning a load needs no Space and so no gradio_client; only `harness.record` drives one with it.
Each module is imported in a fresh interpreter in which gradio_client cannot be imported at all,
so an import of it anywhere on the way (the package's `__init__` included) fails the test.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import qwen_space_adapter.harness as harness

ROOT = Path(__file__).resolve().parents[1]
NEEDS_GRADIO_CLIENT = {"qwen_space_adapter.harness.record"}  # it records a Space through gradio_client

# gradio_client made unimportable, as if it were not installed; then the module, then the check.
PROBE = """
import importlib, sys

class NoGradioClient:
    def find_spec(self, name, path=None, target=None):
        if name == "gradio_client" or name.startswith("gradio_client."):
            raise ModuleNotFoundError("No module named 'gradio_client' (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, NoGradioClient())
importlib.import_module(sys.argv[1])
assert "gradio_client" not in sys.modules
"""


def harness_modules() -> list[str]:
    names = [harness.__name__]
    names += [m.name for m in pkgutil.walk_packages(harness.__path__, harness.__name__ + ".")]
    return sorted(n for n in names if n not in NEEDS_GRADIO_CLIENT)


def test_the_list_covers_the_load_package_and_the_reports() -> None:
    modules = harness_modules()
    for name in ("report", "metrics", "load", "load.report", "load.runner", "checks", "cli"):
        assert f"qwen_space_adapter.harness.{name}" in modules


@pytest.mark.parametrize("module", harness_modules())
def test_imports_without_gradio_client(module: str) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_recorders_names_still_come_from_the_package() -> None:
    from qwen_space_adapter.harness import DEFAULT_PROMPTS, record, record_transcript, save_transcript

    assert record_transcript is record.record_transcript and save_transcript is record.save_transcript
    assert DEFAULT_PROMPTS is record.DEFAULT_PROMPTS
    with pytest.raises(AttributeError):
        harness.no_such_name  # noqa: B018
