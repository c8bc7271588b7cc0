"""The end of a turn: its client's jobs cancelled, its reader over, its threads stopped, in the
background, and only then the conversation's next turn.

A turn is over only when everything it started is over: a job left running or queued would
answer into the session's history, and a reader left open would take the next turn's messages.
But the caller's deadline is the caller's: a Space that never answers the join must not hold
the caller while its request runs out. So the caller returns at once, and `end_turn` finishes
the turn on a daemon thread of its own; the session's gate (one turn at a time per session)
opens when it is done, so the next turn on the conversation waits for it, within its own
deadlines.

How a left job is ended, in this order, because of how Gradio's queue works:
1. wait (bounded) for every join and plain call in flight: the event id is needed, and a call
   still running on the Space must end before the next turn changes the same session;
2. cut the reader's connection: when a session's stream disconnects, Gradio drops the session's
   queued events and marks its running ones dead, so none of them sends anything again (a
   `/cancel` alone stops only a running task, and sends a completion of its own; the run's real
   end could later send a second one, which breaks the next turn's stream);
3. open and close a stream once more, for a session whose reader had already gone (the same
   clean-up, when there was no connection to cut);
4. ask the Space to cancel each event by id: a running generation stops now, not at its next
   update.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from . import _gc_internals as gci
from . import clients, workers
from .workers import Channel

READER_GRACE = 1.0  # seconds a turn waits for the Space to close its stream by itself (it does so at once)
READER_JOIN = 5.0  # seconds to wait for the reader thread once its connection is cut
CALL_GRACE = 10.0  # seconds to wait for a join or plain call still in flight
EXIT_GRACE = 3.0  # seconds the interpreter's exit waits for endings still running
DRAIN_QUIET = 0.2  # seconds of silence after which a drained stream holds nothing of a left event
DRAIN_STREAMS = 3  # streams opened at most to drain a session
DRAIN_LIMIT = 5.0  # seconds a drain may take in all

_RUNNING: set[Ending] = set()
_RUNNING_GUARD = threading.Lock()


class Ending:
    """One turn's ending, running on a daemon thread; `then` runs a callback when it is done."""

    def __init__(self, client: Any, jobs: list[Any]) -> None:
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        with _RUNNING_GUARD:
            _RUNNING.add(self)
        workers.spawn(self._run, client, list(jobs))

    def _run(self, client: Any, jobs: list[Any]) -> None:
        try:
            end_client(client, jobs)
        finally:
            with self._lock:
                self._done.set()
                callbacks, self._callbacks = self._callbacks, []
            with _RUNNING_GUARD:
                _RUNNING.discard(self)
            for callback in callbacks:
                callback()

    def done(self) -> bool:
        return self._done.is_set()

    def then(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the ending is over (at once if it is)."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback()

    async def wait(self) -> None:
        """Wait, cancellably, for the ending to be over."""
        channel = Channel()
        self.then(lambda: channel.put(None))
        await channel.drain()


def end_turn(client: Any, jobs: list[Any]) -> Ending | None:
    """Start ending a turn's client in the background; None when the turn opened no client."""
    if client is None:
        return None
    return Ending(client, jobs)


def end_client(client: Any, jobs: list[Any]) -> None:
    """End a turn's client (blocking, bounded): its left jobs, its reader, then its threads."""
    for job in jobs:
        _wait(gci.job_future(job), CALL_GRACE)
    for job in jobs:
        workers.run_bounded(job.cancel, CALL_GRACE)
    if not workers.run_bounded(_join_reader, READER_GRACE, client):
        workers.run_bounded(client.end_reader, READER_JOIN)
        workers.run_bounded(_join_reader, READER_JOIN, client)
    if jobs:
        workers.run_bounded(drain, DRAIN_LIMIT, client)
    clients.close_client(client, wait=False)


def drain(client: Any) -> None:
    """Take what a cancelled event left in the session's stream, then drop the session's events.

    A job cancelled while queued gets a completion from the cancel, and may still start before
    the Space drops it, and send a second one. Left in the session's stream, that second one
    breaks the next reader's stream (Gradio 4 fails removing an event it already removed). So:
    read the stream until it has been quiet for a moment (what comes is nobody's: the cancel's
    completion was read by the turn's reader), then disconnect while the Space waits for the
    next message: on that disconnect it drops the session's pending messages and events.
    A stream that the Space ends itself (after such a second completion) is opened again.
    """
    for _ in range(DRAIN_STREAMS):
        try:
            with httpx.stream(
                "GET",
                gci.stream_url(client),
                params={"session_hash": client.session_hash},
                **{**gci.request_kwargs(client), "timeout": httpx.Timeout(CALL_GRACE, read=DRAIN_QUIET)},
            ) as response:
                if response.status_code != 200:
                    return  # no such session any more: nothing is left to drop
                for _chunk in response.iter_bytes():
                    pass
        except httpx.ReadTimeout:
            return  # quiet: closing now drops what is left
        except httpx.HTTPError:
            return


def _join_reader(client: Any) -> None:
    """Wait for the client's reader to end. A reader not started yet still runs: after a cancel
    it reads the completion the cancel sends, which ends the session's stream cleanly."""
    gci.join_reader(client)


def _wait(future: concurrent.futures.Future[Any] | None, timeout: float) -> None:
    if future is None:
        return
    try:
        concurrent.futures.wait([future], timeout=timeout)
    except Exception:
        pass


def wait_all(timeout: float) -> bool:
    """Wait for every running ending (tests; the interpreter's exit); whether all ended."""
    deadline = time.monotonic() + timeout
    while True:
        with _RUNNING_GUARD:
            running = list(_RUNNING)
        if not running:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        running[0]._done.wait(left)


# A script interrupted with Ctrl-C exits right after the turn: its ending still cancels the job
# on the Space, within a bound.
atexit.register(wait_all, EXIT_GRACE)
