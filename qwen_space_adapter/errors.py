"""Every error the adapter raises, rooted at `QwenSpaceError`.

Callers catch one root, or a subclass for the case they can act on. Each message says what
happened and what to do next. `partial_text` keeps whatever answer text had already streamed,
so a failure mid-answer loses nothing; `retryable` says whether sending the same request again
can help. Messages never contain a token: they are built from our own words and the Space's.
"""

from __future__ import annotations


class QwenSpaceError(Exception):
    """Root of every error raised by qwen_space_adapter."""

    retryable: bool = False
    config_mismatch: bool = False  # a changed Space config may explain it (see failures.py)

    def __init__(self, message: str, *, partial_text: str = "") -> None:
        super().__init__(message)
        self.partial_text = partial_text


class InvalidRequestError(QwenSpaceError, ValueError):
    """The call was refused before anything was sent; fix the named argument and call again."""


class ModelNotSupportedError(InvalidRequestError):
    """The model name is neither a model of this provider nor one of its aliases."""


class SpaceUnavailableError(QwenSpaceError):
    """The Space could not be reached or is not running (refused, 5xx, sleeping, paused, building)."""

    retryable = True


class StreamInterruptedError(SpaceUnavailableError):
    """The connection to the Space ended before the answer was complete."""

    retryable = False


class QueueFullError(QwenSpaceError):
    """The Space's queue refused the job because it is full."""

    retryable = True


class RateLimitedError(QwenSpaceError):
    """The Space or Hugging Face refused for now: too many requests or GPU quota used up."""

    retryable = True


class SpaceAppError(QwenSpaceError):
    """The Space's own code raised an error while answering; the Space's message is kept."""

    def __init__(self, message: str, *, space_message: str | None = None, partial_text: str = "") -> None:
        super().__init__(message, partial_text=partial_text)
        self.space_message = space_message


class APIChangedError(QwenSpaceError):
    """The Space no longer has the endpoints or value shapes this adapter was built for."""


class SpaceTimeoutError(QwenSpaceError, TimeoutError):
    """An answer took longer than the caller allowed (whole answer, first token, or silence)."""

    def __init__(self, message: str, *, phase: str, partial_text: str = "") -> None:
        super().__init__(message, partial_text=partial_text)
        self.phase = phase


class SpaceRestartedError(QwenSpaceError):
    """The Space restarted since the conversation began and lost its server-side history.

    Continuing would answer without the earlier turns, so the adapter refuses: start a new
    conversation (conversation=None), passing the earlier turns as messages if they matter.
    """


class ConversationInUseError(QwenSpaceError):
    """The conversation's Space session is being used by another client at the same moment.

    The Space sends a session's messages to whichever client reads them first, so two clients
    (two processes holding copies of one saved conversation, say) steal each other's answers.
    A conversation can move between processes (`get_dict` / `from_dict`), one turn at a time;
    use it in one place at a time, or start a new conversation.
    """


class AdapterBugError(QwenSpaceError):
    """Something failed that no rule explains: a bug in qwen_space_adapter. Please report it.

    Not retryable: the same request meets the same bug, and a retry after the Space saw the
    message would send it again.
    """

    retryable = False


class ReplicaError(QwenSpaceError):
    """The local replica Space could not be built or started."""


__all__ = [
    "APIChangedError",
    "AdapterBugError",
    "InvalidRequestError",
    "ModelNotSupportedError",
    "QueueFullError",
    "QwenSpaceError",
    "RateLimitedError",
    "ReplicaError",
    "SpaceAppError",
    "SpaceRestartedError",
    "SpaceTimeoutError",
    "SpaceUnavailableError",
    "StreamInterruptedError",
]
