"""Running a load: each level's users or arrivals, every request timed as its items arrive."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import aclosing
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import anyio

from ...conversation import JsonConversation
from ...errors import InvalidRequestError, QwenSpaceError
from ...events import QueueStatus, Reasoning, TextRewritten
from ..metrics import percentile
from .courtesy import check_courtesy
from .plan import LoadConfig, Shape
from .records import ERROR, OK, LevelResult, LoadResult, Progress, RequestRecord

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus


def poisson_gaps(rate: float, seed: int) -> Iterator[float]:
    """Seconds between Poisson arrivals at `rate` per second (exponential gaps), reproducibly."""
    rng = random.Random(seed)
    while True:
        yield rng.expovariate(rate)


class LevelRun:
    """One level: starts users or arrivals, times every request, and stops on demand."""

    def __init__(
        self, config: LoadConfig, shape: Shape, on_progress: Callable[[Progress], None] | None, progress_every: float
    ) -> None:
        self.config, self.shape = config, shape.check()
        self.on_progress, self.progress_every = on_progress, progress_every
        self.records: list[RequestRecord] = []
        self.issued = 0
        self.conversations = 0
        self.done = self.failed = 0
        self.recent_ttft: deque[float] = deque(maxlen=200)
        self.stopped = False
        self.scope: anyio.CancelScope | None = None
        self.t0 = 0.0
        self.deadline = float("inf")
        self.keep_text = config.keep_text or self.shape.turns > 1
        self.options: dict[str, Any] = {
            "space": config.url,
            "timeout": config.timeout,
            "first_token_timeout": config.timeout,
            "idle_timeout": min(config.timeout, 120.0),
            "max_retries": config.retries,
        }
        if config.token:
            self.options["hf_token"] = config.token

    def stop(self) -> None:
        """Stop now: no new request, in-flight ones are cancelled (on the Space too) and kept as interrupted."""
        self.stopped = True
        if self.scope is not None:
            self.scope.cancel()

    def claim(self) -> int | None:
        """The next request's index, or None when the level is over (budget, deadline or stop)."""
        if self.stopped or time.perf_counter() >= self.deadline:
            return None
        if self.shape.requests is not None and self.issued >= self.shape.requests:
            return None
        self.issued += 1
        return self.issued - 1

    async def run(self) -> LevelResult:
        self.t0 = time.perf_counter()
        if self.shape.duration is not None:
            self.deadline = self.t0 + self.shape.duration
        async with anyio.create_task_group() as outer:
            if self.on_progress is not None:
                outer.start_soon(self._progress)
            with anyio.CancelScope() as scope:
                self.scope = scope
                if self.stopped:
                    scope.cancel()
                async with anyio.create_task_group() as work:
                    if self.shape.users is not None:
                        for user in range(self.shape.users):
                            work.start_soon(self._user, user)
                    else:
                        work.start_soon(self._arrivals, work)
            outer.cancel_scope.cancel()
        seconds = time.perf_counter() - self.t0
        if self.on_progress is not None:
            self.on_progress(self.snapshot())
        return LevelResult(self.shape, self.config.slo, self.records, seconds, self.stopped)

    def snapshot(self) -> Progress:
        ttft = percentile(list(self.recent_ttft), 50) if self.recent_ttft else None
        in_flight = len(self.records) - self.done - self.failed
        return Progress(self.shape.level, time.perf_counter() - self.t0, self.done, self.failed, in_flight, ttft)

    async def _progress(self) -> None:
        assert self.on_progress is not None
        while True:
            await anyio.sleep(self.progress_every)  # a reporting period, not synchronisation
            self.on_progress(self.snapshot())

    async def _user(self, user: int) -> None:
        if self.shape.ramp:
            await anyio.sleep(user / self.shape.ramp)  # the ramp's schedule
        while (first := self.claim()) is not None:
            await self._conversation(user, first)

    async def _arrivals(self, work: TaskGroup) -> None:
        assert self.shape.rate is not None
        start = anyio.current_time()
        at = 0.0
        user = 0
        for gap in poisson_gaps(self.shape.rate, self.config.seed):
            first = self.claim()
            if first is None:
                return
            work.start_soon(self._conversation, user, first)
            user += 1
            at += gap
            await anyio.sleep_until(start + at)  # the arrival schedule

    async def _conversation(self, user: int, first: int) -> None:
        """Up to `turns` requests in one Space session; a failed turn ends the conversation."""
        number = self.conversations
        self.conversations += 1
        conversation: JsonConversation | None = None
        messages: list[dict[str, str]] = []
        index: int | None = first
        for turn in range(self.shape.turns):
            if index is None:
                return
            prompt = self.config.prompts[index % len(self.config.prompts)]
            messages.append({"role": "user", "content": prompt.text})
            record = RequestRecord(index, user, number, turn, time.perf_counter() - self.t0)
            self.records.append(record)
            conversation = await self._request(record, messages, conversation, prompt.files)
            if record.status != OK:
                return
            messages.append({"role": "assistant", "content": record.text or "(empty)"})
            if not self.config.keep_text:
                record.text = None
            index = self.claim() if turn + 1 < self.shape.turns else None

    async def _request(
        self,
        rec: RequestRecord,
        messages: list[dict[str, str]],
        conversation: JsonConversation | None,
        files: tuple[str, ...],
    ) -> JsonConversation | None:
        """Send one request and time every item on arrival; every outcome lands on `rec`."""
        clock = time.perf_counter
        parts: list[str] | None = [] if self.keep_text else None
        gaps = rec.gaps
        options = dict(self.options, files=list(files)) if files else self.options
        t0 = clock()
        last = 0.0
        try:
            stream = self.config.provider.create_async_generator(
                self.config.model, messages, return_conversation=True, conversation=conversation, **options
            )
            async with aclosing(stream):
                async for item in stream:
                    now = clock()  # first: the arrival time, before any work on the item
                    if isinstance(item, str):
                        if rec.first_delta is None:
                            rec.first_delta = now - t0
                            if rec.started is None:
                                rec.started = rec.first_delta
                        else:
                            gaps.append(now - last)
                        last = now
                        rec.deltas += 1
                        rec.chars += len(item)
                        if parts is not None:
                            parts.append(item)
                    elif isinstance(item, Reasoning):
                        if rec.placeholder is None:
                            rec.placeholder = now - t0
                            if rec.started is None:
                                rec.started = rec.placeholder
                    elif isinstance(item, QueueStatus):
                        rec.queue_events += 1
                        if item.position is not None:
                            rec.max_position = max(rec.max_position or 0, item.position)
                    elif isinstance(item, TextRewritten):
                        rec.rewrites += 1
                        rec.chars = len(item.text)
                        if parts is not None:
                            parts[:] = [item.text]
                    elif isinstance(item, JsonConversation):
                        conversation = item
            rec.end = clock() - t0
            rec.status = OK
            self.done += 1
            if rec.first_delta is not None:
                self.recent_ttft.append(rec.first_delta)
        except QwenSpaceError as e:
            self._failed(rec, e, clock() - t0)
        except anyio.get_cancelled_exc_class():
            rec.end = clock() - t0  # stays "interrupted"
            raise
        except Exception as e:  # not the adapter's promise, but a load test must count it, not die
            self._failed(rec, e, clock() - t0)
        if parts is not None:
            rec.text = "".join(parts)
        return conversation

    def _failed(self, rec: RequestRecord, error: Exception, seconds: float) -> None:
        rec.end = seconds
        rec.status = ERROR
        rec.error = type(error).__name__ if isinstance(error, QwenSpaceError) else f"unexpected:{type(error).__name__}"
        rec.message = " ".join(str(error).split())[:300]
        self.failed += 1


