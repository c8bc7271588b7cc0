"""The synchronous twins of the async API, for scripts and notebooks.

Each call runs the async stream on an event loop of its own, in a helper thread (an anyio
blocking portal), and hands items back one by one. That works the same outside any event loop
and inside a running one (Jupyter, an async web framework), with no `nest_asyncio` patching of
the caller's loop. Leaving the loop early closes the stream, which cancels the job on the Space.

Ctrl-C (or Jupyter's stop button, which sends SIGINT to the kernel) raises `KeyboardInterrupt`
in the caller's thread while the helper thread is in the middle of fetching the next item. The
stream cannot be closed while that fetch runs (`aclose(): asynchronous generator is already
running`), so the fetch is cancelled first; its cancellation runs the stream's own cleanup,
which cancels the job on the Space. Then the caller gets its `KeyboardInterrupt`, and the
helper thread is gone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

CANCEL_WAIT = 15.0
"""Seconds a cancelled fetch may take to unwind, at most. It unwinds at once in practice: what a
stopped turn still has to do on the Space (cancel, end the reader, drain) is its ending's work, in
the background (`ending.py`); this bound only keeps a broken unwind from holding the caller."""


def iterate(factory: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
    """Iterate `factory(*args, **kwargs)` (which returns an async iterator) synchronously.

    The factory is called here, in the caller's thread, so bad input raises at the call, before
    any thread or request exists.
    """
    return _drive(factory(*args, **kwargs))


async def _fetch(stream: Any, finished: threading.Event) -> Any:
    try:
        return await stream.__anext__()
    finally:
        finished.set()  # also after a cancellation: the stream's cleanup has run by now


def _next(portal: BlockingPortal, stream: Any) -> Any:
    """The stream's next item, fetched on the portal's loop; cancelled there if we are interrupted."""
    finished = threading.Event()
    future = portal.start_task_soon(_fetch, stream, finished)
    try:
        return future.result()
    except BaseException:
        if not future.done():
            # Interrupted while waiting (KeyboardInterrupt, or SystemExit from a signal handler):
            # cancel the fetch in the helper thread and let its cleanup finish, bounded. The
            # future reports "cancelled" at once, so the fetch's own end is what we wait for.
            future.cancel()
            finished.wait(CANCEL_WAIT)
        raise


def _drive(stream: Any) -> Iterator[Any]:
    with start_blocking_portal() as portal:
        failing = False
        try:
            while True:
                try:
                    item = _next(portal, stream)
                except StopAsyncIteration:
                    return
                yield item
        except BaseException:
            failing = True
            raise
        finally:
            # After a cancelled fetch the stream has already run its cleanup and this is a no-op.
            try:
                portal.call(stream.aclose)
            except RuntimeError:
                # Still running: a second Ctrl-C cut the wait short. The portal's exit cancels
                # it; raising this instead would hide the KeyboardInterrupt being propagated.
                if not failing:
                    raise
