"""The keyword options of a request, checked before anything is sent.

Every check here runs at call time, so a typo or a bad path fails at the line that made it,
with a message naming the argument, and the Space never sees a half-valid request.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FIRST_TOKEN_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_BACKOFF,
    MAX_FILE_BYTES,
    MAX_RETRIES,
    MAX_RETRY_BACKOFF,
    MAX_SECONDS,
)
from .errors import InvalidRequestError
from .target import (
    DEFAULT_SPACE_URL,
    SpaceTarget,
    env_space,
    environment_token,
    is_loopback,
    space_id_of,
    space_url,
)

log = logging.getLogger("qwen_space_adapter")

# MAX_FILE_BYTES: a file is sent whole as context; Qwen2.5-1M reads about 4 MB of text, so 16 MB
# leaves room for markup-heavy documents while refusing accidents (a video, a disk image) before
# upload. The MAX_* bounds of deadlines and retries: a value above them is a typo or a unit
# mistake (milliseconds for seconds), and a huge number (10**400) would otherwise overflow deep
# inside a timer instead of failing here.
# Every attachment accepted is UTF-8 text (the Space reads text documents only), so all are sent
# as text/plain; a binary type, if one is ever accepted, would be named by its extension.
TEXT_MIME_TYPE = "text/plain"
# g4f and OpenAI-style callers pass these; the Space has no knob for them, so they are ignored.
IGNORED_KWARGS = frozenset(
    {
        "stream",
        "temperature",
        "top_p",
        "max_tokens",
        "stop",
        "api_key",
        "web_search",
        "media",
        "images",
        "image",
        "image_name",
        "response_format",
        "tool_calls",
        "tools",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "n",
        "user",
        "timeout_read",
        "api_base",
        "base_url",
        "extra_body",
        "provider",
        "download_media",
        "aspect_ratio",
        "conversation_id",
        "action",
        "ignore_stream",
        "stream_timeout",
        "audio",
    }
)


@dataclass(frozen=True)
class Attachment:
    """A document as it was checked at the call: the upload sends exactly these bytes.

    Reading once and keeping the bytes closes the window in which a file could be swapped,
    grown or deleted between the check and the upload. `data` stays out of `repr` (it can be
    16 MB). `os.fspath(attachment)` is the original path, for code that wants a path.
    """

    path: Path
    name: str
    data: bytes = field(repr=False)
    mime_type: str
    size: int

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class RequestOptions:
    target: SpaceTarget
    files: tuple[Attachment, ...] = ()
    timeout: float | None = None
    first_token_timeout: float | None = DEFAULT_FIRST_TOKEN_TIMEOUT
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    # The time allowed for each attempt to reach the Space (connect, TLS, first config fetch).
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    ignored: tuple[str, ...] = field(default=())


def _seconds(name: str, value: Any, maximum: float = MAX_SECONDS, *, allow_none: bool = True) -> float | None:
    """A positive number of seconds up to `maximum`, or None (no limit) when `allow_none`."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "a number of seconds or None" if allow_none else "a number of seconds"
        raise InvalidRequestError(f"{name} must be {kind}, got {_short(value)}.")
    # Compared before any float conversion: int(10**400) cannot become a float.
    if (isinstance(value, float) and math.isnan(value)) or value <= 0:
        raise InvalidRequestError(f"{name} must be a positive number of seconds, got {_short(value)}.")
    if value > maximum:
        hint = "; pass None for no limit" if allow_none else ""
        raise InvalidRequestError(f"{name} must be at most {maximum:g} seconds, got {_short(value)}{hint}.")
    return float(value)


def _required_seconds(name: str, value: Any, maximum: float = MAX_SECONDS) -> float:
    """`_seconds` for a limit that cannot be switched off."""
    seconds = _seconds(name, value, maximum, allow_none=False)
    assert seconds is not None
    return seconds