async def load_async(
    config: LoadConfig,
    levels: Sequence[float] | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every: float = 1.0,
    handle_sigint: bool = False,
    courtesy: bool = True,
    say: Callable[[str], None] | None = None,
) -> LoadResult:
    """Run the load (one level, or each of `levels` in turn) and return every request's record.

    With `handle_sigint` (main thread only), the first Ctrl-C stops the run: in-flight requests
    are cancelled and kept as interrupted, no further level starts, and the partial result is
    returned with `interrupted=True`; a second Ctrl-C exits at once.
    """
    shape = config.shape.check()
    if not config.prompts:
        raise InvalidRequestError("A load run needs at least one prompt.")
    if levels:
        shapes = [shape.at(x).check() for x in levels]
    else:
        shapes = [shape]
    if courtesy:
        check_courtesy(config, levels, say)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    sweep = ("users" if shape.mode == "closed" else "rate") if levels else None
    result = LoadResult(config, [], started_at, sweep=sweep)
    current: list[LevelRun] = []

    async def watch_sigint(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            task_status.started()  # the handler is in place before the first request is sent
            async for _ in signals:
                if result.interrupted:
                    os._exit(130)  # a second Ctrl-C: out now, without the report
                result.interrupted = True
                if current:
                    current[-1].stop()

    async with anyio.create_task_group() as tg:
        if handle_sigint:
            await tg.start(watch_sigint)
        for level_shape in shapes:
            if result.interrupted:
                break
            run = LevelRun(config, level_shape, on_progress, progress_every)
            current.append(run)
            result.levels.append(await run.run())
        tg.cancel_scope.cancel()
    return result


def run_load(config: LoadConfig, levels: Sequence[float] | None = None, **kwargs: Any) -> LoadResult:
    """The synchronous twin of `load_async` (runs its own event loop; in a thread when one is running)."""
    import asyncio
    import functools
    from concurrent.futures import ThreadPoolExecutor

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(functools.partial(load_async, config, levels, **kwargs))
    kwargs.pop("handle_sigint", None)  # signals reach the main thread only
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, functools.partial(load_async, config, levels, **kwargs)).result()
