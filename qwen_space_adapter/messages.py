"""Message validation and prompt building, done before anything is sent.

The Space's web UI has one text box, so every request becomes one user prompt. A new
conversation with earlier turns or a system message sends them as context in g4f's
`format_prompt` layout ("System: ...", "User: ...", "Assistant: ..."), which instruction-tuned
models read naturally; a continued conversation sends only the new user message, because the
Space already holds the history of its session.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequestError

ROLES = ("system", "user", "assistant")
# Qwen2.5-1M reads up to 1M tokens, about 4 MB of English. A prompt beyond that cannot fit;
# refuse it here rather than after a long upload.
MAX_PROMPT_CHARS = 4_000_000
# A lone surrogate (half of a UTF-16 pair, e.g. from a bad JSON decode) cannot be encoded as
# UTF-8, so the request would fail deep inside the HTTP client; refuse it here with its place.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


def _text(where: str, text: str) -> str:
    """`text`, unless it holds a lone surrogate: then an error naming where."""
    bad = LONE_SURROGATE.search(text)
    if bad:
        raise InvalidRequestError(
            f"{where} has a lone surrogate (U+{ord(bad.group()):04X}) at character {bad.start()}: "
            "half of a UTF-16 pair, not text, so it cannot be sent. Remove or replace it; it "
            "usually comes from a broken JSON or UTF-16 decode."
        )
    return text


def _content_text(index: int, content: Any) -> str:
    if isinstance(content, str):
        return _text(f"messages[{index}].content", content)
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                parts.append(_text(f"messages[{index}].content[{j}]", part))
            elif isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                parts.append(_text(f"messages[{index}].content[{j}].text", part["text"]))
            else:
                raise InvalidRequestError(
                    f"messages[{index}].content[{j}] is not a text part: expected a string or "
                    "{'type': 'text', 'text': '...'}; attach documents with files=[...] instead."
                )
        return "\n".join(parts)
    raise InvalidRequestError(
        f"messages[{index}].content must be a string or a list of text parts, got {type(content).__name__}."
    )


def validate_messages(messages: Any) -> list[Message]:
    """Check the caller's messages and normalise their content to text."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise InvalidRequestError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}."
        )
    if not messages:
        raise InvalidRequestError("messages is empty: pass at least one user message.")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidRequestError(
                f"messages[{i}] must be a dict with 'role' and 'content', got {type(m).__name__}."
            )
        role = m.get("role")
        if role not in ROLES:
            raise InvalidRequestError(f"messages[{i}] has role {role!r}; use one of {', '.join(ROLES)}.")
        if "content" not in m:
            raise InvalidRequestError(f"messages[{i}] has no 'content'.")
        out.append(Message(role, _content_text(i, m["content"])))
    if out[-1].role != "user":
        raise InvalidRequestError(
            f"The last message (messages[{len(out) - 1}]) has role {out[-1].role!r}; the last "
            "message must be the user's, since that is what the Space answers."
        )
    if not out[-1].content.strip():
        raise InvalidRequestError(f"messages[{len(out) - 1}] (the user's message) is empty.")
    return out


def build_prompt(messages: list[Message], *, new_from: int = 0) -> str:
    """The one prompt to type into the Space for `messages[new_from:]`.

    `new_from` is how many messages the Space's session has already seen: a continued
    conversation sends only the last user message.
    """
    if new_from > 0:
        prompt = messages[-1].content
    elif len(messages) == 1:
        prompt = messages[0].content
    else:
        lines = [f"{m.role.capitalize()}: {m.content}" for m in messages]
        prompt = "\n".join(lines) + "\nAssistant:"
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequestError(
            f"The prompt has {len(prompt):,} characters, over the {MAX_PROMPT_CHARS:,} that "
            "Qwen2.5-1M can read (about 1M tokens). Shorten it or drop earlier messages."
        )
    return prompt
