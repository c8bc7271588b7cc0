"""`Qwen_Qwen_2_5M`: the g4f provider of that name for the Qwen2.5-1M-Demo Space, backed by gradio_client jobs.

Thin on purpose: it checks the call, resolves the model, and hands one turn to `turn.run_turn`.
Attributes and the `create_async_generator` signature are those of the original g4f provider, so
code written for it (and g4f itself) keeps working.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import sniffio

from .constants import DEFAULT_MODEL, DEFAULT_SPACE_URL, MODEL_ALIASES
from .conversation import JsonConversation, check_conversation, generate_session_hash
from .errors import InvalidRequestError, ModelNotSupportedError
from .events import StreamEvent
from .messages import build_prompt, validate_messages
from .options import check_model, own_url, parse_options

StreamItem = str | StreamEvent | JsonConversation


@dataclass
class Answer:
    """A whole answer: its text, the conversation to continue, and the events seen on the way."""

    text: str
    conversation: JsonConversation | None
    events: list[StreamEvent] = field(default_factory=list)

    def __str__(self) -> str:
        return self.text


def collect(items: Iterable[StreamItem]) -> Answer:
    """Gather a stream into an `Answer`, honouring `TextRewritten` events."""
    from .events import TextRewritten

    text, conv, events = "", None, []
    for item in items:
        if isinstance(item, str):
            text += item
        elif isinstance(item, JsonConversation):
            conv = item
        else:
            events.append(item)
            if isinstance(item, TextRewritten):
                text = item.text
    return Answer(text, conv, events)


class Qwen_Qwen_2_5M:
    """The Qwen2.5-1M-Demo Space as a streaming chat provider."""

    label: ClassVar[str] = "Qwen Qwen-2.5M"
    url: ClassVar[str] = DEFAULT_SPACE_URL
    api_endpoint: ClassVar[str] = f"{DEFAULT_SPACE_URL}/run/predict?__theme=light"
    working: ClassVar[bool] = True
    supports_stream: ClassVar[bool] = True
    supports_system_message: ClassVar[bool] = True
    supports_message_history: ClassVar[bool] = True
    default_model: ClassVar[str] = DEFAULT_MODEL
    model_aliases: ClassVar[dict[str, str]] = dict(MODEL_ALIASES)
    models: ClassVar[list[str]] = [default_model]

    @classmethod
    def get_model(cls, model: str | None) -> str:
        """Resolve an alias, or the default for an empty name; refuse anything else."""
        model = check_model(model)
        if not model:
            return cls.default_model
        if model in cls.models:
            return model
        if model in cls.model_aliases:
            return cls.model_aliases[model]
        valid = ", ".join(sorted([*cls.models, *cls.model_aliases]))
        raise ModelNotSupportedError(f"Model {model!r} is not served by {cls.label}; use one of: {valid}.")

    @classmethod
    def create_async_generator(
        cls,
        model: str,
        messages: Any,
        proxy: str | None = None,
        return_conversation: bool = False,
        conversation: JsonConversation | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[StreamItem, None]:
        """Stream an answer: `str` deltas, plus status events and (optionally) the conversation.

        Everything about the call is checked here, before the generator starts, so bad input
        raises at this line and nothing is sent. Options: `space`, `hf_token`, `files`,
        `timeout`, `first_token_timeout`, `idle_timeout`, `connect_timeout`, `max_retries`,
        `retry_backoff`, `verify` (see `options.parse_options`). The Space is, in order: `space=`,
        the conversation's own Space, a subclass's `url`, `$QWEN_SPACE`, the default.
        """
        resolved = cls.get_model(model)
        msgs = validate_messages(messages)
        conv = check_conversation(conversation)
        opts = parse_options(
            proxy,
            kwargs,
            class_url=own_url(cls, Qwen_Qwen_2_5M),
            conversation_space=getattr(conv, "space", None),
        )
        conv = check_conversation(conv, opts.target.url)
        if conv is not None and getattr(conv, "closed", False):
            raise InvalidRequestError(
                "This conversation was closed (close_conversation): the Space let its session go. "
                "Start a new conversation (conversation=None), passing the earlier turns as messages."
            )
        seen = 0
        if conv is None:
            conv = JsonConversation(
                session_hash=generate_session_hash(),
                space=opts.target.url,
                model=resolved,
                chatbot=[],
                message_count=0,
            )
        else:
            seen = getattr(conv, "message_count", 0) or 0
            conv.model = resolved
        prompt = build_prompt(msgs, new_from=seen)
        return cls._stream(conv, prompt, opts, len(msgs), return_conversation)

    @classmethod
    async def aclose_conversation(cls, conversation: JsonConversation, **kwargs: Any) -> None:
        """Close a conversation on the Space, as its browser tab does when it closes.

        The Space then runs its page's unload steps and frees the session's state an hour later
        (on this demo, up to megabytes of documents per session) instead of keeping it until its
        session cap evicts it. The conversation cannot be continued after. Options as for
        `create_async_generator` (`space`, `hf_token`, `timeout`, `connect_timeout`...).
        """
        if not isinstance(conversation, JsonConversation):
            raise InvalidRequestError(
                f"aclose_conversation takes a JsonConversation, got {type(conversation).__name__}."
            )
        conv = check_conversation(conversation)
        opts = parse_options(
            None, kwargs, class_url=own_url(cls, Qwen_Qwen_2_5M), conversation_space=getattr(conv, "space", None)
        )
        if getattr(conv, "closed", False):
            return
        await (await _turn_module()).close_conversation(conv, opts)
        conversation.closed = True

    @classmethod
    def close_conversation(cls, conversation: JsonConversation, **kwargs: Any) -> None:
        """The synchronous twin of `aclose_conversation`."""
        from .sync import iterate

        async def closing() -> AsyncGenerator[None, None]:
            await cls.aclose_conversation(conversation, **kwargs)
            return
            yield  # an async generator: what `iterate` drives

        for _ in iterate(closing):
            pass

    @classmethod
    @asynccontextmanager
    async def stream(cls, model: str, messages: Any, **kwargs: Any) -> AsyncIterator[AsyncGenerator[StreamItem, None]]:
        """`create_async_generator` as an async context manager, closed at the block's end.

        Leaving the block, by `break`, an exception or cancellation, cancels the answer on the
        Space right there, not when the generator is garbage-collected.
        """
        agen = cls.create_async_generator(model, messages, **kwargs)
        try:
            yield agen
        finally:
            await agen.aclose()

    @classmethod
    def create_completion(
        cls,
        model: str,
        messages: Any,
        proxy: str | None = None,
        return_conversation: bool = False,
        conversation: JsonConversation | None = None,
        **kwargs: Any,
    ) -> Iterator[StreamItem]:
        """The synchronous twin of `create_async_generator`: the same items, from a plain loop.

        Works inside a running event loop too (Jupyter): the stream runs on a loop of its own.
        """
        from .sync import iterate  # anyio's thread portal, imported only by sync callers

        return iterate(
            cls.create_async_generator,
            model,
            messages,
            proxy=proxy,
            return_conversation=return_conversation,
            conversation=conversation,
            **kwargs,
        )

    @classmethod
    def ask(
        cls,
        prompt: str | Any,
        *,
        model: str | None = None,
        conversation: JsonConversation | None = None,
        **kwargs: Any,
    ) -> Answer:
        """One call, whole answer: `ask("Hi").text`; `.conversation` continues it.

        `prompt` is a user message string or a full `messages` list.
        """
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return collect(
            cls.create_completion(
                model or cls.default_model,
                messages,
                return_conversation=True,
                conversation=conversation,
                **kwargs,
            )
        )

    @classmethod
    async def ask_async(
        cls,
        prompt: str | Any,
        *,
        model: str | None = None,
        conversation: JsonConversation | None = None,
        **kwargs: Any,
    ) -> Answer:
        """The async twin of `ask`."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        stream = cls.create_async_generator(
            model or cls.default_model,
            messages,
            return_conversation=True,
            conversation=conversation,
            **kwargs,
        )
        return collect([item async for item in stream])

    @staticmethod
    async def _stream(
        conv: JsonConversation, prompt: str, opts: Any, count: int, return_conversation: bool
    ) -> AsyncGenerator[StreamItem, None]:
        # gradio_client and anyio load with the first answer, not at import, and off the loop.
        run_turn = (await _turn_module()).run_turn

        if return_conversation:
            yield conv
        turn = run_turn(conv, prompt, opts, count)
        try:
            async for item in turn:
                yield item
        finally:
            await turn.aclose()


