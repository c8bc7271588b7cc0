"""The non-text items an answer stream yields besides `str` deltas.

Every event's `str()` is empty, so `"".join(map(str, stream))` is the answer text and code that
prints each item (as the original g4f provider's example does) prints only the answer. Events are frozen
dataclasses: compare them, pattern-match on them, log them.
"""

from __future__ import annotations

from dataclasses import dataclass


class StreamEvent:
    """Base of the status events; `str()` is empty so events never leak into answer text."""

    def __str__(self) -> str:
        return ""


@dataclass(frozen=True, repr=True)
class Reasoning(StreamEvent):
    """The Space is thinking: it shows its `Qwen is thinking...` placeholder (prefilling context).

    Named and shaped after g4f's `Reasoning` (`status`, `token`), so g4f front ends show it as a
    status line.
    """

    status: str | None = None
    token: str | None = None


@dataclass(frozen=True, repr=True)
class QueueStatus(StreamEvent):
    """The job waits in the Space's queue: position (0 = next), queue size, estimated seconds."""

    position: int | None
    queue_size: int | None
    eta: float | None


@dataclass(frozen=True, repr=True)
class TextRewritten(StreamEvent):
    """The Space changed answer text that was already yielded.

    The concatenation of `str` deltas so far is `previous`; the answer so far is now `text`.
    Deltas after this event continue `text`. Consumers that render the answer replace what they
    showed with `text`; consumers that only concatenate would otherwise be silently wrong.
    """

    text: str
    previous: str


@dataclass(frozen=True, repr=True)
class Summary(StreamEvent):
    """The metadata block the Space appends after `\\n<summary>`, kept out of the answer text."""

    text: str


__all__ = ["QueueStatus", "Reasoning", "StreamEvent", "Summary", "TextRewritten"]
