"""The three deadlines of an answer, as one clock a turn and its steps read.

`timeout` bounds the whole call, `first_token_timeout` everything before the first token
(waiting for the session, the config, uploads, queueing, thinking), `idle_timeout` the silence
between updates once text flows. Every await of a turn goes through `Clock.bounded`, so whichever
deadline is nearest ends it, and the error names that deadline and the option that sets it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from .errors import SpaceTimeoutError
from .options import RequestOptions

T = TypeVar("T")

# The phase of a deadline: what the Space did not deliver in time, and the option that sets it.
_DEADLINES = {
    "answer": ("the whole answer", "timeout"),
    "first token": ("the first token of its answer", "first_token_timeout"),
    "silence": ("a next update of its answer (it fell silent)", "idle_timeout"),
}


@dataclass
class Clock:
    """The three deadlines of an answer: whole answer, first token, silence between updates."""

    opts: RequestOptions
    start: float
    text_started: bool = False
    last_update: float = 0.0

    def left(self) -> tuple[float | None, str, float | None]:
        """Seconds until the nearest deadline, which deadline it is, and its configured limit."""
        now = time.monotonic()
        opts = self.opts
        candidates: list[tuple[float, str, float]] = []
        if opts.timeout is not None:
            candidates.append((self.start + opts.timeout - now, "answer", opts.timeout))
        if not self.text_started and opts.first_token_timeout is not None:
            candidates.append((self.start + opts.first_token_timeout - now, "first token", opts.first_token_timeout))
        if self.text_started and opts.idle_timeout is not None:
            candidates.append((self.last_update + opts.idle_timeout - now, "silence", opts.idle_timeout))
        if not candidates:
            return None, "", None
        seconds, phase, limit = min(candidates)
        return max(seconds, 0.0), phase, limit

    def expired(self) -> SpaceTimeoutError:
        _, phase, limit = self.left()
        what, option = _DEADLINES.get(phase, (f"the {phase}", "timeout"))
        return SpaceTimeoutError(
            f"The Space did not deliver {what} within {limit} s ({option}). Raise {option}, or retry later.",
            phase=phase,
        )

    async def bounded(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable` within the nearest deadline, or raise `SpaceTimeoutError`."""
        seconds, _, _ = self.left()
        with anyio.move_on_after(seconds if seconds is not None else float("inf")) as scope:
            return await awaitable
        if scope.cancelled_caught:
            raise self.expired()
        raise AssertionError("unreachable")
