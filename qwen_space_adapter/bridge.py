"""Submission: a step sent as the page sends it, its job followed from an anyio task.

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
job with its public `status()` / `outputs()` at a short interval: correct, slower. What the
messages mean is `protocol.py` (`JobFollower`); the hand-off between threads, `workers.py`.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import AsyncGenerator
from typing import Any

import anyio

from . import _gc_internals as gci
from . import workers
from .failures import translate
from .page import as_wire
from .protocol import PLAIN_EVENT, Completed, JobEvent, JobFollower, Output, Queued

CANCEL_GRACE = 10.0  # seconds to wait, shielded, for a cancelled job's threads to end


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
                event_id = gci.join(client, fn_index, data, event)
                # This process's event, whoever follows it now: a turn stopped before its join
                # returned no longer hears the tap's registration, yet the event may still run,
                # and its messages then reach the session's next reader. Known as ours, they are
                # ignored there instead of taken for another client's (`ConversationInUseError`).
                follower.own.add(event_id)
                self.future.set_result(event_id)
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
    client: Any,
    follower: JobFollower,
    fn_index: int,
    data: list[Any],
    args: list[Any],
    event: dict[str, Any] | None = None,
    *,
    queued: bool = True,
    tapped: bool = False,
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


__all__ = ["DirectJob", "PlainJob", "Router", "follow_job_public", "install_tap", "submit"]