_TURN = "qwen_space_adapter.turn"
_LOADING = threading.Lock()
_WAKE: list[Callable[[], None]] | None = None  # while the import thread runs: whom to wake


async def _turn_module() -> Any:
    """`qwen_space_adapter.turn`, imported on one daemon thread the first time (issue 19, item 9).

    Its import (gradio_client, httpx, anyio) takes 0.2 s or more: on the caller's loop, the first
    answer of a process would stall every other task that long. A hundred first calls at once
    share one import thread. The wait is the running framework's own (asyncio or trio), as
    nothing else is loaded yet.
    """
    global _WAKE
    module = sys.modules.get(_TURN)
    if module is not None and getattr(module, "run_turn", None) is not None:
        return module
    library = sniffio.current_async_library()
    if library == "trio":
        import trio

        token, event = trio.lowlevel.current_trio_token(), trio.Event()

        def wake() -> None:
            token.run_sync_soon(event.set)

        wait = event.wait
    else:
        import asyncio

        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def settle() -> None:
            if not future.done():
                future.set_result(None)

        def wake() -> None:
            loop.call_soon_threadsafe(settle)

        async def wait() -> None:
            await asyncio.shield(future)

    def load() -> None:
        global _WAKE
        try:
            importlib.import_module(_TURN)
            # anyio imports its backend for this library on first use: here, not on the loop.
            importlib.import_module(f"anyio._backends._{library}")
        except BaseException:
            pass  # imported again below, on the caller's side, where the error is raised
        with _LOADING:
            waiting, _WAKE = _WAKE or [], None
        for notify in waiting:
            try:
                notify()
            except RuntimeError:
                pass  # that loop closed meanwhile

    with _LOADING:
        start = _WAKE is None and getattr(sys.modules.get(_TURN), "run_turn", None) is None
        if start:
            _WAKE = []
        if _WAKE is not None:
            _WAKE.append(wake)
        else:
            wake()  # loaded between the first look and now
    if start:
        threading.Thread(target=load, name="qwen-space import", daemon=True).start()
    await wait()
    return importlib.import_module(_TURN)
