"""Where the Space is and how to reach it: plain data, no network, cheap to import.

Kept apart from `session.py` so that `import qwen_space_adapter` and the checks made at call time
(bad input is refused before anything is sent) do not import gradio_client or httpx.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import re
import ssl
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from .constants import DEFAULT_SPACE_ID, DEFAULT_SPACE_URL
from .errors import InvalidRequestError

SPACE_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def space_url(space: Any, name: str = "space") -> str:
    """The direct URL of a Space given as a URL or as an `owner/name` id.

    Hugging Face serves a Space at `https://{owner}-{name}.hf.space`, lowercased, with `.` and `_`
    turned into `-`; computing it avoids a request to the Hub API on every new client. `name` is
    the argument named in errors (`space`, `conversation.space`, `$QWEN_SPACE`).
    """
    if not isinstance(space, str) or not space.strip():
        raise InvalidRequestError(
            f"{name} must be a Space id like 'Qwen/Qwen2.5-1M-Demo' or a URL, got {space!r}; "
            "leave it out (or pass None) for the default Space."
        )
    space = space.strip()
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", space):
        return _checked_url(space, name)
    if SPACE_ID_RE.match(space):
        sub = re.sub(r"[._]", "-", space.replace("/", "-")).lower()
        return f"https://{sub}.hf.space"
    hint = ""
    if _looks_like_host(space.split("/", 1)[0]):
        host = urllib.parse.urlsplit("//" + space).hostname or ""
        scheme = "http" if is_loopback(host) else "https"
        hint = f" A URL needs its scheme: {name}='{scheme}://{space.rstrip('/')}'."
    raise InvalidRequestError(f"{name}={space!r} is neither a Space id ('owner/name') nor an http(s) URL.{hint}")


def _looks_like_host(text: str) -> bool:
    """`127.0.0.1:8765`, `localhost`, `example.org:80`: a host, not a Space owner.

    Space owners may contain dots, so only a port, `localhost` or an IP address tells.
    """
    host, _, port = text.partition(":")
    if port:
        return port.isdigit()
    if host.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _checked_url(url: str, name: str) -> str:
    """An http(s) URL with a host and a valid port, without the trailing slash."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidRequestError(f"{name}={url!r} is not an http(s) URL.")
    if any(c.isspace() for c in url):
        raise InvalidRequestError(f"{name}={url!r} has whitespace in it; URLs cannot.")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise InvalidRequestError(f"{name}={url!r} has an invalid port.") from None
    if not parts.hostname:
        raise InvalidRequestError(f"{name}={url!r}: the URL has no host; pass a URL such as 'http://127.0.0.1:7860'.")
    return url.rstrip("/")


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine: `localhost` or a loopback address (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_hugging_face(url: str) -> bool:
    """Whether `url` is a Hugging Face host (`huggingface.co`, `*.hf.space`) reached over https.

    Only there is a token taken implicitly from the environment sent.
    """
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    hf_host = host in ("huggingface.co", "hf.space") or host.endswith((".huggingface.co", ".hf.space"))
    return parts.scheme.lower() == "https" and hf_host


HUB_TOKEN_OPT_IN = "QWEN_SPACE_HUB_TOKEN"
"""Set to 1 to send the token to `$HF_ENDPOINT` when that is not Hugging Face (a mirror you trust)."""


def environment_token(url: str) -> tuple[str, str] | None:
    """The token the environment holds for `url`, and where it was found, or None.

    `$HF_TOKEN`, else the login `huggingface-cli login` saved (`$HF_TOKEN_PATH`, or `token` in
    `$HF_HOME`, by default `~/.cache/huggingface`), as huggingface_hub finds it; read at call
    time, so a changed environment counts. Only for Hugging Face hosts over https: nobody gave
    it for any other host. Stripped: a token file ends with a newline.
    """
    if not is_hugging_face(url):
        return None
    env = os.environ.get("HF_TOKEN", "").strip()
    if env:
        return env, "HF_TOKEN"
    if os.environ.get("HF_HUB_DISABLE_IMPLICIT_TOKEN", "").strip().lower() in ("1", "true", "yes", "on"):
        return None
    path = os.environ.get("HF_TOKEN_PATH", "").strip()
    if not path:
        home = os.environ.get("HF_HOME", "").strip() or os.path.join(
            os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache"),
            "huggingface",
        )
        path = os.path.join(os.path.expanduser(home), "token")
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            saved = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return (saved, "the saved login") if saved else None


def hub_endpoint() -> str:
    """Where huggingface_hub asks about Spaces: `$HF_ENDPOINT`, else https://huggingface.co."""
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or "https://huggingface.co"


def hub_token(token: str | None, endpoint: str) -> str | None:
    """The token the Hub lookup at `endpoint` may carry: only to Hugging Face over https.

    A mirror (`$HF_ENDPOINT`) gets it only when `$QWEN_SPACE_HUB_TOKEN=1` says so, and never in
    clear text to another machine.
    """
    if not token:
        return None
    if is_hugging_face(endpoint):
        return token
    if os.environ.get(HUB_TOKEN_OPT_IN, "").strip() != "1":
        return None
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme.lower() == "https" or is_loopback(parts.hostname or ""):
        return token
    return None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context for the process.

    gradio_client passes `ssl_verify` to every httpx call it makes (several per answer); given
    `True`, httpx builds a new context each time, loading the CA bundle again: most of the
    adapter's CPU per answer. Given a context, httpx uses it as is.
    """
    return ssl.create_default_context()


@dataclass(frozen=True)
class SpaceTarget:
    """Where to connect and how. The token is kept out of `repr` and of every message."""

    url: str
    token: str | None = field(default=None, repr=False)
    proxy: str | None = None
    verify: bool = True
    space_id: str | None = None  # "owner/name" when known: lets a failure ask the Hub why

    def __post_init__(self) -> None:
        # Every way in (hf_token=, $HF_TOKEN, a token file, the harness) may bring a newline.
        if isinstance(self.token, str):
            object.__setattr__(self, "token", self.token.strip() or None)

    @property
    def key(self) -> tuple[str, str, str | None, bool]:
        digest = hashlib.sha256((self.token or "").encode()).hexdigest()[:16]
        return (self.url, digest, self.proxy, self.verify)

    def client_kwargs(self) -> dict[str, Any]:
        import httpx

        httpx_kwargs: dict[str, Any] = {"timeout": httpx.Timeout(60.0, connect=10.0)}
        if self.proxy:
            httpx_kwargs["proxy"] = self.proxy
        return {
            # False, not None: given None, huggingface_hub sends the token of the environment
            # ($HF_TOKEN or the saved login) to whatever host this is. `parse_options` decides.
            "token": self.token or False,
            "httpx_kwargs": httpx_kwargs,
            "verbose": False,
            "download_files": False,
            "ssl_verify": _tls_context() if self.verify else False,
            "analytics_enabled": False,
        }


def space_id_of(space: str) -> str | None:
    """The `owner/name` id of a Space given as an id, or as the default Space's URL."""
    space = space.strip()
    if SPACE_ID_RE.match(space):
        return space
    if space.rstrip("/") == DEFAULT_SPACE_URL:
        return DEFAULT_SPACE_ID
    return None


def env_space() -> str:
    """The Space named by `QWEN_SPACE`, if any."""
    return os.environ.get("QWEN_SPACE", "").strip()
