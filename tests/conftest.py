from __future__ import annotations

import threading

import pytest
from threadcount import CACHED_THREADS


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
    while True:
        extra = [
            t for t in threading.enumerate()
            if t.ident not in before and t.is_alive() and not t.name.startswith(CACHED_THREADS)
        ]
        if not extra or time.monotonic() > deadline:
            break
        for t in extra:
            t.join(timeout=0.2)
    assert not extra, f"threads left running: {[t.name for t in extra]}"
