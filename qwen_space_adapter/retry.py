"""The one retry rule of the adapter: transient failures are retried before the first token,
with exponential backoff and jitter, while retries and time are left.

Why one place: a retry decides whether the caller waits longer or sees an error, so every
place that retries (a step, an upload, the config, the answer before its first update) must
decide it the same way: `QwenSpaceError.retryable`, `max_retries`, and never past a deadline.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from .deadlines import Clock
from .errors import QwenSpaceError

log = logging.getLogger("qwen_space_adapter")
T = TypeVar("T")


async def backoff(clock: Clock, attempt: int, exc: QwenSpaceError) -> None:
    """Wait before retry `attempt + 1`, or raise `exc` when it is not to be retried: not
    retryable, no retries left, or the wait would end past a deadline."""
    if not exc.retryable or attempt >= clock.opts.max_retries:
        raise exc
    delay = clock.opts.retry_backoff * (2**attempt) * (0.5 + random.random())
    seconds, _, _ = clock.left()
    if seconds is not None and delay >= seconds:
        raise exc
    log.info("retrying after %s (attempt %d) in %.2fs", type(exc).__name__, attempt + 1, delay)
    await anyio.sleep(delay)


async def retrying(clock: Clock, attempt_fn: Callable[[], Awaitable[T]]) -> T:
    """Run `attempt_fn` within the clock's deadlines, again after each failure `backoff` allows."""
    for attempt in itertools.count():
        try:
            return await clock.bounded(attempt_fn())
        except QwenSpaceError as exc:
            await backoff(clock, attempt, exc)
    raise AssertionError("unreachable")
