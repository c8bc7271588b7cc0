"""The Gradio queue's message protocol, as a follower of one job reads it.

A job's messages (`estimation`, `process_starts`, `process_generating` with whole values or
diffs, `process_completed`, the server's stop notice and the adapter's own reader-ended mark)
become `Queued`, `Output` and `Completed` events, or the adapter's error. Pure of threads: the
messages come in through a `Channel` (`workers.py`), from the tap of whichever client runs the
job (`bridge.py`), and each is applied where it arrives, diffs in place.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from . import _gc_internals as gci
from .deltas import apply_diff
from .errors import ConversationInUseError, QwenSpaceError, StreamInterruptedError
from .failures import app_error, translate
from .page import as_wire
from .workers import Channel

log = logging.getLogger("qwen_space_adapter")
PLAIN_EVENT = "qwen_space_adapter:plain-call"  # the follower's event id for an unqueued step


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
        self,
        url: str,
        diffs: bool,
        skipped: tuple[bool, ...],
        bases: list[list[Any]] | None = None,
        accept: Callable[[list[Any]], bool] | None = None,
        own: set[str] | None = None,
        guess: tuple[list[Any], Callable[[list[Any]], bool]] | None = None,
    ) -> None:
        self.url = url
        self.skipped = skipped  # per output: does gradio_client leave it out of a result
        self.diffs = diffs  # sse_v2+ sends diffs after the first generating message
        self.bases = bases or []  # last outputs of this session's unfinished streams, newest first
        self.accept = accept or (lambda outputs: True)  # does a rebased value belong to this job
        # the last base to try, with its own (stricter) check: the values the page holds now
        self.guess = guess
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
            if self.current is None and self.diffs and self._stale(data):
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
            data = list(output.get("data", []))
            if self.current is None and self.diffs and self._stale(data):
                # Gradio 4 and 5 key diff streams by the generator's id() and never end the
                # streams of generators that were cancelled, nor of unqueued ones (run to their
                # first yield): an unqueued generator step that draws a stale id answers with
                # a diff against that stream instead of its value. Read it against the
                # session's unfinished streams, as a queued step's first update is; never
                # store a diff as a value.
                rebased = self._rebase(data)
                if rebased is None:
                    raise StreamInterruptedError(
                        f"The Space at {self.url} answered a step with a diff against a stream this "
                        f"process does not hold ({STALE_STREAM}). Retry the request; if it fails "
                        "again, start a new conversation."
                    )
                data = rebased
            return Completed(data)
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
            raise StreamInterruptedError(f"The Space at {self.url} stopped while answering. Retry the request.")
        return _IGNORED

    def _stale(self, data: list[Any]) -> bool:
        """Whether a step's first outputs are a diff against a stale stream: some output is a
        diff, or every one is `[]`, Gradio's "unchanged" (a stale stream that already held
        the value), for a generator step the page sent a chatbot to (it has a `guess`)."""
        if any(is_diff(d) for d in data):
            return True
        return bool(data) and all(d == [] for d in data) and self.guess is not None

    def _rebase(self, data: list[Any]) -> list[Any] | None:
        """The outputs after a first update that is a diff, or None if no base fits.

        Gradio 4 and 5 key their diff streams by the id() of the generator, and never drop the
        stream of a generator that failed, was cancelled or ran unqueued: a later generator of
        the same session that gets the same id() has its first update sent as a diff against
        that stale stream. The stale value is most often one this process saw last of such a
        stream, so try those; then the values the page holds (a conversation continued by
        another process: its last step's result led to them), under a stricter check.
        """
        changes = any(is_diff(d) for d in data)
        candidates = [(base, self.accept) for base in self.bases]
        if self.guess is not None and changes:  # unchanged against the page's values says nothing
            candidates.append(self.guess)
        for n, (base, accept) in enumerate(candidates):
            current = copy.deepcopy(base)
            try:
                for i, diff in enumerate(data):
                    while i >= len(current):
                        current.append(None)
                    # every output of a diff update is a diff: [] is "unchanged", not a value
                    current[i] = apply_diff(current[i], diff) if is_diff(diff) or diff == [] else diff
            except (IndexError, KeyError, TypeError, ValueError, QwenSpaceError):
                continue
            if accept(current):
                log.debug("a first update was a diff against a stale stream of %s: read against base %d", self.url, n)
                return current
        return None


STALE_STREAM = "Gradio 4 and 5 reuse the stream of a generator they never ended"
_IGNORED = object()
_LIVE = frozenset({"process_starts", "process_generating"})  # messages of an event that runs now

DIFF_ACTIONS = frozenset({"replace", "append", "add", "delete"})


def is_diff(value: Any) -> bool:
    """Whether an output value is a list of Gradio diff operations rather than a value."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(op, list) and len(op) == 3 and op[0] in DIFF_ACTIONS and isinstance(op[1], list) for op in value
        )
    )


__all__ = ["STALE_STREAM", "Completed", "JobEvent", "JobFollower", "Output", "Queued", "is_diff"]
