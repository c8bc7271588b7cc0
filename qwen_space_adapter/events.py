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

    def where(self) -> str:
        """The known part of the status for people, to follow a label: `: position 2 of 9, about 40 s left`.

        Positions count from 1 (the Space's rank 0 is next in line); an unknown part is left out.
        """
        text = ""
        if self.position is not None:
            text += f": position {self.position + 1}"
            if self.queue_size:
                text += f" of {self.queue_size}"
        if self.eta is not None and self.eta >= 1:
            text += f", about {self.eta:.0f} s left"
        return text


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
