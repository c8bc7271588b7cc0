"""The adapter's stream items as OpenAI chat-completion chunks (SSE frames) and responses.

| adapter item | chunk |
|---|---|
| `str` delta | `choices[0].delta.content` |
| `QueueStatus` | `choices[0].delta.reasoning_content` (one line, positions from 1) and `qwen.queue` |
| `Reasoning` | `choices[0].delta.reasoning_content` (its status, one line) and `qwen.status` |
| `Summary` | an empty delta with `qwen.summary` (the Space's metadata block, kept out of the answer) |
| `TextRewritten` | an empty delta with `qwen.rewrite` = `{text, previous}`: replace what was shown with `text` |

`reasoning_content` is the field reasoning-aware clients (Open WebUI, LiteLLM, LangChain) show as
"thinking"; the top-level `qwen` object is an extra field that OpenAI's SDKs keep and every client
that does not know it ignores. Frames are built from pre-encoded fragments, since a delta is the
hot path: one `json.dumps` of the text per delta, nothing else.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

from ..events import QueueStatus, Reasoning, Summary, TextRewritten

DONE = b"data: [DONE]\n\n"


def queue_line(event: QueueStatus) -> str:
    """A queue status for people (the Space's rank 0 is position 1, next in line)."""
    return "Waiting in the Space's queue" + event.where() + ".\n"


def event_fields(item: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(delta, qwen) for a status event, or None for an item that makes no chunk."""
    if isinstance(item, QueueStatus):
        position = None if item.position is None else item.position + 1
        queue = {"position": position, "queue_size": item.queue_size, "eta": item.eta}
        return {"reasoning_content": queue_line(item)}, {"queue": queue}
    if isinstance(item, Reasoning):
        status = item.status or "Qwen is thinking..."
        return {"reasoning_content": status + "\n"}, {"status": status}
    if isinstance(item, Summary):
        return {}, {"summary": item.text}
    if isinstance(item, TextRewritten):
        return {}, {"rewrite": {"text": item.text, "previous": item.previous}}
    return None


def estimate_tokens(chars: int) -> int:
    """A token count for `usage` (the Space reports none): about four characters a token."""
    return math.ceil(chars / 4)


def usage(prompt_chars: int, completion_chars: int) -> dict[str, int]:
    p, c = estimate_tokens(prompt_chars), estimate_tokens(completion_chars)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


class ChunkEncoder:
    """SSE frames of one streamed completion: same id, creation time and model in every chunk."""

    def __init__(self, model: str, completion_id: str | None = None) -> None:
        self.id = completion_id or f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self._head = (
            'data: {"id":'
            + json.dumps(self.id)
            + ',"object":"chat.completion.chunk","created":'
            + str(self.created)
            + ',"model":'
            + json.dumps(model)
            + ","
        )
        self._content_head = (self._head + '"choices":[{"index":0,"delta":{"content":').encode()
        self._content_tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        self._last_reasoning: str | None = None

    def _frame(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        body = json.dumps({"choices": [choice], **extra}, ensure_ascii=False, separators=(",", ":"))
        return (self._head + body[1:] + "\n\n").encode()

    def role(self) -> bytes:
        """The first chunk: the assistant's role, no content yet (as OpenAI sends it)."""
        return self._frame({"role": "assistant", "content": ""})

    def content(self, text: str) -> bytes:
        return self._content_head + json.dumps(text, ensure_ascii=False).encode() + self._content_tail

    def event(self, item: Any) -> bytes | None:
        """The chunk of a status event, or None (an unknown item, or a status repeated as is)."""
        fields = event_fields(item)
        if fields is None:
            return None
        delta, qwen = fields
        line = delta.get("reasoning_content")
        if line is not None:
            if line == self._last_reasoning:
                return None  # the Space re-sends a status unchanged; a client needs it once
            self._last_reasoning = line
        return self._frame(delta, qwen=qwen)

    def finish(self, reason: str = "stop") -> bytes:
        return self._frame({}, reason)

    def usage(self, prompt_chars: int, completion_chars: int) -> bytes:
        body = json.dumps({"choices": [], "usage": usage(prompt_chars, completion_chars)}, separators=(",", ":"))
        return (self._head + body[1:] + "\n\n").encode()

    @staticmethod
    def error(body: dict[str, Any]) -> bytes:
        """An error after streaming began: one `data:` frame with OpenAI's error object (the SDKs raise it)."""
        return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


def completion(
    model: str,
    text: str,
    *,
    reasoning: str,
    qwen: dict[str, Any],
    prompt_chars: int,
    completion_id: str | None = None,
) -> dict[str, Any]:
    """A whole (non-streamed) completion: the final text, rewrites applied, the summary in `qwen`."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if reasoning:
        message["reasoning_content"] = reasoning
    return {
        "id": completion_id or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": usage(prompt_chars, len(text)),
        "qwen": qwen,
    }


__all__ = ["DONE", "ChunkEncoder", "completion", "event_fields", "queue_line", "usage"]
