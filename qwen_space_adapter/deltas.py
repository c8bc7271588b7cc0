"""Snapshots of the chatbot in, answer deltas and status events out: pure functions.

The Space streams the *whole* chatbot (as diffs against the previous value). The adapter keeps
the chatbot up to date with `apply_diff`, reads the bot's text of the last turn with `bot_text`,
and `DeltaTracker` turns that growing text into deltas with three rules from the evidence:
- the `Qwen is thinking...` placeholder is a status (`Reasoning`), never answer text;
- the Space's summary block is metadata (`Summary`), never answer text. The Space appends it at
  the end of the answer, so only a trailing `\\n<summary>` can begin it: the *last* marker of
  the answer that does not open an HTML `<details>` element (`<details>\\n<summary>` is the
  model's own Markdown). While streaming, text from the last such marker on is held back until
  a later marker shows it was not the last one, or the final update shows it was; a partial
  marker at the end of a snapshot is held back until the next snapshot shows what it is;
- if a snapshot does not extend what was already yielded (text changed, shortened or cleared),
  say so (`TextRewritten`).
"""

from __future__ import annotations

import re
from typing import Any

from .errors import APIChangedError
from .events import Reasoning, Summary, TextRewritten
from .space_text import SUMMARY_MARKER, THINKING

Item = str | Reasoning | Summary | TextRewritten


def apply_diff(value: Any, diff: list[list[Any]]) -> Any:
    """Apply Gradio's diff operations to `value` in place and return the new value.

    Unlike gradio_client's `apply_diff`, this does not deep-copy the value first: the chatbot
    of turn 20 costs no more per update than the chatbot of turn 1.
    """
    for action, path, edit in diff:
        if not path:
            if action == "replace":
                value = edit
            elif action == "append":
                value = value + edit
            else:
                raise APIChangedError(f"The Space sent an unknown diff action {action!r}.")
            continue
        target = value
        for key in path[:-1]:
            target = target[key]
        key = path[-1]
        if action == "replace":
            target[key] = edit
        elif action == "append":
            target[key] += edit
        elif action == "add":
            if isinstance(target, list):
                target.insert(int(key), edit)
            else:
                target[key] = edit
        elif action == "delete":
            del target[int(key) if isinstance(target, list) else key]
        else:
            raise APIChangedError(f"The Space sent an unknown diff action {action!r}.")
    return value


def _message_text(message: Any) -> str:
    """The text of one bot message, in any shape the family's chatbots use.

    - a string (Gradio tuples), or None (an empty slot);
    - a modelscope_studio message `{"text": ..., "files": [...]}` (0.x, and 1.x legacy);
    - a Gradio messages-format message `{"role", "content", ...}`: Gradio 5 puts a string there (or
      a file / component dict, which is not text), Gradio 6 a list of typed parts.
    """
    if message is None:
        return ""
    if isinstance(message, str):
        return message
    if isinstance(message, dict):
        if "content" in message or ("role" in message and "text" not in message):
            return _content_text(message.get("content"))
        if "text" in message:
            text = message["text"]
            if isinstance(text, str | None):
                return text or ""
    raise APIChangedError(
        f"The Space's chatbot holds a bot message of an unexpected shape: {_shape(message)}. "
        "The adapter reads strings, message dicts ({'text': ...}) and Gradio messages "
        "({'role', 'content'}, the content a string or a list of typed parts)."
    )


def _content_text(content: Any) -> str:
    """The text of a messages-format `content`: a string, a file or component dict (no text), or
    Gradio 6's list of typed parts, whose text parts are the answer (file parts are not text)."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, dict):  # Gradio 5: a file or a component as the whole message
        return _part_text(content) if content.get("type") == "text" else ""
    if isinstance(content, list | tuple):
        texts = [_part_text(part) for part in content]
        return PART_BREAK.join(t for t in texts if t)
    raise APIChangedError(
        f"The Space's chatbot holds a message whose content is a {type(content).__name__}. The adapter "
        "reads strings, file dicts and lists of typed parts ({'type': 'text', 'text': ...})."
    )


def _part_text(part: Any) -> str:
    """The text of one content part: a typed part (`text` is text; `file`, `component` and any
    other type are not), a bare string, or Gradio 5's untyped file / component dict (not text)."""
    if isinstance(part, str):
        return part
    if isinstance(part, dict):
        kind = part.get("type")
        if kind == "text" or (kind is None and isinstance(part.get("text"), str) and "path" not in part):
            text = part.get("text")
            if isinstance(text, str | None):
                return text or ""
        elif kind is not None or "path" in part or "component" in part or "file" in part:
            return ""  # a file, an image, a component: shown in the chat, but not answer text
    raise APIChangedError(
        f"The Space's chatbot holds a message part of an unexpected shape: {_shape(part)}. "
        "The adapter reads typed parts ({'type': 'text', 'text': ...}, {'type': 'file', ...})."
    )


