"""One request's answer: which Space session answers it, the adapter's stream, and filing the result.

A request continues a Space session when its earlier messages are exactly a history this server
answered (found by digest in the `SessionStore`) and it adds one user message: the adapter then
sends only that message. Anything else starts a new session, the earlier turns sent as context, as
the adapter does without a conversation. A continued session whose Space restarted (the adapter
raises `SpaceRestartedError` before anything streams) is answered in a new session with the whole
history as context: the client sent it, so nothing is lost, and it is no error.

Attachments reach the adapter as files (its `files=` takes paths and reads them once, at the call):
they are written to a private temporary folder, under the client's file name (the Space shows it),
and the folder is gone before the first byte is sent to the Space.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..conversation import JsonConversation
from ..errors import InvalidRequestError, SpaceRestartedError
from ..events import StreamEvent, Summary, TextRewritten
from ..provider import Qwen_Qwen_2_5M
from .request import Attachment, ChatRequest, Message
from .store import SessionStore, history_key


@dataclass
class Context:
    """What every turn of one server shares: the store, the provider, the Space, the adapter's options."""

    store: SessionStore
    provider: type[Qwen_Qwen_2_5M] = Qwen_Qwen_2_5M
    space: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def _adapter_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _write_files(files: Sequence[Attachment]) -> tuple[str | None, list[str]]:
    """The attachments as files in a fresh private folder (names made unique), for `files=`."""
    if not files:
        return None, []
    folder = tempfile.mkdtemp(prefix="qwen-serve-")
    paths = []
    for i, f in enumerate(files):
        sub = Path(folder, str(i))  # one sub-folder each, so two files may share a name
        sub.mkdir()
        path = sub / f.filename
        path.write_bytes(f.data)
        paths.append(str(path))
    return folder, paths


class Turn:
    """One answer. `items()` yields the adapter's deltas and events; afterwards `session_hash`,
    `continued` and `text` say which session answered and what (rewrites applied)."""

    def __init__(self, request: ChatRequest, ctx: Context) -> None:
        self.request = request
        self.ctx = ctx
        self.conversation: JsonConversation | None = None
        self.continued = False
        self.restarted = False  # the claimed session's Space had restarted: answered in a new one
        self.text = ""
        self.reasoning = ""
        self.summary: str | None = None
        self.completed = False

    @property
    def session_hash(self) -> str | None:
        return getattr(self.conversation, "session_hash", None)

    def _claim(self) -> JsonConversation | None:
        earlier = self.request.messages[:-1]
        if not earlier or earlier[-1].role != "assistant":
            return None  # a first message, or a history this server cannot have answered last
        data = self.ctx.store.claim(history_key(earlier))
        return JsonConversation.from_dict(data) if data is not None else None

    def _open(self, conversation: JsonConversation | None) -> AsyncGenerator[Any, None]:
        messages = self.request.messages
        # a continued session already holds the earlier files; a new one gets every file as context
        files = messages[-1].files if conversation is not None else tuple(f for m in messages for f in m.files)
        folder, paths = _write_files(files)
        kwargs = dict(self.ctx.options)
        if self.ctx.space is not None and conversation is None:
            kwargs["space"] = self.ctx.space
        if paths:
            kwargs["files"] = paths
        try:
            return self.ctx.provider.create_async_generator(
                self.request.model,
                _adapter_messages(messages),
                return_conversation=True,
                conversation=conversation,
                **kwargs,
            )
        except InvalidRequestError as e:  # name the client's file, not our temporary copy of it
            text = str(e)
            for path, f in zip(paths, files, strict=True):
                text = text.replace(repr(path), repr(f.filename))
            raise InvalidRequestError(text) from None
        finally:  # the adapter read the files at the call
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    async def items(self) -> AsyncGenerator[str | StreamEvent, None]:
        conversation = self._claim()
        self.continued = conversation is not None
        while True:
            stream = self._open(conversation)
            yielded = False
            try:
                async for item in stream:
                    if isinstance(item, JsonConversation):
                        self.conversation = item
                        continue
                    yielded = True
                    if isinstance(item, str):
                        self.text += item
                    elif isinstance(item, TextRewritten):
                        self.text = item.text
                    elif isinstance(item, Summary):
                        self.summary = item.text
                    yield item
            except SpaceRestartedError:
                if yielded or conversation is None:
                    raise
                conversation, self.continued, self.restarted = None, False, True
                continue  # the whole history as context, in a new session
            finally:
                await stream.aclose()
            break
        self.completed = True
        if self.conversation is not None:
            answered = (*self.request.messages, Message("assistant", self.text))
            self.ctx.store.put(history_key(answered), self.conversation.get_dict())


__all__ = ["Context", "Turn"]
