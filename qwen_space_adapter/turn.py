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

import itertools
import json
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from functools import partial
from typing import Any

import anyio

from . import bridge, clients, config_cache, ending, protocol, session, workers
from .config_cache import SpaceInfo
from .conversation import JsonConversation, check_chatbot_format
from .deadlines import Clock
from .deltas import DeltaTracker, Item, answer_text
from .errors import (
    APIChangedError,
    QwenSpaceError,
    SpaceAppError,
    SpaceRestartedError,
    StreamInterruptedError,
)
from .events import QueueStatus
from .failures import is_config_mismatch, translate
from .options import RequestOptions
from .page import CANCELLED, FAILED, OK, Page, Step
from .retry import backoff, retrying

log = logging.getLogger("qwen_space_adapter")
TRAILING_STEP_LIMIT = 30.0  # seconds allowed to each step the page runs after the answer


def _user_side(entry: Any) -> Any:
    """The user's side of a chatbot entry: of a [user, bot] pair, or of a user message (a message
    of another role has none)."""
    if isinstance(entry, dict) and "role" in entry:
        return entry.get("content") if entry.get("role") == "user" else None
    user = entry[0] if isinstance(entry, list | tuple) and len(entry) == 2 else entry
    return user.get("text", user.get("content")) if isinstance(user, dict) else user


def _extends(chatbot: Any, sent: Any, answer: bool = True) -> bool:
    """Whether `chatbot` continues the chatbot `sent` to the step: the same user messages in the
    same places, and after them nothing but answer parts (the answer step) or anything (a step
    before it, which adds the user's message)."""
    if not isinstance(sent, list):
        return True
    if not isinstance(chatbot, list) or len(chatbot) < len(sent):
        return False
    same = [_user_side(x) for x in chatbot[: len(sent)]] == [_user_side(x) for x in sent]
    return same and (not answer or all(_user_side(x) is None for x in chatbot[len(sent) :]))


