"""Replay a recorded transcript: the replica answers with what a real Space once sent.

Why: the live Space cannot be reached from CI (or may change or vanish), but what it streamed
can be recorded once (`qwen-space record`) and replayed offline, update for update, with the
recorded spacing. The adapter then meets the Space's real pacing and text, not the fake model's.

This module is pure Python with no third-party imports, for the same reason as `model.py`: it
runs inside the replica's own environment (gradio 4.44), imported by `app.py` by path, and is
also imported by the adapter's harness to validate transcripts and compute what a replay sends.

Which turn answers: the k-th user message of a session (k = 0, 1, ...) is answered with the
transcript's turn k. A session with more messages than the transcript has turns gets an error
naming the transcript and the turn (`ReplayExhausted`): wrapping around to turn 1 would answer
with text recorded for another question, silently. The request's own text does not choose the
turn: a replay reproduces the recording, whatever is asked, which is what makes it exact.

Timing: the first recorded update of a turn is sent at once; each later one after the recorded
gap to its predecessor divided by `speed` (2.0 replays twice as fast). The format is described
in `qwen_space_adapter.harness` (module docstring).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    from ..space_text import unquote
except ImportError:  # imported as a top-level module by the replica's app: `model` loads it by path
    from model import unquote  # type: ignore[no-redef]

FORMAT = "qwen-space-transcript"
VERSION = 2  # what the recorder writes
# Version 1 (before 0.2.1): `space.add_text`/`space.predict` and `turns[].add_text_seconds`, the two-step
# page's names; version 2: `space.chain`/`space.answer` and `turns[].before_answer_seconds`. Replay reads
# only `format`, `version` and `turns[].updates`, the same in both.
VERSIONS = (1, 2)


class TranscriptError(ValueError):
    """The file is not a transcript this replayer understands; the message says where."""


class ReplayExhausted(LookupError):
    """The session asked more questions than the transcript recorded answers."""


@dataclass(frozen=True)
class Step:
    """One update to send: wait `delay` seconds, then show `bot` (or raise `error`)."""

    delay: float
    bot: Any = None
    error: str | None = None


def text_of(bot: Any) -> str:
    """The text of a bot value as the Space's chatbot holds it (None, str, dict or list of them)."""
    if bot is None:
        return ""
    if isinstance(bot, str):
        return bot
    if isinstance(bot, dict):
        return str(bot.get("text") or "")
    if isinstance(bot, list | tuple):
        return "\n\n".join(text_of(m) for m in bot)
    return str(bot)


def validate(data: Any, where: str = "transcript") -> dict[str, Any]:
    """Check the structure replay relies on; raise `TranscriptError` naming the bad field."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TranscriptError(f"{where}: not a {FORMAT!r} file (its 'format' field is missing or wrong)")
    if data.get("version") not in VERSIONS:
        raise TranscriptError(
            f"{where}: version {data.get('version')!r}, this replayer reads versions {', '.join(map(str, VERSIONS))}"
        )
    turns = data.get("turns")
    if not isinstance(turns, list) or not turns:
        raise TranscriptError(f"{where}: 'turns' must be a non-empty list")
    for i, turn in enumerate(turns):
        updates = turn.get("updates") if isinstance(turn, dict) else None
        if not isinstance(updates, list):
            raise TranscriptError(f"{where}: turns[{i}].updates must be a list")
        last = -1.0
        for j, u in enumerate(updates):
            if not isinstance(u, dict) or not isinstance(u.get("kind"), str):
                raise TranscriptError(f"{where}: turns[{i}].updates[{j}] needs a 'kind'")
            t = u.get("t")
            if isinstance(t, bool) or not isinstance(t, int | float) or t < last:
                raise TranscriptError(
                    f"{where}: turns[{i}].updates[{j}].t must be a number, not before the previous one"
                )
            last = float(t)
    return data


def error_message(recorded: Any) -> str:
    """The message to raise so that the server sends the recorded error again.

    Gradio 4 sends a `gr.Error` as `repr(message)` (quotes included), so raising the recorded
    string as it is would quote it twice; a recorded repr is turned back into its message.
    """
    return unquote(str(recorded) if recorded is not None else "recorded error")


class Replayer:
    """The steps of each recorded turn, ready to be streamed by the replica's `predict`."""

    def __init__(self, data: dict[str, Any], source: str = "transcript") -> None:
        self.data = validate(data)
        self.turns: list[dict[str, Any]] = data["turns"]
        self.source = source

    def turn(self, index: int) -> dict[str, Any]:
        """The recorded turn that answers a session's `index`-th message."""
        if not 0 <= index < len(self.turns):
            raise ReplayExhausted(
                f"Replay: {self.source} records {len(self.turns)} turn(s); this conversation "
                f"asked for turn {index + 1}. Record a longer transcript or start a new conversation."
            )
        return self.turns[index]

    def schedule(self, index: int, speed: float = 1.0) -> list[Step]:
        """What to send for a session's `index`-th message: recorded updates with scaled gaps.

        Only `generating` updates are replayed (the server itself sends queue estimates and the
        completion); an `error` update becomes an error raised at its recorded moment.
        """
        if not speed > 0:
            raise TranscriptError(f"replay speed must be positive, got {speed!r}")
        steps: list[Step] = []
        previous: float | None = None
        for u in self.turn(index)["updates"]:
            if u["kind"] not in ("generating", "error"):
                continue
            t = float(u["t"])
            delay = 0.0 if previous is None else (t - previous) / speed
            previous = t
            if u["kind"] == "error":
                steps.append(Step(delay, error=error_message(u.get("error"))))
                break
            steps.append(Step(delay, bot=u.get("bot")))
        return steps

    async def stream(self, index: int, speed: float, error: Callable[[str], BaseException]) -> AsyncIterator[Any]:
        """Yield the bot values of turn `index` with the recorded spacing; raise `error(msg)`
        where the recording failed. A copy is yielded each time: sessions never share lists."""
        for step in self.schedule(index, speed):
            if step.delay > 0:
                await asyncio.sleep(step.delay)
            if step.error is not None:
                raise error(step.error)
            yield copy.deepcopy(step.bot)


@functools.lru_cache(maxsize=8)
def load(path: str) -> Replayer:
    """Read and validate a transcript once per process (the app loads it at start to fail fast)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TranscriptError(f"cannot read transcript {path}: {e}") from None
    validate(data, where=str(path))
    return Replayer(data, source=str(path))


__all__ = [
    "FORMAT",
    "VERSION",
    "ReplayExhausted",
    "Replayer",
    "Step",
    "TranscriptError",
    "error_message",
    "load",
    "text_of",
    "validate",
]
