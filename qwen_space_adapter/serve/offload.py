"""The adapter's turns on an event loop of their own, so the server's loop only serves HTTP.

Starting a turn costs the adapter tens of milliseconds of CPU on its event loop (building a
gradio_client from the cached config, starting its threads); with hundreds of streams starting
together, that would stall every other stream's next frame, new connections and disconnect checks
on the server's loop. So each turn runs on `AdapterLoop` (an asyncio loop on a daemon thread) and its
items cross to the server's loop through `_Channel`s: a deque each, under the lock of the `_Inbox` that
all the streams read on one loop share. At most one wake-up of that loop is in flight at a time, for
every stream: a delta that arrives while one is pending rides on it. A cross-thread call costs both
threads a system call (the adapter's write to the loop's wake-up socket, the loop's read of it and
another turn of its selector), each a release and re-take of the interpreter lock, which the other
threads (gradio_client's readers, the adapter's loop) hold most of the time under load. One call per
delta made the server's loop turn once per delta at 200 streams; now a turn serves every stream with
news, and the busier the loop, the more each wake-up carries. Nothing waits for company: the first
item after a wake-up schedules the next one at once.

Leaving the consumer early (a client that disconnects, Ctrl-C) cancels the turn's task on the
adapter loop and waits, shielded and bounded, until it is over: the adapter's own cleanup is what
cancels the job on the Space, and no task may outlive its request.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import Any

import anyio

CLEANUP_TIMEOUT = 30.0  # the adapter's own bound for cancelling on the Space is shorter


class _Inbox:
    """The wake-ups of one consuming loop, shared by all its streams: at most one in flight."""

    def __init__(self, home: asyncio.AbstractEventLoop) -> None:
        self.home = home
        self.lock = threading.Lock()  # also guards every channel's items, flags and waiter
        self.news: list[_Channel] = []  # channels with something new since the last wake-up
        self.scheduled = False

    def note(self, channel: _Channel) -> bool:
        """Called with `lock` held: list `channel` for the next wake-up; True if the caller must schedule one
        (`schedule()`, after releasing the lock: the consumer never waits on the producer's system call)."""
        if not channel.listed:
            channel.listed = True
            self.news.append(channel)
        if self.scheduled:
            return False  # the wake-up in flight will see it
        self.scheduled = True
        return True

    def schedule(self) -> None:
        self.home.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:  # on the consuming loop
        with self.lock:
            news, self.news, self.scheduled = self.news, [], False
            waiters = []
            for channel in news:
                channel.listed = False
                if channel.waiter is not None:
                    waiters.append(channel.waiter)
                    channel.waiter = None
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class _Channel:
    """Items from the adapter loop to one consumer on the server loop."""

    def __init__(self, inbox: _Inbox) -> None:
        self.inbox = inbox
        self.lock = inbox.lock
        self.items: collections.deque[Any] = collections.deque()
        self.finished = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.listed = False  # in the inbox's news

    # producer side (the adapter loop's thread)
    def put(self, item: Any) -> None:
        with self.lock:
            self.items.append(item)
            wake = self.inbox.note(self)
        if wake:
            self.inbox.schedule()

    def finish(self, error: BaseException | None) -> None:
        with self.lock:
            self.finished, self.error = True, error
            wake = self.inbox.note(self)
        if wake:
            self.inbox.schedule()

    # consumer side (the server loop)
    async def get_batch(self) -> tuple[list[Any], bool]:
        """The items so far and whether the stream is over; waits when there is nothing yet."""
        while True:
            with self.lock:
                if self.items or self.finished:
                    batch = list(self.items)
                    self.items.clear()
                    return batch, self.finished and not batch
                self.waiter = self.inbox.home.create_future()
                waiter = self.waiter
            await waiter


class AdapterLoop:
    """An asyncio loop on a daemon thread that runs the adapter's turns."""

    def __init__(self, name: str = "qwen-serve-adapter") -> None:
        self.loop = asyncio.new_event_loop()
        self._inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inbox] = weakref.WeakKeyDictionary()
        self._inboxes_lock = threading.Lock()
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
        home = asyncio.get_running_loop()
        with self._inboxes_lock:
            inbox = self._inboxes.get(home)
            if inbox is None:
                inbox = self._inboxes[home] = _Inbox(home)
        channel = _Channel(inbox)

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
