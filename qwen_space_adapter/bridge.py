"""The bridge from a gradio_client job (threads) to an anyio async iterator (one task).

gradio_client runs a job on its own threads and offers two ways to follow it: iterating the Job
(busy-polls every 1 ms) and `Job.__aiter__` (an asyncio queue filled unsafely from threads,
woken by 0.5 s timeouts). Neither fits an async caller, so the bridge does this instead:

- gradio_client's reader thread hands every raw server message to `Channel.put` (through the
  tap in `_gc_internals`), which wakes the waiting task with the event loop's own thread-safe
  call (`call_soon_threadsafe` / `TrioToken.run_sync_soon`): no polling, no quantum.
- The task drains everything pending at once, applies each diff in place and yields every
  update, so a placeholder shown for a single update still reaches the caller.
- The job's future reports its end through the same channel (`add_done_callback`), so errors
  raised on gradio_client's threads arrive without polling either.
- Leaving early (break, aclose, cancellation, timeout) hands the job to the turn's ending
  (`ending.py`), which cancels it on the Space in the background.

Where the tap is unavailable (gradio_client internals changed), `follow_job_public` follows the
job with its public `status()` / `outputs()` at a short interval: correct, slower.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import sniffio

from . import _gc_internals as gci
from . import workers
from .deltas import apply_diff
from .errors import ConversationInUseError, QwenSpaceError, StreamInterruptedError
from .failures import app_error, translate
from .page import as_wire

CANCEL_GRACE = 10.0  # seconds to wait, shielded, for a cancelled job's threads to end


class Channel:
    """A thread-to-task queue: `put` from any thread, `drain` from one anyio task."""

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._event: anyio.Event | None = None
        if sniffio.current_async_library() == "trio":
            import trio

            self._soon: Callable[[Callable[[], Any]], Any] = (
                trio.lowlevel.current_trio_token().run_sync_soon
            )
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

    workers.spawn(run)
    ok, value = (await channel.drain())[0]
    if not ok:
        raise value
    return value


@dataclass(frozen=True)
class Queued:
    position: int | None
    queue_size: int | None
    eta: float | None


@dataclass(frozen=True)
class Output:
    """The job's outputs after an update. The list is shared and updated in place: read, don't keep."""

    data: list[Any]


@dataclass(frozen=True)
class Completed:
    data: list[Any]


JobEvent = Queued | Output | Completed


class JobFollower:
    """Follows one submitted job and yields `Queued`, `Output` and `Completed` events."""

    def __init__(
        self, url: str, diffs: bool, skipped: tuple[bool, ...], bases: list[list[Any]] | None = None,
        accept: Callable[[list[Any]], bool] | None = None, own: set[str] | None = None,
    ) -> None:
        self.url = url
        self.skipped = skipped  # per output: does gradio_client leave it out of a result
        self.diffs = diffs  # sse_v2+ sends diffs after the first generating message
        self.bases = bases or []  # last outputs of this session's unfinished streams, newest first
        self.accept = accept or (lambda outputs: True)  # does a rebased value belong to this job
        self.channel = Channel()
        self.event_id: str | None = None
        self.finished = False
        self.succeeded = False
        self.lost = False  # the updates cannot be followed: only the final result counts
        self.current: list[Any] | None = None
        self._early: dict[str, list[Any]] = {}
        self.own = own if own is not None else set()  # the session's events this process joined

    # Called from gradio_client's threads.
    def sink(self, event_id: str, msg: Any) -> None:
        self.channel.put(("msg", event_id, msg))

    def on_register(self, event_id: str) -> None:
        self.channel.put(("registered", event_id, None))

    def on_done(self, future: Any) -> None:
        self.channel.put(("done", None, future))

    async def events(self) -> AsyncGenerator[JobEvent, None]:
        """The job's events until it completes; raises a `QwenSpaceError` if it fails.

        Every update is yielded, also when several arrived together: a placeholder shown for
        one update only (the Space's "thinking" text) must still reach the caller.
        """
        while True:
            for kind, event_id, payload in await self.channel.drain():
                msgs: list[dict[str, Any]] = []
                if kind == "registered" and self.event_id is None:
                    self.event_id = event_id
                    self.own.add(event_id)
                    msgs = self._early.pop(event_id, [])
                    for other, early in self._early.items():
                        self._check_foreign(other, early)
                elif kind == "msg" and self.event_id is not None and event_id != self.event_id:
                    self._check_foreign(event_id, [payload])
                elif kind == "msg" and self.event_id is None:
                    self._early.setdefault(event_id, []).append(payload)
                elif kind == "msg" and event_id == self.event_id:
                    msgs = [payload]
                elif kind == "done" and not self.finished:
                    # The job ended without a completed message reaching us: its error (or its
                    # result, had the tap missed the messages) is on the future.
                    yield self._from_future(payload)
                    return
                for msg in msgs:
                    event = self._handle(msg)
                    if event is None:
                        yield Output(self.current or [])
                    elif event is not _IGNORED:
                        yield event  # type: ignore[misc]
                        if isinstance(event, Completed):
                            return

    def _check_foreign(self, event_id: str, msgs: list[Any]) -> None:
        """A live event of this session that this process never joined: another client is
        using the same session now, and the Space hands each message to whichever reads first."""
        if event_id in self.own or event_id == PLAIN_EVENT:
            return
        if any(isinstance(m, dict) and m.get("msg") in _LIVE for m in msgs):
            self.finished = True
            raise ConversationInUseError(
                "This conversation's session on the Space is in use by another client right now "
                "(another process or machine with a copy of the conversation): the Space sends a "
                "session's messages to whichever client reads first, so neither answer can be "
                "trusted. Use a conversation in one place at a time, or start a new one."
            )

    def _from_future(self, future: Any) -> Completed:
        self.finished = True
        exc = future.exception()
        if exc is not None:
            raise translate(exc, self.url)
        return Completed(as_wire(future.result(), self.skipped))

    def _handle(self, msg: dict[str, Any]) -> JobEvent | object | None:
        """Apply one server message; None means the outputs changed."""
        kind = msg.get("msg")
        if kind == "process_generating":
            data = msg.get("output", {}).get("data", [])
            if self.lost:
                return _IGNORED
            if self.current is None and self.diffs and any(is_diff(d) for d in data):
                self.current = self._rebase(data)
                if self.current is None:
                    self.lost = True
                    return _IGNORED
            elif self.current is None or not self.diffs:
                self.current = list(data)
            else:
                for i, diff in enumerate(data):
                    while i >= len(self.current):
                        self.current.append(None)
                    self.current[i] = apply_diff(self.current[i], diff)
            return None
        if kind == "estimation":
            return Queued(msg.get("rank"), msg.get("queue_size"), msg.get("rank_eta"))
        if kind == "process_completed":
            self.finished = True
            output = msg.get("output") or {}
            if not msg.get("success", True) or "error" in output:
                raise app_error(output.get("error"))
            self.succeeded = True
            return Completed(list(output.get("data", [])))
        if kind == gci.READER_ENDED:
            self.finished = True
            if isinstance(msg.get("error"), StreamInterruptedError):  # the adapter ended it (issue 19)
                raise msg["error"]
            raise StreamInterruptedError(
                f"The connection to the Space at {self.url} ended before the step was complete "
                "(the Space restarted or the network dropped). Retry the request."
            )
        if msg.get("message") == "Server stopped unexpectedly.":
            self.finished = True
            raise StreamInterruptedError(
                f"The Space at {self.url} stopped while answering. Retry the request."
            )
        return _IGNORED


    def _rebase(self, data: list[Any]) -> list[Any] | None:
        """The outputs after a first update that is a diff, or None if no base fits.

        Gradio 4 keys its diff streams by the id() of the generator, and never drops the stream
        of a generator that failed or was cancelled: a later generator of the same session that
        gets the same id() has its first update sent as a diff against that stale stream. The
        stale value is the last one this session saw of an unfinished stream, so try those.
        """
        for base in self.bases:
            current = copy.deepcopy(base)
            try:
                for i, diff in enumerate(data):
                    while i >= len(current):
                        current.append(None)
                    current[i] = apply_diff(current[i], diff) if is_diff(diff) else diff
            except (IndexError, KeyError, TypeError, ValueError, QwenSpaceError):
                continue
            if self.accept(current):
                return current
        return None


_IGNORED = object()
_LIVE = frozenset({"process_starts", "process_generating"})  # messages of an event that runs now

DIFF_ACTIONS = frozenset({"replace", "append", "add", "delete"})


def is_diff(value: Any) -> bool:
    """Whether an output value is a list of Gradio diff operations rather than a value."""
    return (
        isinstance(value, list) and bool(value)
        and all(
            isinstance(op, list) and len(op) == 3 and op[0] in DIFF_ACTIONS and isinstance(op[1], list)
            for op in value
        )
    )


class DirectJob:
    """A step put on the Space's queue with `gci.join` and followed through the tap alone.

    Its only thread is the one that joins the queue (a POST); messages, completion and errors
    reach the follower through the tap, a failed join through `follower.on_done`.
    """

    def __init__(
        self, client: Any, follower: JobFollower, fn_index: int, data: list[Any], event: dict[str, Any] | None
    ) -> None:
        self.client = client
        self.fn_index = fn_index
        self.future: concurrent.futures.Future[str] = concurrent.futures.Future()

        def join() -> None:
            try:
                self.future.set_result(gci.join(client, fn_index, data, event))
            except BaseException as exc:  # handed to the follower
                self.future.set_exception(exc)
                follower.on_done(self.future)

        workers.spawn(join)

    def cancel(self) -> None:
        """Stop the event on the Space once its id is known (a cancel without it stops nothing)."""
        try:
            event_id = self.future.result(timeout=CANCEL_GRACE)
        except Exception:
            return
        gci.cancel(self.client, self.fn_index, event_id)


PLAIN_EVENT = "qwen_space_adapter:plain-call"  # the follower's event id for an unqueued step


class PlainJob:
    """An unqueued step called as the page calls it: one POST, its answer the step's result.

    The answer reaches the follower as the completed message the queue would have sent, a
    failed request through `follower.on_done`. There is nothing to cancel on the Space: an
    unqueued call runs to its end (a generator to its first yield) whatever the client does.
    """

    def __init__(
        self, client: Any, follower: JobFollower, fn_index: int, data: list[Any], event: dict[str, Any] | None
    ) -> None:
        self.client = client
        self.fn_index = fn_index
        self.future: concurrent.futures.Future[None] = concurrent.futures.Future()

        def call() -> None:
            try:
                message = gci.predict(client, fn_index, data, event)
            except BaseException as exc:  # handed to the follower
                self.future.set_exception(exc)
                follower.on_done(self.future)
                return
            self.future.set_result(None)
            follower.on_register(PLAIN_EVENT)
            follower.sink(PLAIN_EVENT, message)

        workers.spawn(call)

    def cancel(self) -> None:
        """Nothing to stop: the Space runs an unqueued call to its end."""


def submit(
    client: Any, follower: JobFollower, fn_index: int, data: list[Any], args: list[Any],
    event: dict[str, Any] | None = None, *, queued: bool = True, tapped: bool = False,
) -> Any:
    """Submit a step whose end (result or error) reaches `follower` through its channel.

    `data` is every input slot as the page sends it, `args` the same without state slots (what
    `Client.submit` takes). An unqueued step is a plain call (`PlainJob`), as the page makes it.
    With the tap, a queued step joins the queue directly (`DirectJob`): no per-job polling
    threads. Otherwise `Client.submit` (it only queues the work on gradio_client's executor).
    """
    if not queued:
        return PlainJob(client, follower, fn_index, data, event)
    if tapped and gci.join_supported():
        return DirectJob(client, follower, fn_index, data, event)
    job = client.submit(*args, fn_index=fn_index)
    job.add_done_callback(follower.on_done)
    return job


class Router:
    """The tap of one client, handing its messages to whichever job is being followed now."""

    def __init__(self) -> None:
        self.follower: JobFollower | None = None

    def sink(self, event_id: str, msg: Any) -> None:
        follower = self.follower
        if follower is not None:
            follower.sink(event_id, msg)

    def on_register(self, event_id: str) -> None:
        follower = self.follower
        if follower is not None:
            follower.on_register(event_id)


def install_tap(client: Any) -> Router | None:
    """Tap `client` once; None when gradio_client's internals changed (use the public API)."""
    if not gci.tap_supported():
        return None
    router = Router()
    gci.tap(client, router.sink, router.on_register)
    return router


async def follow_job_public(
    job: Any, skipped: tuple[bool, ...], url: str, poll: float = 0.02
) -> AsyncGenerator[JobEvent, None]:
    """Follow a job with gradio_client's public API only: the fallback when the tap cannot work."""
    from gradio_client.utils import Status

    seen = 0
    while True:
        status = job.status()
        outputs = job.outputs()
        if status.code == Status.IN_QUEUE:
            yield Queued(status.rank, status.queue_size, status.eta)
        if len(outputs) > seen and not job.done():
            seen = len(outputs)
            yield Output(as_wire(outputs[-1], skipped))
        if job.done():
            exc = job.exception()
            if exc is not None:
                raise translate(exc, url)
            yield Completed(as_wire(job.result(), skipped))
            return
        await anyio.sleep(poll)


__all__ = ["Channel", "Completed", "JobFollower", "Output", "Queued", "Router", "install_tap", "submit"]
