"""Daemon worker threads, reused: a blocking call handed off from the event loop costs a queue
put, not a thread start.

Why not a new thread per call: `Thread.start()` returns only once the new thread runs, which
needs the interpreter lock; with a hundred conversations' readers busy, that wait stalled the
caller's event loop for up to a second per step. Why not `concurrent.futures`: its workers are
not daemons, so a call abandoned on cancellation (a request to a Space that never answers)
would hold the interpreter's exit until its own deadline. Idle workers end after `IDLE` seconds.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

WORKER_NAME = "qwen-space worker"
IDLE = 10.0  # seconds an idle worker waits for work before it ends

_tasks: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.SimpleQueue()
_lock = threading.Lock()
_idle = 0  # workers waiting for a task, not yet promised one
_busy = 0  # workers running a task


def busy() -> int:
    """How many workers run a task now (idle ones are a cache, not a leak: tests count these)."""
    return _busy


def spawn(fn: Callable[..., Any], *args: Any) -> None:
    """Run `fn(*args)` on a daemon worker; it must handle its own exceptions (they are dropped)."""
    global _idle
    with _lock:
        reuse = _idle > 0
        if reuse:
            _idle -= 1  # an idle worker is promised to this task
            _tasks.put((fn, args))
    if not reuse:
        threading.Thread(target=_work, args=(fn, args), name=WORKER_NAME, daemon=True).start()


def _work(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    global _idle
    while True:
        try:
            fn(*args)
        except BaseException:
            pass
        with _lock:
            _idle += 1
        while True:
            try:
                fn, args = _tasks.get(timeout=IDLE)
                break
            except queue.Empty:
                with _lock:
                    if _tasks.empty():  # no task was promised to this worker: it may end
                        _idle -= 1
                        return


def run_bounded(fn: Callable[..., Any], timeout: float, *args: Any) -> bool:
    """Run a blocking call on a worker for at most `timeout` seconds; whether it ended in time.
    Never raises: what it raised is dropped (clean-up steps that must not stop the others)."""
    done = threading.Event()

    def run() -> None:
        try:
            fn(*args)
        finally:
            done.set()

    spawn(run)
    return done.wait(timeout)
