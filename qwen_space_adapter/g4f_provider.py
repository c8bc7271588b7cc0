"""A g4f-native `Qwen_Qwen_2_5M` provider: use this adapter from g4f's own client.

    from g4f.client import AsyncClient
    from qwen_space_adapter.g4f_provider import Qwen_Qwen_2_5M

    client = AsyncClient(provider=Qwen_Qwen_2_5M)
    async for chunk in client.chat.completions.create(model="qwen-2.5-1m", messages=msgs, stream=True):
        print(chunk.choices[0].delta.content or "", end="")

Our core provider already has g4f's shape, but g4f's client only understands g4f's *own* response
types: it recognises a conversation only if it is a `g4f.providers.response.JsonConversation`
(ours would be concatenated into the text) and shows reasoning only for its own `Reasoning`
(ours would arrive as an empty text chunk). This module is the translation layer: it subclasses
g4f's `AsyncGeneratorProvider` and `ProviderModelMixin`, delegates every request to the core
provider and converts each item on the way out, and a g4f conversation on the way back in.

g4f is an optional dependency (`pip install "qwen_space_adapter[g4f]"`); it is imported here and
nowhere else, so the core adapter never pays for it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

try:
    from g4f.providers.base_provider import AsyncGeneratorProvider, ProviderModelMixin
    from g4f.providers.response import HiddenResponse
    from g4f.providers.response import JsonConversation as G4FJsonConversation
    from g4f.providers.response import Reasoning as G4FReasoning
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'qwen_space_adapter.g4f_provider needs g4f, which is an optional extra: pip install "qwen_space_adapter[g4f]"'
    ) from exc

from .conversation import JsonConversation
from .events import QueueStatus, Reasoning, StreamEvent, Summary, TextRewritten
from .provider import Qwen_Qwen_2_5M as CoreProvider
from .sync import iterate

log = logging.getLogger("qwen_space_adapter")

# Keyword arguments g4f's client adds on its own (or enforces itself, like `stop` and
# `max_tokens`, which it applies to the text it receives). Passing them on would only make the
# core warn that the Space has no such setting, on every single call.
G4F_PLUMBING = frozenset({"stream", "provider", "base_url", "stop", "max_tokens", "stream_timeout", "ignore_stream"})


class SpaceSummary(HiddenResponse):
    """The Space's metadata block (our `Summary`): hidden, so g4f keeps it out of the answer."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return ""


class SpaceTextRewritten(HiddenResponse):
    """The Space changed text already streamed (our `TextRewritten`).

    g4f has no way to take back a chunk, so its clients keep the old text; this hidden item lets
    code that iterates the provider directly repair what it shows.
    """

    def __init__(self, text: str, previous: str) -> None:
        self.text = text
        self.previous = previous

    def __str__(self) -> str:
        return ""


def queue_status_text(event: QueueStatus) -> str:
    """A status line for a queued job, as g4f front ends show `Reasoning.status`."""
    parts = ["Waiting in the Space's queue"]
    if event.position is not None:
        where = f"position {event.position + 1}"
        if event.queue_size:
            where += f" of {event.queue_size}"
        parts.append(where)
    line = ": ".join(parts)
    if event.eta is not None and event.eta >= 1:
        line += f" (about {event.eta:.0f} s)"
    return line


def to_g4f_event(event: StreamEvent) -> Any:
    """Our status event as the g4f response type that plays the same role, or None to drop it."""
    if isinstance(event, Reasoning):
        return G4FReasoning(token=event.token, status=event.status)
    if isinstance(event, QueueStatus):
        return G4FReasoning(status=queue_status_text(event))
    if isinstance(event, Summary):
        return SpaceSummary(event.text)
    if isinstance(event, TextRewritten):
        log.warning(
            "The Space rewrote %d characters of text already streamed; g4f clients cannot take "
            "chunks back, so their concatenated text may differ from the Space's answer.",
            len(event.previous),
        )
        return SpaceTextRewritten(event.text, event.previous)
    return None


def sync_conversation(target: Any, source: JsonConversation) -> None:
    """Copy our conversation's state onto the g4f conversation the caller holds.

    The core updates its conversation in place as the turn progresses (session hash first, the
    chatbot and message count once the Space has them), and g4f reads the conversation only
    after the stream ends, so copying at the end hands the caller the state it must send back.
    """
    target.__dict__.update(source.get_dict())


