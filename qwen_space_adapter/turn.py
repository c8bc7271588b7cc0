"""One turn of a conversation: the Space's submit chain, run as its page runs it, streamed.

A turn owns everything it starts. It waits for the conversation's session to be free (one turn
per session at a time), gets the Space's page model, uploads the attachments, then runs the
chain that the input's submit starts: each step takes its inputs from the conversation's store
of component values and writes its outputs back; the answer step's chatbot updates become
deltas (`DeltaTracker`). The turn is over only when its client's reader has ended, so the next
turn of the conversation never shares the session's stream with a leftover reader.

Deadlines: `timeout` bounds the whole call, `first_token_timeout` everything before the first
token (waiting for the session, the config, uploads, queueing, thinking), `idle_timeout` the
silence between updates once text flows. Retries happen only before the first token, and only
while time is left.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import anyio

from . import bridge, session
from .conversation import JsonConversation
from .deltas import DeltaTracker, Item, answer_text
from .errors import (
    APIChangedError,
    QwenSpaceError,
    SpaceRestartedError,
    SpaceTimeoutError,
    StreamInterruptedError,
)
from .events import QueueStatus
from .failures import is_config_mismatch, translate
from .options import RequestOptions
from .page import Page, Step
from .session import SpaceInfo

log = logging.getLogger("qwen_space_adapter")
T = TypeVar("T")
TRAILING_STEP_LIMIT = 30.0  # seconds allowed to each step the page runs after the answer


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

    def expired(self) -> SpaceTimeoutError:
        _, phase, limit = self.left()
        return SpaceTimeoutError(
            f"The Space did not deliver the {phase} within the allowed time ({limit} s). "
            "Raise the timeout, or retry later.",
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


async def _follow(
    client: Any, router: bridge.Router | None, info: SpaceInfo, clock: Clock, step: Step, args: list[Any]
) -> AsyncGenerator[bridge.JobEvent, None]:
    """Submit one step and yield its events, with deadlines; cancel it if we leave early."""
    page, url, session_hash = info.page, info.target.url, client.session_hash
    skipped = page.skipped_outputs(step)
    kept = [i for i in step.inputs if not page.components[i].is_state]
    sent = args[kept.index(page.chatbot_id)] if page.chatbot_id in kept else None
    follower = bridge.JobFollower(
        url, page.protocol != "sse_v1", skipped, session.unfinished_bases(url, session_hash),
        accept=lambda outputs: _extends(page.chatbot_of(step, outputs), sent),
    )
    if router is not None:
        router.follower = follower
    try:
        job = bridge.submit(client, follower, step.fn_index, *args, tapped=router is not None)
    except Exception as exc:
        raise translate(exc, url) from None
    events = follower.events() if router is not None else bridge.follow_job_public(job, skipped, url)
    try:
        while True:
            try:
                event = await clock.bounded(events.__anext__())
            except StopAsyncIteration:
                return
            done = isinstance(event, bridge.Completed)
            follower.finished = follower.finished or done
            follower.succeeded = follower.succeeded or done
            yield event
            if done:
                return
    finally:
        await events.aclose()
        if not follower.succeeded and step.generator:
            session.remember_unfinished(url, session_hash, follower.current)
        if not follower.finished:
            client.left_unfinished = True
            await bridge.cancel_job(job)


def _user_side(entry: Any) -> Any:
    user = entry[0] if isinstance(entry, list | tuple) and len(entry) == 2 else entry
    return user.get("text", user.get("content")) if isinstance(user, dict) else user


def _extends(chatbot: Any, sent: Any) -> bool:
    """Whether `chatbot` continues the chatbot `sent` to the step: the same user messages in the
    same places, and nothing after them but answer parts."""
    if not isinstance(sent, list):
        return True
    if not isinstance(chatbot, list) or len(chatbot) < len(sent):
        return False
    same = [_user_side(x) for x in chatbot[: len(sent)]] == [_user_side(x) for x in sent]
    return same and all(_user_side(x) is None for x in chatbot[len(sent) :])


async def _backoff(clock: Clock, attempt: int, exc: QwenSpaceError) -> None:
    """Wait before retry `attempt + 1`: exponential with jitter, never past a deadline."""
    delay = clock.opts.retry_backoff * (2**attempt) * (0.5 + random.random())
    seconds, _, _ = clock.left()
    if seconds is not None and delay >= seconds:
        raise exc
    log.info("retrying after %s (attempt %d) in %.2fs", type(exc).__name__, attempt + 1, delay)
    await anyio.sleep(delay)


async def _retrying(clock: Clock, attempt_fn: Callable[[], Awaitable[T]]) -> T:
    """Run `attempt_fn` again after transient failures, while retries and time are left."""
    for attempt in range(clock.opts.max_retries + 1):
        try:
            return await clock.bounded(attempt_fn())
        except QwenSpaceError as exc:
            if not exc.retryable or attempt == clock.opts.max_retries:
                raise
            await _backoff(clock, attempt, exc)
    raise AssertionError("unreachable")


class Turn:
    """The state of one running turn: its page, its store of values, its client."""

    def __init__(self, conversation: JsonConversation, info: SpaceInfo, clock: Clock) -> None:
        self.conversation = conversation
        self.info = info
        self.page: Page = info.page
        self.clock = clock
        self.values = self._restore()
        self.client: Any = None
        self.router: bridge.Router | None = None

    def _restore(self) -> dict[int, Any]:
        page, conv = self.page, self.conversation
        values = page.initial_values()
        for key, value in (getattr(conv, "values", None) or {}).items():
            if str(key).isdigit() and int(key) in page.components:
                values[int(key)] = value
        if conv.chatbot:
            values[page.chatbot_id] = conv.chatbot
        elif values.get(page.chatbot_id) is None:
            values[page.chatbot_id] = []
        return values

    def record(self) -> None:
        """Write the page's values back to the conversation: it is continued from them."""
        page = self.page
        self.conversation.chatbot = self.values.get(page.chatbot_id) or []
        reads = {i for step in page.chain for i in step.inputs}
        self.conversation.values = {
            str(i): self.values.get(i)
            for i in sorted(reads)
            if i not in (page.input_id, page.chatbot_id) and not page.components[i].is_state
        }
        self.conversation.app_id = self.info.app_id

    async def run_step(self, step: Step) -> list[Any]:
        """Run one step that is not the answer to completion; its outputs, in wire order."""
        follow = _follow(self.client, self.router, self.info, self.clock, step, self.page.args(step, self.values))
        async with aclosing(follow):
            async for event in follow:
                if isinstance(event, bridge.Completed):
                    self.page.apply(step, self.values, event.data)
                    return event.data
        raise StreamInterruptedError(
            f"The Space at {self.info.target.url} ended a step without a result. Retry the request."
        )


