"""The keyword options of a request, checked before anything is sent.

Every check here runs at call time, so a typo or a bad path fails at the line that made it,
with a message naming the argument, and the Space never sees a half-valid request.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidRequestError
from .target import DEFAULT_SPACE_URL, SpaceTarget, env_space, space_id_of, space_url

log = logging.getLogger("qwen_space_adapter")

# A file is sent whole as context; Qwen2.5-1M reads about 4 MB of text, so 16 MB leaves room
# for markup-heavy documents while refusing accidents (a video, a disk image) before upload.
MAX_FILE_BYTES = 16 * 1024 * 1024
DEFAULT_FIRST_TOKEN_TIMEOUT = 600.0  # a 1M-token prefill takes minutes on the live Space
DEFAULT_IDLE_TIMEOUT = 120.0
# g4f and OpenAI-style callers pass these; the Space has no knob for them, so they are ignored.
IGNORED_KWARGS = frozenset(
    {
        "stream", "temperature", "top_p", "max_tokens", "stop", "api_key", "web_search",
        "media", "images", "image", "image_name", "response_format", "tool_calls", "tools",
        "presence_penalty", "frequency_penalty", "seed", "n", "user", "timeout_read",
        "api_base", "base_url", "extra_body", "provider", "download_media", "aspect_ratio",
        "conversation_id", "action", "ignore_stream", "stream_timeout", "audio",
    }
)


@dataclass(frozen=True)
class RequestOptions:
    target: SpaceTarget
    files: tuple[Path, ...] = ()
    timeout: float | None = None
    first_token_timeout: float | None = DEFAULT_FIRST_TOKEN_TIMEOUT
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    max_retries: int = 2
    retry_backoff: float = 0.5
    ignored: tuple[str, ...] = field(default=())


def _seconds(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"{name} must be a number of seconds or None, got {value!r}.")
    if not math.isfinite(value) or value <= 0:
        raise InvalidRequestError(f"{name} must be a positive, finite number of seconds, got {value!r}.")
    return float(value)


def check_file(path: Any) -> Path:
    """A document to attach: an existing, readable, non-empty text file within the size limit."""
    if not isinstance(path, str | os.PathLike) or not str(path):
        raise InvalidRequestError(f"files must hold file paths, got {type(path).__name__}.")
    p = Path(path).expanduser()
    if not p.exists():
        raise InvalidRequestError(f"Attachment {str(p)!r} does not exist.")
    if p.is_dir():
        raise InvalidRequestError(f"Attachment {str(p)!r} is a directory; name the files in it.")
    if not p.is_file():
        raise InvalidRequestError(f"Attachment {str(p)!r} is not a regular file.")
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InvalidRequestError(
            f"Attachment {str(p)!r} has {size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit "
            "(Qwen2.5-1M reads about 4 MB of text); send a part of it."
        )
    try:
        with open(p, "rb") as fh:
            head = fh.read(65536)
    except OSError as e:
        raise InvalidRequestError(f"Attachment {str(p)!r} cannot be read: {e.strerror}.") from None
    if b"\x00" in head:
        raise InvalidRequestError(
            f"Attachment {str(p)!r} looks binary (it has NUL bytes); the Space reads text "
            "documents only. Convert it to text first."
        )
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # a multi-byte character cut by the 64 KiB read is fine
            raise InvalidRequestError(
                f"Attachment {str(p)!r} is not UTF-8 text; convert it to UTF-8 first."
            ) from None
    return p


def parse_options(proxy: str | None, kwargs: dict[str, Any], default_url: str = DEFAULT_SPACE_URL) -> RequestOptions:
    """Turn `create_async_generator`'s keyword arguments into checked options."""
    kw = dict(kwargs)
    space = kw.pop("space", None) or env_space() or default_url
    url = space_url(space)
    token = kw.pop("hf_token", None)
    if token is None:
        token = os.environ.get("HF_TOKEN") or None
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise InvalidRequestError("hf_token must be a non-empty string or None.")
    if proxy is not None and (not isinstance(proxy, str) or "://" not in proxy):
        raise InvalidRequestError("proxy must be a URL such as 'http://host:3128', or None.")
    verify = kw.pop("verify", True)
    if not isinstance(verify, bool):
        raise InvalidRequestError("verify must be True or False (TLS certificate checks).")
    files = kw.pop("files", None) or ()
    if isinstance(files, str | os.PathLike):
        files = (files,)
    if not isinstance(files, list | tuple):
        raise InvalidRequestError("files must be a list of file paths.")
    checked = tuple(check_file(f) for f in files)
    retries = kw.pop("max_retries", 2)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidRequestError(f"max_retries must be a non-negative integer, got {retries!r}.")
    opts = RequestOptions(
        target=SpaceTarget(url=url, token=token, proxy=proxy, verify=verify, space_id=space_id_of(space)),
        files=checked,
        timeout=_seconds("timeout", kw.pop("timeout", None)),
        first_token_timeout=_seconds(
            "first_token_timeout", kw.pop("first_token_timeout", DEFAULT_FIRST_TOKEN_TIMEOUT)
        ),
        idle_timeout=_seconds("idle_timeout", kw.pop("idle_timeout", DEFAULT_IDLE_TIMEOUT)),
        max_retries=retries,
        retry_backoff=_seconds("retry_backoff", kw.pop("retry_backoff", 0.5)) or 0.5,
        ignored=tuple(sorted(k for k in kw if k in IGNORED_KWARGS)),
    )
    unknown = sorted(k for k in kw if k not in IGNORED_KWARGS)
    if unknown:
        raise InvalidRequestError(
            f"Unknown option(s) {', '.join(unknown)}. Known: space, hf_token, files, timeout, "
            "first_token_timeout, idle_timeout, max_retries, retry_backoff, verify, proxy."
        )
    if opts.ignored:
        log.debug("the Space has no setting for %s; ignored", ", ".join(opts.ignored))
    return opts
