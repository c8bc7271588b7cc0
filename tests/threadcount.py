"""Counting the threads a test leaves behind, the same way in every test that does."""

from __future__ import annotations

import threading
import time

from qwen_space_adapter import workers

# trio and anyio keep idle worker threads cached for a while by design: not leaks.
CACHED_THREADS = ("Trio thread", "AnyIO worker thread")


def thread_count() -> int:
    """Threads that do something: the adapter's idle workers are a cache (they end after a few
    seconds idle), its busy ones count."""
    idle_cache = (*CACHED_THREADS, workers.WORKER_NAME)
    return sum(1 for t in threading.enumerate() if not t.name.startswith(idle_cache)) + workers.busy()


def settle_threads(baseline: int, within: float = 15.0) -> int:
    """The thread count once it is back at `baseline`, or after `within` seconds (a bound,
    not a synchronisation: threads that end by themselves are joined as they do)."""
    deadline = time.monotonic() + within
    while thread_count() > baseline and time.monotonic() < deadline:
        for t in threading.enumerate():
            if not t.name.startswith((*CACHED_THREADS, workers.WORKER_NAME)) and t is not threading.current_thread():
                t.join(timeout=0.1)
        time.sleep(0.02)  # busy workers end by themselves: poll them within the bound
    return thread_count()
