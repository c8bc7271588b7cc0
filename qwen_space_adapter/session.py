"""The Space session: where the Space is, what its API looks like, and one client per conversation.

The Space's config and API info are fetched once per process and target (`SpaceInfo`), then every
conversation gets a `gradio_client` client of its own, built from that cache without a request
and bound to the conversation's session hash: two conversations never share server-side history.
Clients are short-lived (one answer) and closed with their threads.
"""

from __future__ import annotations

import concurrent.futures
import re
import threading
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from . import _gc_internals as gci
from .endpoints import SpaceAPI, discover
from .errors import (
    APIChangedError,
    QwenSpaceError,
    RateLimitedError,
    SpaceUnavailableError,
)
from .target import DEFAULT_SPACE_URL, SpaceTarget, env_space, space_url

__all__ = ["DEFAULT_SPACE_URL", "SpaceInfo", "SpaceTarget", "env_space", "space_url"]

@dataclass
class SpaceInfo:
    """What one fetch of the Space's config and API info tells; shared by all its conversations."""

    target: SpaceTarget
    config: dict[str, Any]
    api_info: dict[str, Any]
    api: SpaceAPI


_INFO: dict[tuple[str, str, str | None, bool], SpaceInfo] = {}
_INFO_LOCKS: dict[tuple[str, str, str | None, bool], threading.Lock] = {}
_INFO_GUARD = threading.Lock()


def forget_spaces() -> None:
    """Drop the per-process cache of Space configs (the next conversation fetches again)."""
    with _INFO_GUARD:
        _INFO.clear()


def cached_info(target: SpaceTarget) -> SpaceInfo | None:
    return _INFO.get(target.key)


def map_connect_error(exc: BaseException, url: str) -> QwenSpaceError:
    """Translate what gradio_client or httpx raised while reaching the Space."""
    if isinstance(exc, QwenSpaceError):
        return exc
    text = str(exc)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return SpaceUnavailableError(
            f"Could not connect to the Space at {url}. Check the URL and your network; if it "
            "is a Hugging Face Space, it may be sleeping or restarting: retry in a minute."
        )
    if isinstance(exc, httpx.TimeoutException):
        return SpaceUnavailableError(f"The Space at {url} did not answer in time; retry later.")
    if isinstance(exc, httpx.TransportError):
        return SpaceUnavailableError(
            f"The connection to the Space at {url} failed ({type(exc).__name__}); retry later."
        )
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is None:
        m = re.search(r"\b(4\d\d|5\d\d)\b", text)
        status = int(m.group(1)) if m and "fetch" in text.lower() else None
    if status == 429 or "Too many requests" in text:
        return RateLimitedError(
            f"The Space at {url} is rate limiting requests; wait a minute, or duplicate the Space "
            "and pass space= with your copy and hf_token=."
        )
    if status in (401, 403):
        err = SpaceUnavailableError(
            f"The Space at {url} refused access ({status}); if it is private, pass hf_token= "
            "(or set HF_TOKEN) with a token that can read it."
        )
        err.retryable = False
        return err
    if (status is not None and status >= 500) or "Could not fetch config" in text:
        return SpaceUnavailableError(
            f"The Space at {url} is not serving (HTTP {status or 'error'}): it may be sleeping, "
            "paused, building or restarting. Retry later, or check its page on Hugging Face."
        )
    if "Could not get Gradio config" in text:
        return SpaceUnavailableError(
            f"{url} answered, but not with a Gradio app: the Space may be sleeping, paused or "
            "building (Hugging Face then shows a page of its own), or this is not a Gradio Space. "
            "Check its page, then retry."
        )
    if isinstance(exc, KeyError | TypeError | StopIteration | ValueError):
        return APIChangedError(
            f"The Space at {url} answered with a config this gradio_client cannot read "
            f"({type(exc).__name__}). Its API has changed; update qwen_space_adapter."
        )
    return SpaceUnavailableError(f"Could not use the Space at {url}: {type(exc).__name__}.")


_STAGES = {
    "SLEEPING": ("is sleeping. A request wakes it: retry in a minute or two, or open {page} to wake it.", True),
    "PAUSED": ("is paused by its owner and will not answer until they restart it. Use a duplicate "
               "of it (space=...).", False),
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
    try:
        from huggingface_hub import get_space_runtime

        stage = str(getattr(get_space_runtime(target.space_id, token=target.token), "stage", ""))
    except Exception:
        return None
    stage = stage.rsplit(".", 1)[-1].upper()
    page = f"https://huggingface.co/spaces/{target.space_id}"
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


def _fetch_info(target: SpaceTarget) -> SpaceInfo:
    with _INFO_GUARD:
        lock = _INFO_LOCKS.setdefault(target.key, threading.Lock())
    with lock:
        info = _INFO.get(target.key)
        if info is not None:
            return info
        try:
            client = gci.AdapterClient(target.url, **target.client_kwargs())
        except Exception as exc:
            error = map_connect_error(exc, target.url)
            if isinstance(error, SpaceUnavailableError | APIChangedError) and target.space_id:
                error = stage_error(target) or error
            raise error from None
        try:
            config, api_info = client.config, client._info
        finally:
            close_client(client)
        info = SpaceInfo(target, config, api_info, discover(config))
        info.config["connect_heartbeat"] = False
        _INFO[target.key] = info
        return info


async def space_info(target: SpaceTarget) -> SpaceInfo:
    """The Space's config and API, fetched on first use in this process and cached after."""
    info = _INFO.get(target.key)
    if info is not None:
        return info
    return await anyio.to_thread.run_sync(_fetch_info, target, abandon_on_cancel=True)


def open_client(info: SpaceInfo, session_hash: str) -> gci.AdapterClient:
    """A client for one conversation's session, built without any request to the Space.

    The heartbeat is off: gradio_client's heartbeat thread blocks up to 15 s on a read before it
    notices `close()`, which would leak a thread per answer. Without a heartbeat the Space keeps
    the session's state until it evicts it, which is what lets a saved conversation continue later.
    """
    cached = (info.config, info.api_info)
    try:
        client = gci.AdapterClient(info.target.url, cached=cached, **info.target.client_kwargs())
    except Exception as exc:
        raise map_connect_error(exc, info.target.url) from None
    client.session_hash = session_hash
    return client


def close_client(client: Any, wait: bool = True) -> None:
    """Stop the client's threads; with `wait`, return only once they have ended."""
    try:
        client.close()
    except Exception:
        pass
    for name in ("executor", "helper_executor", "stream_executor"):
        pool: concurrent.futures.ThreadPoolExecutor | None = getattr(client, name, None)
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)