class Turn:
    """The state of one running turn: its page, its store of values, its client, what it left."""

    def __init__(self, conversation: JsonConversation, info: SpaceInfo, clock: Clock) -> None:
        self.conversation = conversation
        self.info = info
        self.page: Page = info.page
        self.clock = clock
        self.values = self._restore()
        self.client: Any = None
        self.router: bridge.Router | None = None
        self.unfinished: list[Any] = []  # jobs left before their end: the ending cancels them
        self.last_outputs: list[Any] | None = None  # the answer step's outputs as last streamed
        self.ending: ending.Ending | None = None
        self.fired: list[tuple[Step, dict[int, Any]]] = []  # steps whose change listeners are due

    def _restore(self) -> dict[int, Any]:
        page, conv = self.page, self.conversation
        values = page.initial_values()
        for key, value in (getattr(conv, "values", None) or {}).items():
            if str(key).isdigit() and int(key) in page.components:
                values[int(key)] = value
        if conv.chatbot:
            check_chatbot_format(conv.chatbot, page.messages_format)
            values[page.chatbot_id] = conv.chatbot
        elif values.get(page.chatbot_id) is None:
            values[page.chatbot_id] = []
        return values

    def record(self) -> None:
        """Write the page's values back to the conversation: it is continued from them."""
        page = self.page
        self.conversation.chatbot = self.values.get(page.chatbot_id) or []
        reads = {i for step in page.chain for i in step.inputs}
        reads |= {i for chains in page.listeners.values() for chain in chains for step in chain for i in step.inputs}
        self.conversation.values = {
            str(i): self.values.get(i)
            for i in sorted(reads)
            if i in page.components and i not in (page.input_id, page.chatbot_id) and not page.components[i].is_state
        }
        self.conversation.app_id = self.info.app_id

    async def follow(self, step: Step, trigger_id: int | None) -> AsyncGenerator[protocol.JobEvent, None]:
        """Submit one step as the page does and yield its events, within the deadlines.

        Left before its end (break, cancel, deadline, error), the step's job is handed to the
        turn's ending, which cancels it on the Space in the background: the caller is never held.
        """
        page, url, client, router = self.page, self.info.target.url, self.client, self.router
        session_hash = client.session_hash
        skipped = page.skipped_outputs(step)
        args = page.args(step, self.values)
        sent = self.values.get(page.chatbot_id) if page.chatbot_id in step.inputs else None

        def accept(outputs: list[Any]) -> bool:
            return _extends(page.chatbot_of(step, outputs), sent, step is page.answer_step)

        def accept_guess(outputs: list[Any]) -> bool:
            # read against the page's values, the messages before the last must come out as
            # they went in: a diff against another base would change or shift them
            chatbot = page.chatbot_of(step, outputs)
            kept = sent[:-1] if isinstance(sent, list) else []
            return accept(outputs) and isinstance(chatbot, list) and chatbot[: len(kept)] == kept

        guessable = step.generator and page.chatbot_id in step.outputs and isinstance(sent, list) and bool(sent)
        follower = protocol.JobFollower(
            url,
            page.protocol != "sse_v1",
            skipped,
            session.unfinished_bases(url, session_hash),
            accept=accept,
            own=session.own_events(url, session_hash),
            guess=(page.held(step, self.values), accept_guess) if guessable else None,
        )
        if router is not None:
            router.follower = follower
        try:
            job = bridge.submit(
                client,
                follower,
                step.fn_index,
                page.wire_data(step, self.values),
                args,
                page.event_fields(step, trigger_id),
                queued=step.queued,
                tapped=router is not None,
            )
        except Exception as exc:
            raise translate(exc, url) from None
        public = step.queued and router is None
        events = bridge.follow_job_public(job, skipped, url) if public else follower.events()
        result: list[Any] | None = None
        try:
            while True:
                try:
                    event = await self.clock.bounded(events.__anext__())
                except StopAsyncIteration:
                    return
                done = isinstance(event, protocol.Completed)
                follower.finished = follower.finished or done
                follower.succeeded = follower.succeeded or done
                if isinstance(event, protocol.Completed):
                    result = event.data
                if isinstance(event, protocol.Output) and step is page.answer_step:
                    self.last_outputs = event.data
                yield event
                if done:
                    return
        finally:
            await events.aclose()
            if follower.current is not None and step is page.answer_step:
                self.last_outputs = list(follower.current)
            if not follower.succeeded and step.generator:
                session.remember_unfinished(url, session_hash, follower.current)
            elif step.generator and not step.queued:
                # Gradio 4 runs an unqueued generator to its first yield and never ends its
                # stream: a later generator of the session that draws the same id() gets its
                # first update as a diff against this result (`JobFollower._rebase`).
                session.remember_unfinished(url, session_hash, result)
            if not follower.finished:
                client.left_unfinished = True
                self.unfinished.append(job)

    async def run_step(self, step: Step, trigger_id: int | None) -> list[Any]:
        """Run one step that is not the answer to completion; its outputs, in wire order."""
        before = dict(self.values)
        async with aclosing(self.follow(step, trigger_id)) as follow:
            async for event in follow:
                if isinstance(event, protocol.Completed):
                    self.page.apply(step, self.values, event.data)
                    await self.fire(step, before)
                    return event.data
        raise StreamInterruptedError(
            f"The Space at {self.info.target.url} ended a step without a result. Retry the request."
        )

    async def fire(self, step: Step, before: dict[int, Any]) -> None:
        """A step completed: run the `.change` listeners the previous step's outputs fired, and
        keep this step's for after the next one. The frontend sends a completed step's chained
        steps first and the change events its outputs caused on its next tick."""
        previous, self.fired = self.fired, [(step, before)]
        for fired, values in previous:
            await self.run_listeners(fired, values)

    async def flush(self) -> None:
        """Run the change listeners still kept (the chain is over)."""
        while self.fired:
            fired, values = self.fired.pop(0)
            await self.run_listeners(fired, values)

    async def run_listeners(self, step: Step, before: dict[int, Any], depth: int = 0) -> None:
        """Run the `.change` steps that `step`'s outputs fired, as the browser runs them: a
        component whose value a step changed triggers its change listeners (and their chains)."""
        if depth > LISTENER_DEPTH:
            return
        for comp_id in self.page.changed(step, before, self.values):
            for chain in self.page.listeners[comp_id]:
                await retrying(self.clock, partial(self.run_tree, chain, comp_id, depth + 1))

    async def run_tree(self, chain: tuple[Step, ...], trigger_id: int | None, depth: int = 0) -> None:
        """Run a chain that streams no answer: each step once its parent ran, `.success` steps
        only after a parent that succeeded (`only_on_success`), as the page runs a chain."""
        outcomes: dict[int, str] = {}
        for step in self.page.walk(chain, outcomes):
            before = dict(self.values)
            async with aclosing(self.follow(step, trigger_id)) as follow:
                async for event in follow:
                    if isinstance(event, protocol.Completed):
                        self.page.apply(step, self.values, event.data)
            outcomes[step.fn_index] = OK
            await self.run_listeners(step, before, depth)

    async def run_after(self, outcomes: dict[int, str], trigger_id: int | None) -> None:
        """The steps after the answer that the page runs (re-enabling the input, saving history).

        The answer is over, so a failure here is logged, not raised; each step is bounded.
        """
        for step in self.page.walk(self.page.after_answer, outcomes):
            try:
                with anyio.fail_after(TRAILING_STEP_LIMIT):
                    await self.run_step(step, trigger_id)
                outcomes[step.fn_index] = OK
                self.record()
            except (QwenSpaceError, TimeoutError) as exc:
                outcomes[step.fn_index] = FAILED
                log.warning("the step after the answer (fn %d) failed: %s", step.fn_index, exc)

    async def run_pending(self) -> None:
        """Run the steps the page runs after a stopped answer, left by the previous turn."""
        pending = getattr(self.conversation, "pending_steps", None) or []
        if not pending:
            return
        self.conversation.pending_steps = []
        if getattr(self.conversation, "app_id", None) != self.info.app_id:
            return  # another app: its page never ran that answer
        outcomes = {self.page.answer_step.fn_index: CANCELLED}
        steps = [step for step in self.page.after_answer if step.fn_index in pending]
        for step in self.page.walk(steps, outcomes):
            try:
                with anyio.fail_after(TRAILING_STEP_LIMIT):
                    await self.run_step(step, self.page.input_id)
                outcomes[step.fn_index] = OK
            except (QwenSpaceError, TimeoutError) as exc:
                outcomes[step.fn_index] = FAILED
                log.warning("the step after the stopped answer (fn %d) failed: %s", step.fn_index, exc)
        await self.flush()
        self.record()

    def keep_partial(self) -> None:
        """After an answer that did not complete, the page's chatbot keeps what it last showed,
        and the next turn sends that back: so does the conversation."""
        if self.last_outputs is not None:
            self.page.apply(self.page.answer_step, self.values, self.last_outputs)
        self.record()


