"""The Space's config cache: its config, API info and page model, fetched once per process and
target and read again only when a failure says the Space changed (`space_info(stale=...)`).

Why a cache: every turn needs the page model (which steps a submit runs) and gradio_client's
endpoints; fetching them per turn would double the requests of a conversation and, for a large
page, cost the caller's event loop. Why it is safe: `SpaceInfo` is read-only once built, and a
Space that restarted with another layout is caught before its first step (the app id check in
`turn`), which reads the config again.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any

from . import _gc_internals as gci
from . import workers
from .clients import client_kwargs, close_client
from .constants import DEFAULT_CONNECT_TIMEOUT
from .errors import APIChangedError, SpaceUnavailableError
from .failures import stage_error, translate
from .page import Page
from .target import SpaceTarget
from .workers import Channel, in_daemon_thread


@dataclass
class SpaceInfo:
    """What one fetch of the Space's config and API info tells; shared by all its conversations."""

    target: SpaceTarget
    config: dict[str, Any]
    api_info: dict[str, Any]
    page: Page
    # gradio_client's endpoints of this config, built by the first turn's client and copied
    # by every later one (see `AdapterClient`); read-only, like the config and info.
    endpoints: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def app_id(self) -> Any:
        """Changes whenever the Space's app restarts (Gradio draws it at launch)."""
        return self.config.get("app_id")


_INFO: dict[tuple[str, str, str | None, bool], SpaceInfo] = {}  # oldest first
_INFO_LOCKS: dict[tuple[str, str, str | None, bool], threading.Lock] = {}
_INFO_GUARD = threading.Lock()
SPACES_KEPT = 64  # targets (URL, token, proxy, TLS) whose config a process keeps; the oldest goes


def forget_spaces() -> None:
    """Drop the per-process cache of Space configs (the next conversation fetches again)."""
    with _INFO_GUARD:
        _INFO.clear()
        _INFO_LOCKS.clear()


def _keep(info: SpaceInfo) -> None:
    with _INFO_GUARD:
        _INFO.pop(info.target.key, None)
        _INFO[info.target.key] = info
        while len(_INFO) > SPACES_KEPT:
            _INFO_LOCKS.pop(next(iter(_INFO)), None)  # a fetch holding it just finishes
            _INFO.pop(next(iter(_INFO)))


def cached_info(target: SpaceTarget) -> SpaceInfo | None:
    return _INFO.get(target.key)


def _fetch_info(
    target: SpaceTarget, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, stale: SpaceInfo | None = None
) -> SpaceInfo:
    with _INFO_GUARD:
        lock = _INFO_LOCKS.setdefault(target.key, threading.Lock())
    # One fetch at a time per Space, so a hundred new conversations fetch once; but never wait
    # behind a fetch stuck on a silent Space for longer than a fetch of one's own may take.
    locked = lock.acquire(timeout=2 * connect_timeout)
    try:
        info = _INFO.get(target.key)
        if info is not None and info is not stale:
            return info
        # Read gradio_client's source now, on this thread, not on the caller's loop at the first
        # turn (0.15 s): which internals the adapter may use is checked once per process.
        gci.tap_supported()
        gci.join_supported()
        try:
            client = gci.AdapterClient(target.url, **client_kwargs(target, connect_timeout))
        except Exception as exc:
            error = translate(exc, target.url)
            if isinstance(error, SpaceUnavailableError | APIChangedError) and target.space_id:
                error = stage_error(target) or error
            raise error from None
        try:
            config, api_info = client.config, gci.api_info(client)
        finally:
            close_client(client)
        info = SpaceInfo(target, config, api_info, Page.from_config(config))
        _keep(info)
        return info
    finally:
        if locked:
            lock.release()


async def space_info(
    target: SpaceTarget, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, stale: SpaceInfo | None = None
) -> SpaceInfo:
    """The Space's config and page, fetched on first use in this process and cached after.

    With `stale`, the cached info is known not to fit any more (the Space was redeployed, say):
    it is fetched again unless another task already did.
    """
    info = _INFO.get(target.key)
    if info is not None and info is not stale:
        return info
    if stale is not None:
        return await in_daemon_thread(_fetch_info, target, connect_timeout, stale)
    # A hundred new conversations at once: one fetch, on a worker (a thread start would wait on
    # the caller's loop for the new thread to run), handed to every caller waiting for it.
    channel = Channel()
    with _INFO_GUARD:
        first = target.key not in _FLIGHTS
        _FLIGHTS.setdefault(target.key, []).append(channel)
    if first:
        workers.spawn(_fly, target, connect_timeout)
    ok, value = (await channel.drain())[0]
    if not ok:
        raise copy.copy(value)  # each caller gets an error of its own (turns annotate them)
    return value


_FLIGHTS: dict[tuple[str, str, str | None, bool], list[Channel]] = {}


def _fly(target: SpaceTarget, connect_timeout: float) -> None:
    """Fetch for every caller waiting on this Space's first fetch, and hand each the outcome."""
    try:
        outcome: tuple[bool, Any] = (True, _fetch_info(target, connect_timeout))
    except BaseException as exc:  # handed to the callers
        outcome = (False, exc)
    with _INFO_GUARD:
        waiters = _FLIGHTS.pop(target.key, [])
    for channel in waiters:
        channel.put(outcome)