def _short(value: Any) -> str:
    """`repr` cut to a readable length (10**400 has 401 digits; 10**5000 has no repr at all)."""
    try:
        text = repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits()
        return f"an integer of {value.bit_length()} bits" if isinstance(value, int) else type(value).__name__
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def _retries(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRIES:
        raise InvalidRequestError(f"max_retries must be an integer from 0 to {MAX_RETRIES}, got {_short(value)}.")
    return value


def check_file(path: Any) -> Attachment:
    """A document to attach, read once: an existing, non-empty UTF-8 text file within the size limit.

    The bytes checked here are the bytes uploaded (see `Attachment`), so nothing can change
    between the check and the upload.
    """
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise InvalidRequestError(f"files must hold file paths, got {type(path).__name__}.")
    p = Path(os.fspath(path)).expanduser()
    shown = repr(str(p))
    if not p.exists():
        raise InvalidRequestError(f"Attachment {shown} does not exist.")
    if p.is_dir():
        raise InvalidRequestError(f"Attachment {shown} is a directory; name the files in it.")
    if not p.is_file():
        raise InvalidRequestError(f"Attachment {shown} is not a regular file.")
    try:
        with open(p, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)  # one byte over the limit is enough to refuse
    except OSError as e:
        raise InvalidRequestError(f"Attachment {shown} cannot be read: {e.strerror or e}.") from None
    if len(data) > MAX_FILE_BYTES:
        raise InvalidRequestError(
            f"Attachment {shown} has over {MAX_FILE_BYTES:,} bytes, the limit "
            "(Qwen2.5-1M reads about 4 MB of text); send a part of it."
        )
    if not data:
        raise InvalidRequestError(f"Attachment {shown} is empty; there is nothing to read.")
    if b"\x00" in data:
        raise InvalidRequestError(
            f"Attachment {shown} looks binary (it has NUL bytes); the Space reads text "
            "documents only. Convert it to text first."
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRequestError(
            f"Attachment {shown} is not UTF-8 text (byte {e.start:,}); convert it to UTF-8 first."
        ) from None
    return Attachment(path=p, name=p.name, data=data, mime_type=TEXT_MIME_TYPE, size=len(data))


KNOWN_OPTIONS = (
    "space",
    "hf_token",
    "files",
    "timeout",
    "first_token_timeout",
    "idle_timeout",
    "connect_timeout",
    "max_retries",
    "retry_backoff",
    "verify",
    "proxy",
)
# Proxy schemes httpx can use. SOCKS needs the optional `socksio` package (httpx[socks]).
HTTP_PROXY_SCHEMES = ("http", "https")
SOCKS_PROXY_SCHEMES = ("socks5", "socks5h")


def own_url(cls: type, base: type) -> str | None:
    """The `url` a subclass of `base` set (a duplicate, a replica), or None when it kept base's.

    A subclass bound to its own Space wins over `$QWEN_SPACE`: the environment must not
    silently move it elsewhere.
    """
    for klass in cls.__mro__:
        if klass is base:
            return None
        if "url" in vars(klass):
            return str(vars(klass)["url"])
    return None


def resolve_space(kw: dict[str, Any], conversation_space: Any = None, class_url: str | None = None) -> tuple[str, str]:
    """Which Space a call talks to, and the name of the argument that chose it.

    The order: an explicit `space=`; the Space a continued conversation belongs to; a
    subclass's own `url`; `$QWEN_SPACE`; the default Space. An explicit but empty `space=`
    (`''`, `0`, `False`) is refused: falling back to the public Space would send the request,
    and perhaps a token, somewhere the caller did not name.
    """
    if "space" in kw and kw["space"] is not None:
        return kw.pop("space"), "space"
    kw.pop("space", None)
    if conversation_space is not None:
        return conversation_space, "conversation.space"
    if class_url:
        return class_url, "url"
    if env_space():
        return env_space(), "$QWEN_SPACE"
    return DEFAULT_SPACE_URL, "space"


def parseable_url(value: Any, name: str) -> None:
    """Refuse a URL that `urllib.parse` cannot split (`http://[::1`): it raises a bare ValueError.

    Checked here, before the target is resolved, so the caller gets `InvalidRequestError` naming
    the argument instead of a ValueError from deep inside the URL handling.
    """
    if not isinstance(value, str) or "://" not in value:
        return
    try:
        parts = urllib.parse.urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as e:
        reason = "an unclosed [ of an IPv6 address" if "IPv6" in str(e) else "a part that cannot be parsed"
        # A proxy URL may carry a password: it is never echoed.
        shown = name if name == "proxy" else f"{name}={_short(value)}"
        raise InvalidRequestError(
            f"{shown} is not a valid URL ({reason}); write an IPv6 host in brackets, e.g. 'http://[::1]:7860'."
        ) from None


def check_model(model: Any) -> str | None:
    """The model argument as a name, or None for the default: only a string (or None/"") is a model.

    `model=[]` used to pass as "empty, so the default", and `model=["x"]` failed with a bare
    TypeError from a dict lookup; both are refused here, naming what was given.
    """
    if model is None or (isinstance(model, str) and not model.strip()):
        return None
    if not isinstance(model, str):
        raise InvalidRequestError(
            f"model must be a model name (a string) or None for the default, got {type(model).__name__} "
            f"{_short(model)}."
        )
    return model


def _token(value: Any, url: str) -> str | None:
    """The token to send to `url`, if any: explicit `hf_token=`, else `$HF_TOKEN` for Hugging Face.

    The environment's token was not given for this call, so it goes only to Hugging Face hosts
    over https. An explicit token goes where the caller says, except in clear text to another
    machine. Never part of a message: errors name the position of a bad character, not the token.
    """
    host = urllib.parse.urlsplit(url).hostname or ""
    if value is None:
        # $HF_TOKEN or the saved login, for Hugging Face hosts over https only (target.py).
        found = environment_token(url)
        if found is None:
            log.debug("no token from the environment is sent to %s", host)
            return None
        return _header_safe(found[1], found[0])
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError("hf_token must be a non-empty string or None.")
    if urllib.parse.urlsplit(url).scheme == "http" and not is_loopback(host):
        raise InvalidRequestError(
            f"hf_token would travel in clear text over http to {host}; use an https URL for that "
            "Space, or a loopback address (127.0.0.1) for a local one."
        )
    return _header_safe("hf_token", value.strip())


def _header_safe(name: str, token: str) -> str:
    """`token` if it can be sent as an HTTP header value; the error names the position only."""
    for i, ch in enumerate(token):
        if ch.isspace():
            raise InvalidRequestError(
                f"{name} has whitespace inside it (character {i + 1} of {len(token)}); a token is "
                "one word. Check how it was copied."
            )
        if not " " < ch < "\x7f":
            raise InvalidRequestError(
                f"{name} has a character that cannot be sent in an HTTP header (character "
                f"{i + 1} of {len(token)}: non-ASCII or control); Hugging Face tokens are ASCII."
            )
    return token


def _proxy(proxy: Any) -> str | None:
    """A proxy URL httpx can use, or None; refused at the call rather than retried for nothing."""
    if proxy is None:
        return None
    if not isinstance(proxy, str) or "://" not in proxy:
        raise InvalidRequestError("proxy must be a URL such as 'http://host:3128', or None.")
    parseable_url(proxy, "proxy")
    parts = urllib.parse.urlsplit(proxy.strip())
    scheme = parts.scheme.lower()
    if scheme in SOCKS_PROXY_SCHEMES:
        if importlib.util.find_spec("socksio") is None:
            raise InvalidRequestError(
                f"proxy: a {scheme} proxy needs the socksio package; pip install 'httpx[socks]', or use an http proxy."
            )
    elif scheme not in HTTP_PROXY_SCHEMES:
        raise InvalidRequestError(
            f"proxy has the scheme {scheme or 'none'}; use http://, https:// or socks5:// (e.g. 'http://host:3128')."
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise InvalidRequestError("proxy has an invalid port.") from None
    if not parts.hostname:
        raise InvalidRequestError("proxy has no host; use a URL such as 'http://host:3128'.")
    return proxy.strip()


def _files(value: Any) -> tuple[Attachment, ...]:
    files = value or ()
    if isinstance(files, str | os.PathLike):
        files = (files,)
    if not isinstance(files, list | tuple):
        raise InvalidRequestError("files must be a list of file paths.")
    return tuple(check_file(f) for f in files)


def parse_options(
    proxy: Any,
    kwargs: dict[str, Any],
    *,
    class_url: str | None = None,
    conversation_space: Any = None,
) -> RequestOptions:
    """Turn `create_async_generator`'s keyword arguments into checked options.

    `class_url` is a subclass's own `url` (None for the class itself), `conversation_space` the
    Space of a conversation being continued; see `resolve_space` for the order.
    """
    kw = dict(kwargs)
    space, chosen_by = resolve_space(kw, conversation_space, class_url)
    parseable_url(space, chosen_by)
    url = space_url(space, chosen_by)
    token = _token(kw.pop("hf_token", None), url)
    verify = kw.pop("verify", True)
    if not isinstance(verify, bool):
        raise InvalidRequestError("verify must be True or False (TLS certificate checks).")
    opts = RequestOptions(
        target=SpaceTarget(url=url, token=token, proxy=_proxy(proxy), verify=verify, space_id=space_id_of(space)),
        files=_files(kw.pop("files", None)),
        timeout=_seconds("timeout", kw.pop("timeout", None)),
        first_token_timeout=_seconds("first_token_timeout", kw.pop("first_token_timeout", DEFAULT_FIRST_TOKEN_TIMEOUT)),
        idle_timeout=_seconds("idle_timeout", kw.pop("idle_timeout", DEFAULT_IDLE_TIMEOUT)),
        connect_timeout=_required_seconds("connect_timeout", kw.pop("connect_timeout", DEFAULT_CONNECT_TIMEOUT)),
        max_retries=_retries(kw.pop("max_retries", DEFAULT_MAX_RETRIES)),
        retry_backoff=_required_seconds(
            "retry_backoff", kw.pop("retry_backoff", DEFAULT_RETRY_BACKOFF), MAX_RETRY_BACKOFF
        ),
        ignored=tuple(sorted(k for k in kw if k in IGNORED_KWARGS)),
    )
    unknown = sorted(k for k in kw if k not in IGNORED_KWARGS)
    if unknown:
        raise InvalidRequestError(f"Unknown option(s) {', '.join(unknown)}. Known: {', '.join(KNOWN_OPTIONS)}.")
    if opts.ignored:
        log.debug("the Space has no setting for %s; ignored", ", ".join(opts.ignored))
    return opts