async def _upload(turn: Turn, opts: RequestOptions) -> list[dict[str, Any]]:
    files = []
    for attachment in opts.files:
        files.append(
            await _retrying(
                turn.clock,
                partial(
                    bridge.in_daemon_thread, session.upload, turn.client,
                    attachment.name, attachment.data, attachment.mime_type,
                ),
            )
        )
    return files


async def _run_chain(
    turn: Turn, prompt: str, opts: RequestOptions, message_count: int, tracker: DeltaTracker
) -> AsyncGenerator[Item | QueueStatus, None]:
    """Run the page's submit chain once and yield the answer step's items."""
    page, clock, conv = turn.page, turn.clock, turn.conversation
    if opts.files and not page.multimodal:
        raise APIChangedError("The Space's input takes no files (it is a plain textbox); send text only.")
    fresh = not conv.chatbot and not conv.message_count
    turn.values[page.input_id] = page.user_value(prompt, await _upload(turn, opts))
    if fresh:
        for step in page.load_steps:
            await _retrying(clock, partial(turn.run_step, step))
    for index, step in enumerate(page.chain[: page.answer]):
        await _retrying(clock, partial(turn.run_step, step))
        if index == 0:
            # The Space now holds the user's message in this session: record it, so a retry
            # after a failure below continues the conversation instead of starting it again.
            turn.record()
            conv.message_count = message_count
    answer = page.answer_step
    if page.answer == 0:
        conv.message_count = message_count
    args = page.args(answer, turn.values)
    streamed = False

    async def answer_events() -> AsyncGenerator[bridge.JobEvent, None]:
        # Retries are only safe until the first update: after that, text reached the caller.
        for attempt in range(opts.max_retries + 1):
            try:
                follow = _follow(turn.client, turn.router, turn.info, clock, answer, args)
                async with aclosing(follow):
                    async for event in follow:
                        yield event
                return
            except QwenSpaceError as exc:
                if streamed or not exc.retryable or attempt == opts.max_retries:
                    raise
                await _backoff(clock, attempt, exc)

    async with aclosing(answer_events()) as events:
        async for event in events:
            if isinstance(event, bridge.Queued):
                yield QueueStatus(event.position, event.queue_size, event.eta)
                continue
            streamed = True
            final = isinstance(event, bridge.Completed)
            chatbot = page.chatbot_of(answer, event.data)
            if final:
                page.apply(answer, turn.values, event.data)
                turn.record()
            if chatbot is None:
                continue
            for item in tracker.feed(answer_text(chatbot), final=final):
                if isinstance(item, str):
                    clock.text_started = True
                yield item
            clock.last_update = time.monotonic()
    for step in page.chain[page.answer + 1 :]:
        # Steps after the answer (re-enabling the input, saving history) run as the page runs
        # them; the answer is complete, so a failure here is logged, not raised.
        try:
            with anyio.fail_after(TRAILING_STEP_LIMIT):
                await turn.run_step(step)
            turn.record()
        except (QwenSpaceError, TimeoutError) as exc:
            log.warning("the step after the answer (fn %d) failed: %s", step.fn_index, exc)


