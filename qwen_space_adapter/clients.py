"""The life cycle of a turn's gradio_client client: built from the cached config without a
request, bound to the conversation's session, used for the Space's plain requests (the app id,
an upload, closing a session) and closed without waiting for its threads.

Why a client per turn: gradio_client keeps one SSE reader per client, and Gradio hands a
session's messages to whichever reader asks first; a client that outlived its turn would steal
the next turn's messages. Ending a turn's client is `ending.py`'s job.
"""

from __future__ import annotations

import concurrent.futures.thread  # noqa: F401  (its exit join registered first: `_end_readers_at_exit` runs before it)
import threading
import weakref
from typing import TYPE_CHECKING, Any

import httpx

from . import _gc_internals as gci
from .constants import DEFAULT_CONNECT_TIMEOUT
from .errors import QwenSpaceError
from .failures import translate
from .target import SpaceTarget

if TYPE_CHECKING:
    from .config_cache import SpaceInfo


# The clients of turns not ended yet. A stream left open when its loop ends without closing its
# generators (a bare `loop.close()`) never ends its turn: its reader would keep the interpreter's
# exit waiting (concurrent.futures joins its threads) while the Space generated the whole answer for
# nobody. At exit, before that join, every such reader is cut: the Space drops the session's events.
_OPEN: weakref.WeakSet[Any] = weakref.WeakSet()


def _end_readers_at_exit() -> None:
    for client in list(_OPEN):
        try:
            client.end_reader()
        except Exception:
            pass


# threading's exit hooks run newest first, before the interpreter joins any thread; a private
# hook of CPython's (3.9+), so where it is missing the exit only waits, as before.
getattr(threading, "_register_atexit", lambda _hook: None)(_end_readers_at_exit)


def client_kwargs(target: SpaceTarget, connect_timeout: float) -> dict[str, Any]:
    """gradio_client's arguments, with every plain request bounded by `connect_timeout` in total.

    A request that is not a stream (config, info, join, upload, cancel, app_id, drop-queued)
    either answers within that time or fails; httpx's own timeouts bound each read only, so the
    total is a `Deadline` (httpx's `auth=`, which gradio_client passes on every such request).
    A server that trickles or never answers holds a thread and a socket no longer than that.
    """
    kwargs = target.client_kwargs()
    httpx_kwargs = dict(kwargs.get("httpx_kwargs") or {})
    httpx_kwargs["timeout"] = httpx.Timeout(connect_timeout)
    httpx_kwargs["auth"] = gci.Deadline(connect_timeout)
    kwargs["httpx_kwargs"] = httpx_kwargs
    return kwargs


def _reader_timeout(connect_timeout: float) -> httpx.Timeout:
    # Gradio sends a heartbeat every 15 s on an idle stream: a minute of silence is a dead link.
    return httpx.Timeout(60.0, connect=connect_timeout)


def open_client(
    info: SpaceInfo, session_hash: str, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> gci.AdapterClient:
    """A client for one turn of a conversation's session, built without any request to the Space.

    The heartbeat is off: gradio_client's heartbeat thread blocks up to 15 s on a read before it
    notices `close()`, which would leak a thread per answer. Without a heartbeat the Space keeps
    the session's state until it evicts it, which is what lets a saved conversation continue later.
    """
    cached = (info.config, info.api_info)
    try:
        client = gci.AdapterClient(
            info.target.url,
            cached=cached,
            endpoints=info.endpoints,
            reader_timeout=_reader_timeout(connect_timeout),
            **client_kwargs(info.target, connect_timeout),
        )
    except Exception as exc:
        raise translate(exc, info.target.url) from None
    client.session_hash = session_hash
    _OPEN.add(client)
    return client


def close_client(client: Any, wait: bool = True) -> None:
    """Stop the client's threads; with `wait`, return only once they have ended."""
    _OPEN.discard(client)
    try:
        client.close()
    except Exception:
        pass
    gci.shut_executors(client, wait)


def live_app_id(client: Any) -> Any:
    """The id the Space's app drew at launch, asked now (None when the Space does not say)."""
    try:
        url = gci.derived_url(client, "app_id")
    except AttributeError:
        return None
    try:
        response = httpx.get(url, **gci.request_kwargs(client))
        if response.status_code != 200:
            return None
        return response.json().get("app_id")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def upload(client: Any, name: str, data: bytes, mime_type: str) -> dict[str, Any]:
    """Upload one attachment as a browser does, and return the file value the input holds.

    gradio_client's own upload sends no `mime_type`, and pages such as Qwen-Agent's read it
    (`file.mime_type.startswith('image/')`). The `meta` tag marks it as a file for Gradio 5.
    """
    try:
        # The client's deadline, plus a second per MB: a large file on a slow link is no stall.
        deadline = (gci.request_deadline(client) or DEFAULT_CONNECT_TIMEOUT) + len(data) / 1e6
        response = httpx.post(
            gci.derived_url(client, "upload"),
            files=[("files", (name, data, mime_type))],
            **gci.request_kwargs(client, deadline=deadline),
        )
        response.raise_for_status()
        path = response.json()[0]
        if isinstance(path, str) and "://" in path:
            gci.check_same_origin(client.src, path)  # a file value must not point elsewhere
    except QwenSpaceError:
        raise
    except Exception as exc:
        raise translate(exc, client.src) from None
    # The page's value for an uploaded file: where the Space serves it, and no `is_stream`.
    url = gci.file_url(client, path)
    return {
        "path": path,
        "url": url,
        "orig_name": name,
        "size": len(data),
        "mime_type": mime_type,
        "meta": {"_type": "gradio.FileData"},
    }


def close_session(client: Any) -> None:
    """Tell the Space that this session's page is closed, as a browser tab does when it closes.

    The page keeps a heartbeat stream open while it lives; when that stream ends, Gradio runs the
    page's `unload` steps and marks the session closed, and deletes its State an hour later
    (instead of keeping it until its session cap evicts it). The adapter opens no heartbeat
    during turns, so it opens one now and ends it once the Space has answered. Blocking.
    """
    url = gci.derived_url(client, f"heartbeat/{client.session_hash}")
    try:
        with httpx.stream("GET", url, **gci.request_kwargs(client)) as response:
            if response.status_code != 200:
                raise httpx.HTTPStatusError(
                    f"heartbeat answered {response.status_code}", request=response.request, response=response
                )
            next(response.iter_bytes(), None)  # the Space's first beat: it holds the session now
    except QwenSpaceError:
        raise
    except Exception as exc:
        raise translate(exc, client.src) from None
