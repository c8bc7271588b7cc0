"""One turn of a conversation: `add_text`, then `predict`, streamed as answer items.

This is where the pieces meet: the session gives a client bound to the conversation's session
hash, the bridge follows each job without polling, `DeltaTracker` turns chatbot snapshots into
deltas, and the conversation object is updated as the Space's chatbot changes, so that even an
interrupted answer leaves a conversation the caller can continue or retry.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio
from gradio_client import handle_file

from . import bridge
from .conversation import JsonConversation
from .deltas import DeltaTracker, Item, bot_text
from .errors import APIChangedError, QwenSpaceError, SpaceTimeoutError
from .events import QueueStatus
from .options import RequestOptions
from .session import SpaceInfo, close_client, open_client, space_info

log = logging.getLogger("qwen_space_adapter")


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
            candidates.append(
                (self.start + opts.first_token_timeout - now, "first token", opts.first_token_timeout)
            )
        if self.text_started and opts.idle_timeout is not None:
            candidates.append((self.last_update + opts.idle_timeout - now, "silence", opts.idle_timeout))
        if not candidates:
            return None, "", None
        seconds, phase, limit = min(candidates)
        return max(seconds, 0.0), phase, limit


def strip_file_meta(value: Any) -> Any:
    """The chatbot to send back, without the markers that make gradio_client re-upload files.

    Files in the chatbot already live on the Space; gradio_client would try to upload any dict
    tagged `gradio.FileData` from the local disk, where those paths do not exist.
    """
    if isinstance(value, list):
        return [strip_file_meta(v) for v in value]
    if isinstance(value, dict):
        return {k: strip_file_meta(v) for k, v in value.items() if k != "meta"}
    return value


async def _follow(
    client: Any,
    router: bridge.Router | None,
    info: SpaceInfo,
    clock: Clock,
    fn_index: int,
    *args: Any,
) -> AsyncGenerator[bridge.JobEvent, None]:
    """Submit one job and yield its events, with deadlines; cancel it if we leave early."""
    api = info.api
    outputs = api.add_text_outputs if fn_index == api.add_text else api.predict_outputs
    follower = bridge.JobFollower(info.target.url, api.protocol != "sse_v1", outputs)
    if router is not None:
        router.follower = follower
    job = bridge.submit(client, follower, fn_index, *args)
    events = follower.events() if router is not None else bridge.follow_job_public(job, outputs)
    try:
        while True:
            seconds, phase, limit = clock.left()
            with anyio.move_on_after(seconds if seconds is not None else float("inf")) as scope:
                try:
                    event = await events.__anext__()
                except StopAsyncIteration:
                    return
            if scope.cancelled_caught:
                raise SpaceTimeoutError(
                    f"The Space did not deliver the {phase} within the allowed time "
                    f"({limit} s). Raise the timeout, or retry later.",
                    phase=phase,
                )
            done = isinstance(event, bridge.Completed)
            follower.finished = follower.finished or done
            yield event
            if done:
                return
    finally:
        await events.aclose()
        if not follower.finished:
            await bridge.cancel_job(job)


async def _backoff(opts: RequestOptions, attempt: int, exc: QwenSpaceError) -> None:
    """Wait before retry `attempt + 1`: exponential, with jitter so clients do not retry in step."""
    delay = opts.retry_backoff * (2**attempt) * (0.5 + random.random())
    log.info("retrying after %s (attempt %d) in %.2fs", type(exc).__name__, attempt + 1, delay)
    await anyio.sleep(delay)


async def _retrying(opts: RequestOptions, attempt_fn: Any) -> Any:
    """Run `attempt_fn` again after transient failures, with exponential backoff and jitter."""
    for attempt in range(opts.max_retries + 1):
        try:
            return await attempt_fn()
        except QwenSpaceError as exc:
            if not exc.retryable or attempt == opts.max_retries:
                raise
            await _backoff(opts, attempt, exc)
    raise AssertionError("unreachable")


async def run_turn(
    conversation: JsonConversation, prompt: str, opts: RequestOptions, message_count: int
) -> AsyncGenerator[Item | QueueStatus, None]:
    """Send `prompt` in `conversation`'s session and yield answer deltas and status events."""
    clock = Clock(opts, time.monotonic())
    info = await _retrying(opts, lambda: space_info(opts.target))
    conversation.space = info.target.url
    if opts.files and not info.api.multimodal:
        raise APIChangedError("The Space's input no longer takes files; send text only.")
    value: Any = {"text": prompt, "files": [handle_file(str(p)) for p in opts.files]}
    if not info.api.multimodal:
        value = prompt
    chatbot = strip_file_meta(conversation.chatbot or [])
    client = open_client(info, conversation.session_hash)
    router = bridge.install_tap(client)
    try:
        async def add_text() -> list[Any]:
            follow = _follow(client, router, info, clock, info.api.add_text, value, chatbot)
            async with aclosing(follow):
                async for event in follow:
                    if isinstance(event, bridge.Completed):
                        return event.data
            raise bridge.job_error(RuntimeError("add_text ended without a result"), info.target.url)

        added = await _retrying(opts, add_text)
        # The Space now holds the user's message in this session: record it, so a retry after
        # a failure below continues the conversation instead of starting it again.
        chatbot = added[info.api.add_text_chatbot]
        conversation.chatbot = chatbot
        conversation.message_count = message_count
        tracker = DeltaTracker()
        args = (strip_file_meta(chatbot), *info.api.predict_extra_inputs)
        streamed = False

        async def predict_events() -> AsyncGenerator[bridge.JobEvent, None]:
            # Retries are only safe until the first update: after that, text reached the caller.
            for attempt in range(opts.max_retries + 1):
                try:
                    follow = _follow(client, router, info, clock, info.api.predict, *args)
                    async with aclosing(follow):
                        async for event in follow:
                            yield event
                    return
                except QwenSpaceError as exc:
                    if streamed or not exc.retryable or attempt == opts.max_retries:
                        raise
                    await _backoff(opts, attempt, exc)

        try:
            async with aclosing(predict_events()) as predict_stream:
                async for event in predict_stream:
                    if isinstance(event, bridge.Queued):
                        yield QueueStatus(event.position, event.queue_size, event.eta)
                        continue
                    streamed = True
                    final = isinstance(event, bridge.Completed)
                    snapshot = event.data[0] if event.data else None
                    if snapshot is None:
                        continue
                    if final:
                        conversation.chatbot = snapshot
                    for item in tracker.feed(bot_text(snapshot), final=final):
                        if isinstance(item, str):
                            clock.text_started = True
                        yield item
                    clock.last_update = time.monotonic()
        except QwenSpaceError as exc:
            exc.partial_text = tracker.emitted
            raise
    finally:
        # Not waiting for the client's threads: each ends by itself within one of gradio_client's
        # 50 ms polls once its job is over, and the caller should not wait for that.
        close_client(client, wait=False)