async def run_turn(
    conversation: JsonConversation, prompt: str, opts: RequestOptions, message_count: int
) -> AsyncGenerator[Item | QueueStatus, None]:
    """Send `prompt` in `conversation`'s session and yield answer deltas and status events."""
    clock = Clock(opts, time.monotonic())
    target = opts.target
    gate = session.gate(target.url, conversation.session_hash)
    await clock.bounded(gate.acquire())
    tracker = DeltaTracker()
    try:
        info = await _retrying(clock, lambda: session.space_info(target, opts.connect_timeout))
        conversation.space = target.url
        healed = False
        while True:
            try:
                attempt = _attempt(conversation, prompt, opts, message_count, info, clock, tracker)
                async with aclosing(attempt):
                    async for item in attempt:
                        yield item
                return
            except QwenSpaceError as exc:
                if healed or tracker.emitted or clock.text_started or not is_config_mismatch(exc):
                    raise
                # A redeployed Space shifts fn indices and value shapes: read its page again once.
                healed = True
                log.info("the Space's page no longer fits (%s); reading its config again", type(exc).__name__)
                old = info
                info = await _retrying(clock, partial(session.space_info, target, opts.connect_timeout, stale=old))
                if info.app_id == old.app_id and isinstance(exc, _StaleConfig):
                    raise _restarted(target.url) from None  # it said it changed, yet it did not
    except QwenSpaceError as exc:
        exc.partial_text = tracker.emitted
        raise
    except (anyio.get_cancelled_exc_class(), GeneratorExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        err = translate(exc, target.url)
        err.partial_text = tracker.emitted
        raise err from exc
    finally:
        gate.release()


async def _attempt(
    conversation: JsonConversation, prompt: str, opts: RequestOptions, message_count: int,
    info: SpaceInfo, clock: Clock, tracker: DeltaTracker,
) -> AsyncGenerator[Item | QueueStatus, None]:
    """One run of the chain on a client of its own, ended (reader included) before returning."""
    turn = Turn(conversation, info, clock)
    turn.client = session.open_client(info, conversation.session_hash, opts.connect_timeout)
    try:
        recorded = getattr(conversation, "app_id", None)
        if recorded is not None and _has_history(conversation):
            # The Space keeps a conversation's history in its app's memory: a restart loses it.
            # One small request tells whether the app is still the one this conversation used.
            live = await clock.bounded(
                bridge.in_daemon_thread(session.live_app_id, turn.client)
            )
            if live is not None and live != info.app_id:
                raise _StaleConfig("The Space restarted since this process read its page.")
            if recorded != info.app_id:
                raise _restarted(info.target.url)
        turn.router = bridge.install_tap(turn.client)
        chain = _run_chain(turn, prompt, opts, message_count, tracker)
        async with aclosing(chain):
            async for item in chain:
                yield item
    finally:
        await session.end_client(turn.client, cancelled=turn.client.left_unfinished)


class _StaleConfig(APIChangedError):
    """The Space's app is not the one whose page this process holds: read the page again."""


def _has_history(conversation: JsonConversation) -> bool:
    return bool(conversation.chatbot) or bool(conversation.message_count)


def _restarted(url: str) -> SpaceRestartedError:
    return SpaceRestartedError(
        f"The Space at {url} restarted since this conversation began, and lost its history on "
        "the server. Start a new conversation (conversation=None), passing the earlier turns "
        "as messages if the answer needs them."
    )
