"""The adapter's turns on an event loop of their own, so the server's loop only serves HTTP.

Starting a turn costs the adapter tens of milliseconds of CPU on its event loop (building a
gradio_client from the cached config, starting its threads); with hundreds of streams starting
together, that would stall every other stream's next frame, new connections and disconnect checks
on the server's loop. So each turn runs on `AdapterLoop` (an asyncio loop on a daemon thread) and its
items cross to the server's loop through `_Channel`: a deque under a lock, with at most one wake-up
of the consumer scheduled at a time, so a burst of deltas (the Space sends in 50 ms batches) costs one
cross-thread call, not one per delta.

Leaving the consumer early (a client that disconnects, Ctrl-C) cancels the turn's task on the
adapter loop and waits, shielded and bounded, until it is over: the adapter's own cleanup is what
cancels the job on the Space, and no task may outlive its request.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
from collections.abc import AsyncGenerator, Callable
from typing import Any

import anyio

CLEANUP_TIMEOUT = 30.0  # the adapter's own bound for cancelling on the Space is shorter


class _Channel:
    """Items from the adapter loop to one consumer on the server loop."""

    def __init__(self, home: asyncio.AbstractEventLoop) -> None:
        self.home = home
        self.lock = threading.Lock()
        self.items: collections.deque[Any] = collections.deque()
        self.finished = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.scheduled = False

    # producer side (the adapter loop's thread)
    def put(self, item: Any) -> None:
        with self.lock:
            self.items.append(item)
            wake = not self.scheduled
            self.scheduled = True
        if wake:
            self.home.call_soon_threadsafe(self._wake)

    def finish(self, error: BaseException | None) -> None:
        with self.lock:
            self.finished, self.error = True, error
            wake = not self.scheduled
            self.scheduled = True
        if wake:
            self.home.call_soon_threadsafe(self._wake)

    # consumer side (the server loop)
    def _wake(self) -> None:
        with self.lock:
            self.scheduled = False
            waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get_batch(self) -> tuple[list[Any], bool]:
        """The items so far and whether the stream is over; waits when there is nothing yet."""
        while True:
            with self.lock:
                if self.items or self.finished:
                    batch = list(self.items)
                    self.items.clear()
                    return batch, self.finished and not batch
                self.waiter = self.home.create_future()
                waiter = self.waiter
            await waiter


class AdapterLoop:
    """An asyncio loop on a daemon thread that runs the adapter's turns."""

    def __init__(self, name: str = "qwen-serve-adapter") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def tasks(self) -> int:
        """Tasks on the adapter loop now (tests check that none outlives its request)."""

        async def count() -> int:
            return len(asyncio.all_tasks()) - 1

        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(10)

    def close(self, timeout: float = 10.0) -> None:
        """Cancel what still runs, stop the loop, and join its thread."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=timeout) if tasks else None

        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout + 1)
            except (concurrent.futures.TimeoutError, RuntimeError):
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()

    async def batches(self, make: Callable[[], AsyncGenerator[Any, None]]) -> AsyncGenerator[list[Any], None]:
        """Run the async generator `make()` on this loop; yield its items, in the batches they arrived
        in, on the caller's loop (a burst of deltas becomes one write to the client)."""
        channel = _Channel(asyncio.get_running_loop())

        ended: concurrent.futures.Future[None] = concurrent.futures.Future()  # set when pump() is over
        state: dict[str, Any] = {"task": None, "cancelled": False}  # touched on the adapter loop only

        async def pump() -> None:
            try:
                if state["cancelled"]:
                    return
                state["task"] = asyncio.current_task()
                try:
                    stream = make()
                except Exception as e:  # refused at the call: nothing was sent
                    channel.finish(e)
                    return
                try:
                    async for item in stream:
                        channel.put(item)
                except BaseException as e:
                    channel.finish(e)
                    if not isinstance(e, Exception):
                        raise
                    return
                finally:
                    await stream.aclose()
                channel.finish(None)
            finally:
                ended.set_result(None)

        def cancel() -> None:
            state["cancelled"] = True
            if state["task"] is not None:
                state["task"].cancel()

        asyncio.run_coroutine_threadsafe(pump(), self.loop)
        try:
            while True:
                batch, over = await channel.get_batch()
                if batch:
                    yield batch
                if over:
                    break
            if channel.error is not None:
                raise channel.error
        finally:
            if not ended.done():
                self.loop.call_soon_threadsafe(cancel)
                with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT):
                    await asyncio.wrap_future(ended)


__all__ = ["AdapterLoop"]