LISTENER_DEPTH = 3  # change listeners that fire change listeners: bounded, a page never loops us


async def _upload(turn: Turn, opts: RequestOptions) -> list[dict[str, Any]]:
    files = []
    for attachment in opts.files:
        files.append(
            await retrying(
                turn.clock,
                partial(
                    workers.in_daemon_thread,
                    clients.upload,
                    turn.client,
                    attachment.name,
                    attachment.data,
                    attachment.mime_type,
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
    await turn.run_pending()
    turn.values[page.input_id] = page.user_value(prompt, await _upload(turn, opts))
    outcomes: dict[int, str] = {}
    if fresh:
        for step in page.walk(page.load_steps, outcomes):
            await retrying(clock, partial(turn.run_step, step, None))
            outcomes[step.fn_index] = OK
    trigger = page.input_id  # the page sends the submitting input's id with every step of its chain
    for step in page.walk(page.before_answer, outcomes):
        await retrying(clock, partial(turn.run_step, step, trigger))
        outcomes[step.fn_index] = OK
        # What the page holds now is what it sends next (the user's message may enter the
        # chatbot only at a later step): record it, so a retry after a failure below continues
        # the conversation instead of starting it again.
        turn.record()
        if step is page.chain[0]:
            conv.message_count = message_count  # the Space now holds the user's message
    answer = page.answer_step
    if not page.runs(answer, outcomes):
        raise APIChangedError("The Space's page skipped its answer step; update qwen_space_adapter.")
    if page.answer == 0:
        conv.message_count = message_count
    streamed = False
    before = dict(turn.values)

    async def answer_events() -> AsyncGenerator[protocol.JobEvent, None]:
        # Retries are only safe until the first update: after that, text reached the caller.
        for attempt in itertools.count():
            try:
                async with aclosing(turn.follow(answer, trigger)) as follow:
                    async for event in follow:
                        yield event
                return
            except QwenSpaceError as exc:
                if streamed:
                    raise
                await backoff(clock, attempt, exc)

    completed = kept = False
    try:
        async with aclosing(answer_events()) as events:
            async for event in events:
                if isinstance(event, protocol.Queued):
                    yield QueueStatus(event.position, event.queue_size, event.eta)
                    continue
                streamed = True
                final = isinstance(event, protocol.Completed)
                chatbot = page.chatbot_of(answer, event.data)
                if final:
                    if not tracker.emitted and not _holds_message(chatbot, prompt):
                        # The step that answers did not see this turn's message: the page held
                        # is not the page served. Never an empty answer: read the page again.
                        raise _StaleConfig("The Space's answer step did not receive the message.")
                    page.apply(answer, turn.values, event.data)
                    turn.record()
                    completed = True
                if chatbot is None:
                    continue
                for item in tracker.feed(answer_text(chatbot), final=final):
                    if isinstance(item, str):
                        clock.text_started = True
                    yield item
                clock.last_update = time.monotonic()
    except SpaceAppError:
        # The Space's own error: the page keeps the partial answer and still runs the `.then`
        # steps after the failed one (only `.success` steps are skipped).
        turn.keep_partial()
        kept = True
        outcomes[answer.fn_index] = FAILED
        await turn.run_after(outcomes, trigger)
        await turn.flush()
        raise
    finally:
        if not completed and not kept:
            turn.keep_partial()
            # The page runs the steps after a stopped answer (a cancel completes the event): they
            # run before the conversation's next turn, so the caller who left is not held.
            conv.pending_steps = [step.fn_index for step in page.after_answer]
    for item in tracker.finish():  # text held back for a last update that carried no chatbot
        yield item
    outcomes[answer.fn_index] = OK
    await turn.fire(answer, before)
    await turn.run_after(outcomes, trigger)
    await turn.flush()
    turn.record()


def _holds_message(chatbot: Any, prompt: str) -> bool:
    """Whether a chatbot value holds `prompt` (the user's message of this turn) anywhere."""
    needle = json.dumps(prompt.strip(), ensure_ascii=False)[1:-1][:200]
    return not needle or needle in json.dumps(chatbot, ensure_ascii=False, default=str)


async def run_turn(
    conversation: JsonConversation, prompt: str, opts: RequestOptions, message_count: int
) -> AsyncGenerator[Item | QueueStatus, None]:
    """Send `prompt` in `conversation`'s session and yield answer deltas and status events.

    The session's gate is opened by the turn's ending (`ending.end_turn`), which runs in the
    background once the caller is done: the next turn of the conversation waits for it.
    """
    clock = Clock(opts, time.monotonic())
    target = opts.target
    gate = session.gate(target.url, conversation.session_hash)
    await clock.bounded(gate.acquire())
    tracker = DeltaTracker()
    turn: Turn | None = None
    before = _state(conversation)
    try:
        info = await retrying(clock, lambda: config_cache.space_info(target, opts.connect_timeout))
        conversation.space = target.url
        healed = False
        while True:
            turn = Turn(conversation, info, clock)
            try:
                attempt = _attempt(turn, prompt, opts, message_count, tracker)
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
                if turn.ending is not None:
                    # The attempt's client must be over (its reader ended) before another opens.
                    await clock.bounded(turn.ending.wait())
                _restore_state(conversation, before)  # what the other page's steps gave is not kept
                info = await retrying(clock, partial(config_cache.space_info, target, opts.connect_timeout, stale=old))
                if info.app_id == old.app_id and isinstance(exc, _StaleConfig) and exc.restart:
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
        last = turn.ending if turn is not None else None
        if last is not None:
            last.then(gate.release)
        else:
            gate.release()


async def _attempt(
    turn: Turn,
    prompt: str,
    opts: RequestOptions,
    message_count: int,
    tracker: DeltaTracker,
) -> AsyncGenerator[Item | QueueStatus, None]:
    """One run of the chain on a client of its own, whose ending is started before returning."""
    conversation, info, clock = turn.conversation, turn.info, turn.clock
    turn.client = clients.open_client(info, conversation.session_hash, opts.connect_timeout)
    try:
        # The Space's page is only the one this process holds while its app is the one that
        # served it: one small request tells, before any step runs (a step of another page
        # would run whatever now sits at its fn index). A conversation with history also needs
        # the app that holds it.
        live = await clock.bounded(workers.in_daemon_thread(clients.live_app_id, turn.client))
        if live is not None and live != info.app_id:
            raise _StaleConfig("The Space restarted since this process read its page.", restart=True)
        recorded = getattr(conversation, "app_id", None)
        if recorded is not None and _has_history(conversation) and recorded != info.app_id:
            raise _restarted(info.target.url)
        turn.router = bridge.install_tap(turn.client)
        chain = _run_chain(turn, prompt, opts, message_count, tracker)
        async with aclosing(chain):
            async for item in chain:
                yield item
    finally:
        if turn.router is not None:
            turn.router.follower = None
        turn.ending = ending.end_turn(turn.client, turn.unfinished)


async def close_conversation(conversation: JsonConversation, opts: RequestOptions) -> None:
    """End the conversation's session on the Space, as a closing browser tab does (see
    `clients.close_session`), once its last turn is over (the session's gate)."""
    clock = Clock(opts, time.monotonic())
    gate = session.gate(opts.target.url, conversation.session_hash)
    await clock.bounded(gate.acquire())
    try:
        info = await retrying(clock, lambda: config_cache.space_info(opts.target, opts.connect_timeout))
        client = clients.open_client(info, conversation.session_hash, opts.connect_timeout)
        try:
            await retrying(clock, partial(workers.in_daemon_thread, clients.close_session, client))
        finally:
            clients.close_client(client, wait=False)
    finally:
        gate.release()


class _StaleConfig(APIChangedError):
    """The Space's app is not the one whose page this process holds: read the page again."""

    def __init__(self, message: str, restart: bool = False) -> None:
        super().__init__(message)
        self.restart = restart  # the Space said its app changed (a new app id)


_STATE = ("chatbot", "values", "message_count", "app_id")


def _state(conversation: JsonConversation) -> dict[str, Any]:
    # References suffice: a turn replaces these values, it never changes them in place.
    return {name: getattr(conversation, name, None) for name in _STATE}


def _restore_state(conversation: JsonConversation, state: dict[str, Any]) -> None:
    for name, value in state.items():
        setattr(conversation, name, value)


def _has_history(conversation: JsonConversation) -> bool:
    return bool(conversation.chatbot) or bool(conversation.message_count)


def _restarted(url: str) -> SpaceRestartedError:
    return SpaceRestartedError(
        f"The Space at {url} restarted since this conversation began, and lost its history on "
        "the server. Start a new conversation (conversation=None), passing the earlier turns "
        "as messages if the answer needs them."
    )
