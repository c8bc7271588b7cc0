"""The one table from the adapter's errors to OpenAI-shaped HTTP errors.

OpenAI clients decide what to do from the status code (the SDKs retry 429 and 5xx, raise
`NotFoundError` on 404, ...) and show `error.message`. Keeping every translation here, as
data, lets a unit test read the whole table and lets the app stay free of `isinstance` chains.
Messages come from the adapter, whose errors never carry a token; anything unforeseen is
reported without its text, which could hold anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import errors as adapter


class ApiError(Exception):
    """An error to send as `{"error": {...}}` with its HTTP status (raised by the request parser too)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """OpenAI's error object: the four keys every SDK reads."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> list[tuple[bytes, bytes]]:
        """`Retry-After` where the wait is known (whole seconds, as RFC 9110 wants)."""
        if self.retry_after is None:
            return []
        return [(b"retry-after", str(max(1, round(self.retry_after))).encode())]


@dataclass(frozen=True)
class Rule:
    status: int
    type: str
    code: str


# Most specific first: StreamInterruptedError is a SpaceUnavailableError, ModelNotSupportedError
# an InvalidRequestError. SpaceRestartedError never reaches a client in normal operation (the app
# starts a new session with the whole history instead); it is here so that a second restart in a
# row still gets an answer a client understands.
RULES: tuple[tuple[type[BaseException], Rule], ...] = (
    (adapter.ModelNotSupportedError, Rule(404, "invalid_request_error", "model_not_found")),
    (adapter.InvalidRequestError, Rule(400, "invalid_request_error", "invalid_request")),
    (adapter.QueueFullError, Rule(429, "rate_limit_error", "queue_full")),
    (adapter.RateLimitedError, Rule(429, "rate_limit_error", "rate_limited")),
    (adapter.StreamInterruptedError, Rule(502, "server_error", "stream_interrupted")),
    (adapter.ReplicaError, Rule(503, "server_error", "space_unavailable")),
    (adapter.SpaceUnavailableError, Rule(503, "server_error", "space_unavailable")),
    (adapter.SpaceTimeoutError, Rule(504, "server_error", "timeout")),
    (adapter.SpaceAppError, Rule(502, "server_error", "space_error")),
    (adapter.APIChangedError, Rule(502, "server_error", "space_api_changed")),
    (adapter.SpaceRestartedError, Rule(502, "server_error", "space_restarted")),
    (adapter.AdapterBugError, Rule(500, "server_error", "adapter_bug")),
    (adapter.QwenSpaceError, Rule(500, "server_error", "internal_error")),
)


def retry_after_of(error: BaseException) -> float | None:
    """The wait an error knows of, if any (the adapter's errors may carry `retry_after`)."""
    value = getattr(error, "retry_after", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def api_error(error: BaseException) -> ApiError:
    """The HTTP error a client gets for `error`; an unforeseen exception is a 500 without its text."""
    if isinstance(error, ApiError):
        return error
    for kind, rule in RULES:
        if isinstance(error, kind):
            param = "model" if isinstance(error, adapter.ModelNotSupportedError) else None
            message = str(error)
            if isinstance(error, adapter.SpaceTimeoutError):
                message = f"{message} (phase: {error.phase})"
            return ApiError(
                rule.status, message, type=rule.type, code=rule.code, param=param, retry_after=retry_after_of(error)
            )
    return ApiError(
        500,
        f"The server failed unexpectedly ({type(error).__name__}); its log has the details.",
        type="server_error",
        code="internal_error",
    )


__all__ = ["RULES", "ApiError", "Rule", "api_error"]
