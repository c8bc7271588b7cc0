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