def _shape(value: Any) -> str:
    """A value's type and, for a dict, its keys: enough to tell which page changed how."""
    if isinstance(value, dict):
        return f"dict with keys {sorted(map(str, value))}"
    return type(value).__name__


def _bot_side(bot: Any) -> list[str]:
    """The texts of one bot side: a message, or a list with one slot per agent (None = empty)."""
    if isinstance(bot, list | tuple):
        texts = [_message_text(m) for m in bot if m is not None]
    else:
        texts = [_message_text(bot)]
    return [t for t in texts if t]


def answer_text(chatbot: Any) -> str | None:
    """The bot's answer to the last user message of a chatbot value, or None if none yet.

    Pairs (`[user, bot]`, the legacy modelscope_studio and Gradio tuples formats): the answer
    starts at the last pair with a user side and runs over every pair after it, since an answer
    in several parts (tool calls) appends `[None, bot]` pairs. A bot side may be a list with one
    slot per agent: the filled slots are read, empty ones never joined in. Gradio's messages
    format (role/content dicts) reads the assistant messages after the last user message (a
    user message in several parts, text then files, is several user messages: the answer starts
    after the last of them); Gradio 6's content lists count their text parts only.
    Parts are joined by a blank line.
    """
    if not isinstance(chatbot, list):
        raise APIChangedError(
            f"The Space's chatbot value is a {type(chatbot).__name__}, not a list of "
            "messages. The Space's page has changed; update qwen_space_adapter."
        )
    if not chatbot:
        return None
    if all(isinstance(m, dict) and "role" in m for m in chatbot):
        start = max((i for i, m in enumerate(chatbot) if m.get("role") == "user"), default=-1)
        parts = [_message_text(m) for m in chatbot[start + 1 :] if m.get("role") != "user"]
        parts = [p for p in parts if p]
        return PART_BREAK.join(parts) if parts else None
    for pair in chatbot:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise APIChangedError(
                "The Space's chatbot value no longer holds [user, bot] pairs. "
                "The Space's page has changed; update qwen_space_adapter."
            )
    start = max((i for i, pair in enumerate(chatbot) if pair[0] is not None), default=0)
    parts = [t for pair in chatbot[start:] for t in _bot_side(pair[1])]
    return PART_BREAK.join(parts) if parts else None


FILE_META = {"_type": "gradio.FileData"}


def with_file_meta(chatbot: Any) -> Any:
    """A chatbot value fit to send back: every file part's FileData carries its `meta` tag.

    Gradio 6 validates a chatbot it receives, and refuses a file part (`{"type": "file", "file":
    FileData}`, or Gradio 5's `{"file": FileData}`) whose FileData has no `meta: {"_type":
    "gradio.FileData"}`. The Space sends it with the tag, but a conversation rebuilt by hand or
    stored by a tool that drops unknown keys may not have it. Returns `chatbot` itself when nothing
    is missing; otherwise a copy, never changing the caller's value.
    """
    if not isinstance(chatbot, list):
        return chatbot
    out, changed = [], False
    for message in chatbot:
        content = message.get("content") if isinstance(message, dict) else None
        parts = content if isinstance(content, list) else [content] if isinstance(content, dict) else []
        fixed = [_tagged(part) for part in parts]
        if any(a is not b for a, b in zip(fixed, parts, strict=True)):
            changed = True
            message = {**message, "content": fixed if isinstance(content, list) else fixed[0]}
        out.append(message)
    return out if changed else chatbot


def _tagged(part: Any) -> Any:
    inner = part.get("file") if isinstance(part, dict) else None
    if isinstance(inner, dict) and "path" in inner and not inner.get("meta"):
        return {**part, "file": {**inner, "meta": dict(FILE_META)}}
    return part


PART_BREAK = "\n\n"  # between the parts of an answer (several bot messages or pairs)
bot_text = answer_text  # the name the benchmarks and the harness used first


