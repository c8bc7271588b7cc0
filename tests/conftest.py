from __future__ import annotations

import signal
import threading

import pytest
from threadcount import CACHED_THREADS

from qwen_space_adapter import workers

# A suite started in the background (`.ci/run &`, nohup, a runner without job control) inherits
# SIGINT ignored, and an ignored signal stays ignored across exec: every CLI, script and kernel the
# tests start would ignore the Ctrl-C they are sent, and the tests of Ctrl-C fail for nothing.
# A handled signal is reset to its default on exec, so handling it here gives them Ctrl-C back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# The suite's schedule on pytest-xdist's workers (`-n 2 --dist loadgroup`, pyproject.toml): each file is
# one unit, so its module fixtures run once; the files that share the real UIs' replicas (qwen_shared_replica,
# 6 to 12 s to start each) are one unit, so every flavor starts on one worker only; the longest units go first,
# so the two workers end together. `-n 0` runs the same order in one process.
SHARED_FLAVORS = (
    "test_browser_equivalence.py",
    "test_real_ui.py",
    "test_replica_real_ui.py",
    "test_stop_anywhere.py",
    "test_stream_close.py",
    "test_replica_gradio6.py",
)
LONGEST_FIRST = (
    *SHARED_FLAVORS,
    "test_turns.py",
    "test_reliability.py",
    "test_replica_lifecycle.py",
    "test_harness.py",
    "test_benchmark_smoke.py",
    "test_replica.py",
    "test_serve.py",
)


def unit_of(item: pytest.Item) -> str:
    name = item.path.name
    return "shared-flavors" if name in SHARED_FLAVORS else name


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file keeps its order
    for item in items:
        item.add_marker(pytest.mark.xdist_group(unit_of(item)))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def say(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def no_thread_leak():
    """Fail a test that leaves threads running once it is done (bounded wait for them to end)."""
    before = {t.ident for t in threading.enumerate()}
    yield
    import time

    deadline = time.monotonic() + 10
    idle_cache = (*CACHED_THREADS, workers.WORKER_NAME)  # the adapter's idle workers are a cache
    while True:
        extra = [
            t
            for t in threading.enumerate()
            if t.ident not in before and t.is_alive() and not t.name.startswith(idle_cache)
        ]
        if (not extra and not workers.busy()) or time.monotonic() > deadline:
            break
        for t in extra:
            t.join(timeout=0.2)
        time.sleep(0.02)
    assert not extra, f"threads left running: {[t.name for t in extra]}"
    assert not workers.busy(), f"{workers.busy()} of the adapter's workers still run a call"
