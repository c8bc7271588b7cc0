"""The one table from what gradio_client, httpx and the Space report to the adapter's errors.

Like httpx's `_exceptions.py`, every translation lives here: rows match an exception type, an
HTTP status or a pattern in the Space's message, and build the error with a message that says
what happened and what to do. Nothing else in the package turns a foreign exception into a
`QwenSpaceError`; whatever no row explains becomes `AdapterBugError`, never a guess.

`translate(exc, url)` is the entry point; `app_error(message)` reads an error the Space's own
code reported inside a job; `is_config_mismatch(err)` says whether re-reading the Space's config
may cure a failure (a redeployed Space shifts fn indices and value shapes); `stage_error(target)`
asks the Hub why a Space given by id does not serve (its second table, `_STAGES`).
"""

from __future__ import annotations

import concurrent.futures
import re
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from .errors import (
    AdapterBugError,
    APIChangedError,
    InvalidRequestError,
    QueueFullError,
    QwenSpaceError,
    RateLimitedError,
    SpaceAppError,
    SpaceUnavailableError,
    StreamInterruptedError,
)
from .space_text import unquote
from .target import SpaceTarget, hub_endpoint, hub_token, is_loopback

Factory = Callable[[BaseException, str, str], QwenSpaceError]


@dataclass(frozen=True)
class Row:
    """One translation: `match(exc, text, status)` decides; `build(exc, url, text)` makes the error."""

    name: str
    match: Callable[[BaseException, str, int | None], bool]
    build: Factory
    retryable: bool | None = None  # None keeps the error class's default


def _unavailable(text: str, retryable: bool = True) -> Factory:
    def build(exc: BaseException, url: str, msg: str) -> QwenSpaceError:
        err = SpaceUnavailableError(text.format(url=url, name=type(exc).__name__, status=_status(exc, msg)))
        err.retryable = retryable
        return err

    return build


def _not_running_or_unreachable(exc: BaseException, url: str, msg: str) -> QwenSpaceError:
    """A refused or failed connection: on this machine the Space is simply not running."""
    host = urllib.parse.urlsplit(url).hostname or ""
    refused = any(cls.__name__ in ("ConnectError", "ConnectionRefusedError") for cls in type(exc).__mro__)
    if is_loopback(host) and refused:
        return SpaceUnavailableError(
            f"Could not connect to {url}: nothing is listening there, so the local Space is not running "
            "(it stopped, or was never started). Start it (the replica: `qwen-space replica --port PORT`, "
            "or `Replica(port=PORT).start()`), then call again."
        )
    return SpaceUnavailableError(
        f"Could not connect to the Space at {url}. Check the URL and your network; if it is "
        "a Hugging Face Space, it may be sleeping or restarting: retry in a minute."
    )


def _not_serving(exc: BaseException, url: str, msg: str) -> QwenSpaceError:
    """5xx, or a config that could not be fetched; the status is named only when it is known."""
    status = _status(exc, msg)
    if status is None:
        what = (
            "is not serving: it did not send its config (the answer was no success and named no status: "
            "a redirect, which the adapter never follows, or an error page)"
        )
    else:
        what = f"is not serving (HTTP {status})"
    return SpaceUnavailableError(
        f"The Space at {url} {what}: it may be sleeping, paused, building or restarting, or the URL may "
        "point elsewhere. Check the URL and its page on Hugging Face, then retry."
    )


def _kind(*names: str) -> Callable[[BaseException, str, int | None], bool]:
    """Match by class name along the MRO, so optional imports (gradio_client, httpx) stay lazy."""

    def match(exc: BaseException, text: str, status: int | None) -> bool:
        return any(cls.__name__ in names for cls in type(exc).__mro__)

    return match


def _status_in(*codes: int) -> Callable[[BaseException, str, int | None], bool]:
    return lambda exc, text, status: status in codes


def _says(pattern: str) -> Callable[[BaseException, str, int | None], bool]:
    rx = re.compile(pattern, re.IGNORECASE)
    return lambda exc, text, status: bool(rx.search(text))


def _status(exc: BaseException, text: str) -> int | None:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        return status
    m = re.search(r"\b([45]\d\d)\b", text)
    if m and re.search(r"fetch|status|HTTP|error", text, re.IGNORECASE):
        return int(m.group(1))
    return None


def _interrupted(exc: BaseException, url: str, text: str) -> QwenSpaceError:
    return StreamInterruptedError(
        f"The connection to the Space at {url} ended before the answer was complete "
        "(the Space restarted or the network dropped). Retry the request."
    )


