"""The adapter's thread primitives: daemon worker threads, reused, and the channel that hands
their results to the caller's task.

A blocking call handed off from the event loop costs a queue put, never a thread start.

Why not a new thread per call: `Thread.start()` returns only once the new thread runs, which
needs the interpreter lock; with a hundred conversations' readers busy, that wait stalled the
caller's event loop for up to a second per step. So the caller's thread never starts one: with
no idle worker, the task goes to the starter, one daemon thread that starts workers, and a
worker that falls idle takes a task still waiting there first. Why not `concurrent.futures`: its
workers are not daemons, so a call abandoned on cancellation (a request to a Space that never
answers) would hold the interpreter's exit until its own deadline. Idle workers end after
`IDLE` seconds; the starter lives as long as the process.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import sniffio

WORKER_NAME = "qwen-space worker"  # the starter's name begins with it too: tests see both as a cache
STARTER_NAME = f"{WORKER_NAME} starter"
IDLE = 10.0  # seconds an idle worker waits for work before it ends

Task = tuple[Callable[..., Any], tuple[Any, ...]]
_tasks: queue.SimpleQueue[Task] = queue.SimpleQueue()  # tasks promised to idle workers
_unstarted: queue.SimpleQueue[Task] = queue.SimpleQueue()  # tasks waiting for a worker to start
_lock = threading.Lock()
_starter: threading.Thread | None = None
_idle = 0  # workers waiting for a task, not yet promised one
_busy = 0  # tasks handed to `spawn` and not yet ended


def busy() -> int:
    """How many tasks run or wait for a worker now (idle workers are a cache, not a leak: tests
    count these)."""
    return _busy


def spawn(fn: Callable[..., Any], *args: Any) -> None:
    """Run `fn(*args)` on a daemon worker; it must handle its own exceptions (they are dropped)."""
    global _idle, _starter, _busy
    with _lock:
        _busy += 1
        if _idle > 0:
            _idle -= 1  # an idle worker is promised to this task
            _tasks.put((fn, args))
            return
        _unstarted.put((fn, args))
        starter = _starter
        # After a fork the starter is gone (the child has only the forking thread).
        if starter is None or not starter.is_alive():
            starter = _starter = threading.Thread(target=_start_workers, name=STARTER_NAME, daemon=True)
        else:
            return
    starter.start()  # once per process, before any worker exists


def _start_workers() -> None:
    global _busy
    while True:
        task = _unstarted.get()
        try:
            threading.Thread(target=_work, args=task, name=WORKER_NAME, daemon=True).start()
        except RuntimeError:  # no thread to be had (a process limit): run it here, slower, never lost
            fn, args = task
            try:
                fn(*args)
            except BaseException:
                pass
            finally:
                with _lock:
                    _busy -= 1


def _work(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    global _idle, _busy
    while True:
        try:
            fn(*args)
        except BaseException:
            pass
        finally:
            with _lock:
                _busy -= 1
        try:  # a task still waiting for a worker to start is this one's now
            fn, args = _unstarted.get_nowait()
            continue
        except queue.Empty:
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


# --- between threads and the caller's task ---------------------------------------------------


class Channel:
    """A thread-to-task queue: `put` from any thread, `drain` from one anyio task."""

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._event: anyio.Event | None = None
        if sniffio.current_async_library() == "trio":
            import trio

            self._soon: Callable[[Callable[[], Any]], Any] = trio.lowlevel.current_trio_token().run_sync_soon
        else:
            self._soon = asyncio.get_running_loop().call_soon_threadsafe

    def put(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)
            event, self._event = self._event, None
        if event is not None:
            try:
                self._soon(event.set)
            except Exception:  # the loop has closed: nobody is waiting any more
                pass

    async def drain(self) -> list[Any]:
        """Everything pending, waiting for at least one item."""
        while True:
            with self._lock:
                if self._items:
                    items = list(self._items)
                    self._items.clear()
                    return items
                event = self._event = anyio.Event()
            await event.wait()


async def in_daemon_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking call on a daemon thread of its own and wait for it, cancellably.

    anyio's worker threads are not daemons: a call abandoned on cancellation (a request to a
    Space that never answers) would hold the interpreter's exit until its own timeout. Here a
    cancelled caller leaves the thread to end by itself, and exiting never waits for it.
    """
    channel = Channel()

    def run() -> None:
        try:
            outcome: tuple[bool, Any] = (True, fn(*args))
        except BaseException as exc:  # handed to the caller
            outcome = (False, exc)
        channel.put(outcome)

    spawn(run)
    ok, value = (await channel.drain())[0]
    if not ok:
        raise value
    return value