# A `\n<summary>` right after an opening `<details>` tag is HTML the model wrote, not the Space's block.
_OPENS_DETAILS = re.compile(r"<details(?:\s[^<>]*)?>\s*\Z", re.IGNORECASE)


def summary_start(text: str, marker: str = SUMMARY_MARKER) -> int:
    """Where the Space's summary block begins in a final answer text, or -1 when it has none.

    The last `\\n<summary>` that does not open an HTML `<details>` element: the Space appends
    its block after the answer, so an earlier marker is followed by more than the block, and
    `<details>\\n<summary>` is the model's own Markdown.
    """
    end = len(text)
    while True:
        cut = text.rfind(marker, 0, end)
        if cut < 0 or not _OPENS_DETAILS.search(text, max(0, cut - 200), cut):
            return cut
        end = cut + len(marker) - 1  # look before this one


class DeltaTracker:
    """Turns successive bot-text snapshots into deltas and events.

    Invariant, checked by the tests for any sequence of snapshots: the `str` items joined, with
    each `TextRewritten` replacing what was joined so far by its `text`, equal the final answer
    (the final snapshot without the Space's summary block), and that answer followed by
    `"\\n" + Summary.text` (when a summary came) is the final snapshot. A snapshot of `None` after
    text (the answer was taken back) counts as an empty answer. Call `finish()` when the answer
    step ends: it flushes held-back text if no snapshot was fed with `final=True`.
    """

    def __init__(self, placeholder: str = THINKING, marker: str = SUMMARY_MARKER) -> None:
        self.placeholder = placeholder
        self.marker = marker
        self.emitted = ""
        self.summary: str | None = None
        self.thinking_seen = False
        self._thinking_parts: set[int] = set()
        self.text_seen = False
        self.finished = False
        self._last: str | None = None

    def _split(self, snapshot: str, final: bool) -> tuple[str, str | None]:
        cut = summary_start(snapshot, self.marker)
        if final:
            return (snapshot[:cut], snapshot[cut + 1 :]) if cut >= 0 else (snapshot, None)
        if cut >= 0:
            # Held back from the marker on: a later marker, or the final update, tells.
            snapshot = snapshot[:cut]
        else:
            # Hold back a tail that may be the start of the marker ("\n", "\n<", "\n<sum"...).
            start = snapshot.rfind("\n", max(0, len(snapshot) - len(self.marker)))
            if start >= 0 and self.marker.startswith(snapshot[start:]):
                snapshot = snapshot[:start]
        # Trailing whitespace too: UIs that `rstrip()` every update would otherwise take it
        # back on the next snapshot, and the final one would look like a rewrite.
        return snapshot.rstrip(), None

    def feed(self, snapshot: str | None, *, final: bool = False) -> list[Item]:
        """The items that a new snapshot of the bot's text adds; `final` flushes held-back text."""
        if self.finished:
            return []
        if snapshot is None:
            if not self.text_seen:
                if final:
                    self.finished = True
                return []
            snapshot = ""  # the answer was taken back: an empty answer, announced as a rewrite
        self._last = snapshot
        if not self.text_seen and snapshot.strip() == self.placeholder:
            if final:
                self.finished = True
            if self.thinking_seen:
                return []
            self.thinking_seen = True
            return [Reasoning(status=self.placeholder)]
        if snapshot.strip():
            # Whitespace alone is not text yet: the placeholder may still follow it.
            self.text_seen = True
        items: list[Item] = []
        tail = PART_BREAK + self.placeholder
        if snapshot.rstrip().endswith(tail):
            # An answer in several parts (tool calls) shows the placeholder as its newest part
            # while the next part is prepared: a status again, not text.
            snapshot = snapshot.rstrip()[: -len(tail)]
            if len(snapshot) not in self._thinking_parts:
                self._thinking_parts.add(len(snapshot))
                items.append(Reasoning(status=self.placeholder))
        body, summary = self._split(snapshot, final)
        if body.startswith(self.emitted):
            if len(body) > len(self.emitted):
                items.append(body[len(self.emitted) :])
        else:
            items.append(TextRewritten(text=body, previous=self.emitted))
        self.emitted = body
        if final:
            self.finished = True
            if summary is not None:
                self.summary = summary
                items.append(Summary(text=summary))
        return items

    def finish(self) -> list[Item]:
        """Flush what is held back when the answer ended without a final snapshot (idempotent)."""
        if self.finished:
            return []
        if self._last is None:
            self.finished = True
            return []
        return self.feed(self._last, final=True)