def _mismatch(err: QwenSpaceError) -> QwenSpaceError:
    err.config_mismatch = True
    return err


def _api_changed(exc: BaseException, url: str, text: str) -> QwenSpaceError:
    return APIChangedError(
        f"The Space at {url} no longer has the step this adapter called ({type(exc).__name__}: "
        f"{text[:200]}). It may have been redeployed with another page; the adapter re-reads "
        "its config once by itself. If this persists, the Space's page has changed."
    )


# Order matters: the first matching row wins.
ROWS: tuple[Row, ...] = (
    Row("already ours", lambda e, t, s: isinstance(e, QwenSpaceError), lambda e, u, t: e),  # type: ignore[arg-type,return-value]
    Row(
        "refused by the caller's input",
        _kind("InvalidURL", "UnsupportedProtocol", "LocalProtocolError", "UnicodeEncodeError"),
        lambda e, u, t: InvalidRequestError(
            f"The request could not be sent to {u} ({type(e).__name__}): check space=, proxy= "
            "and hf_token= for characters a URL or a header cannot carry."
        ),
    ),
    Row(
        "TLS",
        lambda e, t, s: isinstance(e, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in t,
        _unavailable(
            "The TLS certificate of {url} could not be verified; check the URL, or pass "
            "verify=False for a Space you trust on your own network.",
            retryable=False,
        ),
    ),
    Row("connect", _kind("ConnectError", "ConnectTimeout", "ConnectionRefusedError"), _not_running_or_unreachable),
    Row(
        "proxy",
        _kind("ProxyError"),
        _unavailable("The proxy refused the connection to {url} ({name}); check proxy=.", retryable=False),
    ),
    Row(
        "timeout",
        _kind("TimeoutException", "TimeoutError"),
        _unavailable("The Space at {url} did not answer in time (connect_timeout); retry later."),
    ),
    Row(
        "stream cut",
        lambda e, t, s: isinstance(e, concurrent.futures.CancelledError) or t == "Server stopped.",
        _interrupted,
    ),
    Row(
        "transport",
        _kind("TransportError", "NetworkError"),
        _unavailable("The connection to the Space at {url} failed ({name}); retry later."),
    ),
    Row(
        "queue full",
        _kind("QueueError"),
        lambda e, u, t: QueueFullError(
            f"The Space's queue at {u} is full. Retry in a moment; the adapter already retried "
            "with backoff (raise max_retries= to try longer)."
        ),
    ),
    Row(
        "rate limited",
        lambda e, t, s: (
            s == 429
            or type(e).__name__ == "TooManyRequestsError"
            or bool(re.search(r"too many requests", t, re.IGNORECASE))
        ),
        lambda e, u, t: RateLimitedError(
            f"The Space at {u} is rate limiting requests; wait a minute, or duplicate the Space and "
            "pass space= with your copy and hf_token=."
        ),
    ),
    Row(
        "refused access",
        _status_in(401, 403),
        _unavailable(
            "The Space at {url} refused access (HTTP {status}): it is private or gated. Pass "
            "hf_token= (or set HF_TOKEN) with a token that can read it.",
            retryable=False,
        ),
    ),
    Row("not found", lambda e, t, s: s == 404 or type(e).__name__ == "InvalidAPIEndpointError", _api_changed),
    Row("not serving", lambda e, t, s: (s is not None and s >= 500) or "Could not fetch config" in t, _not_serving),
    Row(
        "not a Gradio app",
        _says(r"Could not get Gradio config|not a Gradio app|Expecting value"),
        _unavailable(
            "{url} answered, but not with a Gradio app: the Space may be sleeping, paused or "
            "building (Hugging Face then shows a page of its own), or this is not a Gradio "
            "Space. Check its page, then retry."
        ),
    ),
    Row("app error", _kind("AppError"), lambda e, u, t: app_error(getattr(e, "message", None) or t)),
    Row(
        "validation",
        _kind("ValidationError"),
        lambda e, u, t: _mismatch(
            SpaceAppError(
                f"The Space refused the step's inputs: {t} Its page may have changed; the adapter "
                "re-reads its config once by itself.",
                space_message=t,
            )
        ),
    ),
    Row(
        "unknown step",
        lambda e, t, s: (
            isinstance(e, IndexError | KeyError)
            and re.search(r"fn_index|list index|endpoint", t + repr(e), re.IGNORECASE) is not None
        ),
        _api_changed,
    ),
)


def translate(exc: BaseException, url: str) -> QwenSpaceError:
    """The adapter's error for anything raised while talking to the Space at `url`."""
    text = str(exc)
    status = _status(exc, text)
    for row in ROWS:
        if row.match(exc, text, status):
            err = row.build(exc, url, text)
            if row.retryable is not None:
                err.retryable = row.retryable
            if err is not exc:
                err.__cause__ = None
            return err
    return AdapterBugError(
        f"qwen_space_adapter failed on an unexpected {type(exc).__name__}: {text[:300]}. This is a "
        "bug in the adapter, not in your request: please report it with this message. The same "
        "request would meet the same bug, so the adapter does not retry it."
    )


def app_error(message: str | None, partial_text: str = "") -> QwenSpaceError:
    """The adapter's error for an error the Space's own code reported while running a step."""
    text = unquote(message or "")
    low = text.lower()
    if "quota" in low or "429" in low or "too many requests" in low or "rate limit" in low:
        return RateLimitedError(
            f"The Space refused for now: {text} Wait and retry, or run your own duplicate of the "
            "Space (space=, hf_token=).",
            partial_text=partial_text,
        )
    if not text:
        return SpaceAppError(
            "The Space's app raised an error and did not say which (it does not show errors). "
            "Retry; if it persists, the Space may be broken.",
            partial_text=partial_text,
        )
    return SpaceAppError(
        f"The Space's app raised an error: {text} Change the request or retry later.",
        space_message=text,
        partial_text=partial_text,
    )


def is_config_mismatch(err: QwenSpaceError) -> bool:
    """Whether a changed config may explain `err`, so re-reading it and retrying is worth once:
    an unknown step, outputs of an unexpected shape, a route gone, inputs the Space refused."""
    if isinstance(err, APIChangedError) or err.config_mismatch:
        return True
    return isinstance(err, SpaceAppError) and bool(
        re.search(r"\b(inputs?|arguments?|fn_index)\b", err.space_message or "", re.IGNORECASE)
    )


# The Hub's word on a Space that does not serve: its stage, what to tell, whether to retry.
_STAGES = {
    "SLEEPING": ("is sleeping. A request wakes it: retry in a minute or two, or open {page} to wake it.", True),
    "PAUSED": (
        "is paused by its owner and will not answer until they restart it. Use a duplicate of it (space=...).",
        False,
    ),
    "BUILDING": ("is building. Retry in a few minutes.", True),
    "RUNNING_BUILDING": ("is rebuilding. Retry in a few minutes.", True),
    "APP_STARTING": ("is starting. Retry in a minute.", True),
    "RUNNING_APP_STARTING": ("is restarting. Retry in a minute.", True),
    "STOPPED": ("is stopped. Its owner must restart it; or use a duplicate (space=...).", False),
}


def stage_error(target: SpaceTarget) -> SpaceUnavailableError | None:
    """Ask the Hugging Face Hub why the Space does not serve (sleeping, paused, building...).

    Only called after a failure, and only for Spaces known by id: a running Space costs no
    request to the Hub. None when the Hub cannot tell (offline, unknown Space, running), and
    when a proxy is set: huggingface_hub would not go through it, and every request must.
    """
    if not target.space_id or target.proxy:
        return None
    # Asked at `$HF_ENDPOINT`, as huggingface_hub would, but read now and named in the message;
    # the token goes only to Hugging Face over https (`hub_token`). False, not None: given None,
    # huggingface_hub would send the environment's token itself.
    endpoint = hub_endpoint()
    try:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint)
        runtime = api.get_space_runtime(target.space_id, token=hub_token(target.token, endpoint) or False)
        stage = str(getattr(runtime, "stage", ""))
    except Exception:
        return None
    stage = stage.rsplit(".", 1)[-1].upper()
    page = f"{endpoint}/spaces/{target.space_id}"
    if stage in _STAGES:
        text, retryable = _STAGES[stage]
        err = SpaceUnavailableError(f"The Space {target.space_id} {text.format(page=page)}")
    elif stage.endswith("ERROR") or stage in ("NO_APP_FILE", "DELETING"):
        err = SpaceUnavailableError(
            f"The Space {target.space_id} is broken ({stage}); see {page}. Use a duplicate (space=...)."
        )
        retryable = False
    else:
        return None
    err.retryable = retryable
    return err