class Qwen_Qwen_2_5M(AsyncGeneratorProvider, ProviderModelMixin):
    """The Qwen2.5-1M-Demo Space as a g4f provider, conversation and reasoning included.

    Bind another Space (a duplicate, a local replica) by subclassing with `url = "..."`, or pass
    `space=` per call; every option of the core provider (`files=`, `hf_token=`, `timeout=`...)
    passes through g4f's client as a keyword argument. g4f's `api_key` is the Hugging Face token
    when no `hf_token` is given.
    """

    core: ClassVar[type[CoreProvider]] = CoreProvider
    label = CoreProvider.label
    url = CoreProvider.url
    working = True
    needs_auth = False
    supports_stream = True
    supports_system_message = True
    supports_message_history = True
    default_model = CoreProvider.default_model
    models: ClassVar[list[str]] = list(CoreProvider.models)
    model_aliases: ClassVar[dict[str, str]] = dict(CoreProvider.model_aliases)

    @classmethod
    def get_model(cls, model: str | None, **kwargs: Any) -> str:
        """g4f's `""`/`"auto"` mean the default model; anything else must be one we serve."""
        if not model or model == "auto":
            return cls.default_model
        return cls.core.get_model(model)

    @classmethod
    def _core(cls) -> type[CoreProvider]:
        """The core provider, bound to this class's `url` when a subclass changed it."""
        if cls.url == cls.core.url:
            return cls.core
        return type(f"{cls.__name__}Core", (cls.core,), {"url": cls.url})

    @staticmethod
    def _core_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
        kw = {k: v for k, v in kwargs.items() if k not in G4F_PLUMBING}
        api_key = kw.pop("api_key", None)
        if api_key and kw.get("hf_token") is None:
            kw["hf_token"] = api_key
        return kw

    @classmethod
    async def create_async_generator(  # type: ignore[override]
        cls,
        model: str,
        messages: Any,
        proxy: str | None = None,
        conversation: Any = None,
        return_conversation: bool = True,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """Stream `str` deltas and g4f response types (`Reasoning`, `JsonConversation`...).

        `return_conversation` defaults to True, unlike the core's: g4f's client expects a
        provider to yield its conversation, and without it a second call cannot continue the
        Space's session. A g4f `JsonConversation` passed back is updated in place, so the object
        in g4f's own conversation cache stays current too.
        """
        stream = cls._core().create_async_generator(
            cls.get_model(model),
            messages,
            proxy=proxy,
            return_conversation=True,
            conversation=conversation,
            **cls._core_kwargs(kwargs),
        )
        g4f_conv = conversation if isinstance(conversation, G4FJsonConversation) else None
        ours: JsonConversation | None = None
        try:
            async for item in stream:
                if isinstance(item, str):
                    yield item
                elif isinstance(item, JsonConversation):
                    ours = item
                    if g4f_conv is None:
                        g4f_conv = G4FJsonConversation()
                    sync_conversation(g4f_conv, ours)
                    if return_conversation:
                        yield g4f_conv
                else:
                    converted = to_g4f_event(item)
                    if converted is not None:
                        yield converted
        finally:
            if ours is not None and g4f_conv is not None:
                sync_conversation(g4f_conv, ours)
            await stream.aclose()

    @classmethod
    def create_completion(
        cls,
        model: str,
        messages: Any,
        proxy: str | None = None,
        conversation: Any = None,
        return_conversation: bool = True,
        **kwargs: Any,
    ) -> Iterator[Any]:
        """The same items synchronously, for g4f's sync `Client`.

        Defined so that g4f uses it instead of its own async-to-sync bridge, which needs
        `nest_asyncio` inside a running loop (Jupyter); ours runs the stream on a loop of its own.
        """
        return iterate(
            cls.create_async_generator,
            model,
            messages,
            proxy=proxy,
            conversation=conversation,
            return_conversation=return_conversation,
            **kwargs,
        )


__all__ = ["G4F_PLUMBING", "Qwen_Qwen_2_5M", "SpaceSummary", "SpaceTextRewritten", "to_g4f_event"]
