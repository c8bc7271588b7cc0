"""Where the Space is and how to reach it: plain data, no network, cheap to import.

Kept apart from `session.py` so that `import qwen_space_adapter` and the checks made at call time
(bad input is refused before anything is sent) do not import gradio_client or httpx.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequestError

DEFAULT_SPACE_ID = "Qwen/Qwen2.5-1M-Demo"
DEFAULT_SPACE_URL = "https://qwen-qwen2-5-1m-demo.hf.space"
SPACE_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def space_url(space: str) -> str:
    """The direct URL of a Space given as a URL or as an `owner/name` id.

    Hugging Face serves a Space at `https://{owner}-{name}.hf.space`, lowercased, with `.` and `_`
    turned into `-`; computing it avoids a request to the Hub API on every new client.
    """
    if not isinstance(space, str) or not space.strip():
        raise InvalidRequestError("space must be a Space id like 'Qwen/Qwen2.5-1M-Demo' or a URL.")
    space = space.strip()
    if space.startswith(("http://", "https://")):
        return space.rstrip("/")
    if SPACE_ID_RE.match(space):
        sub = re.sub(r"[._]", "-", space.replace("/", "-")).lower()
        return f"https://{sub}.hf.space"
    raise InvalidRequestError(
        f"space={space!r} is neither a Space id ('owner/name') nor an http(s) URL."
    )


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
            "token": self.token,
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
