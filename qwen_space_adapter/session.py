"""The Space session: its config (cached, refreshed when it no longer fits), one client per turn,
one turn at a time per conversation, and every reader ended before the next turn starts.

The Space's config and API info are fetched once per process and target (`SpaceInfo`) and read
again only when a failure says the Space changed (`space_info(stale=...)`). Each turn gets a
`gradio_client` client of its own, built from that cache without a request and bound to the
conversation's session hash. Gradio delivers a session's messages to whichever reader of that
session asks first, so two readers on one session steal each other's messages: `SessionGate`
lets one turn run per session at a time, and `ending.end_client` ends the turn's reader (gracefully,
then by cutting its connection) before the gate opens for the next turn.
"""

from __future__ import annotations

import concurrent.futures
import copy
import threading
import urllib.parse
import weakref
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import _gc_internals as gci
from .bridge import Channel, in_daemon_thread
from .errors import APIChangedError, QwenSpaceError, SpaceUnavailableError
from .failures import translate
from .page import Page
from .target import DEFAULT_SPACE_URL, SpaceTarget, env_space, hub_endpoint, hub_token, space_url

__all__ = ["DEFAULT_SPACE_URL", "SpaceInfo", "SpaceTarget", "env_space", "space_url"]

DEFAULT_CONNECT_TIMEOUT = 30.0


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


_INFO: dict[tuple[str, str, str | None, bool], SpaceInfo] = {}
_INFO_LOCKS: dict[tuple[str, str, str | None, bool], threading.Lock] = {}
_INFO_GUARD = threading.Lock()


def forget_spaces() -> None:
    """Drop the per-process cache of Space configs (the next conversation fetches again)."""
    with _INFO_GUARD:
        _INFO.clear()


def cached_info(target: SpaceTarget) -> SpaceInfo | None:
    return _INFO.get(target.key)


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


def _fetch_info(target: SpaceTarget, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                stale: SpaceInfo | None = None) -> SpaceInfo:
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
            config, api_info = client.config, client._info
        finally:
            close_client(client)
        info = SpaceInfo(target, config, api_info, Page.from_config(config))
        _INFO[target.key] = info
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
    # A hundred new conversations at once: one fetch thread, not a hundred thread starts on
    # the caller's loop (each waits for the new thread to run; 0.7 s of stall in all).
    channel = Channel()
    with _INFO_GUARD:
        first = target.key not in _FLIGHTS
        _FLIGHTS.setdefault(target.key, []).append(channel)
    if first:
        threading.Thread(target=_fly, args=(target, connect_timeout), name="qwen-space config",
                         daemon=True).start()
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


class SessionGate:
    """One turn at a time on a Space session in this process, across tasks, threads and loops.

    A second turn on the same conversation waits here until the first is over, reader included;
    waiting is cancellable and bounded by the caller's deadlines.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = False
        self._waiters: list[Channel] = []

    async def acquire(self) -> None:
        while True:
            with self._lock:
                if not self._busy:
                    self._busy = True
                    return
                channel = Channel()
                self._waiters.append(channel)
            try:
                await channel.drain()
            finally:
                with self._lock:
                    if channel in self._waiters:
                        self._waiters.remove(channel)

    def release(self) -> None:
        with self._lock:
            self._busy = False
            waiters, self._waiters = self._waiters, []
        for channel in waiters:
            channel.put(None)


_GATES: weakref.WeakValueDictionary[tuple[str, str], SessionGate] = weakref.WeakValueDictionary()
_GATES_GUARD = threading.Lock()


def gate(url: str, session_hash: str) -> SessionGate:
    """The gate of one session of one Space (shared by every copy of the conversation)."""
    with _GATES_GUARD:
        found = _GATES.get((url, session_hash))
        if found is None:
            found = _GATES[(url, session_hash)] = SessionGate()
        return found


_UNFINISHED: dict[tuple[str, str], list[list[Any]]] = {}
_UNFINISHED_GUARD = threading.Lock()
UNFINISHED_KEPT = 4  # per session; older ones are unlikely to be reused by the Space
UNFINISHED_SESSIONS = 1024


_OWN: dict[tuple[str, str], set[str]] = {}
OWN_SESSIONS = 4096


def own_events(url: str, session_hash: str) -> set[str]:
    """The ids of this session's events that this process joined (a live set, for the follower
    to add to): an event of the session not among them belongs to another client."""
    with _UNFINISHED_GUARD:
        key = (url, session_hash)
        found = _OWN.pop(key, None)
        if found is None:
            found = set()
        elif len(found) > 256:
            found.clear()  # only the session's recent events can still send anything
        _OWN[key] = found
        while len(_OWN) > OWN_SESSIONS:
            _OWN.pop(next(iter(_OWN)))
        return found


def unfinished_bases(url: str, session_hash: str) -> list[list[Any]]:
    """The last outputs of this session's streams that ended unfinished, newest first."""
    with _UNFINISHED_GUARD:
        return list(_UNFINISHED.get((url, session_hash), []))


def remember_unfinished(url: str, session_hash: str, outputs: list[Any] | None) -> None:
    """Keep the last outputs of a stream that failed or was left: see `JobFollower._rebase`."""
    if outputs is None:
        return
    with _UNFINISHED_GUARD:
        kept = _UNFINISHED.pop((url, session_hash), [])
        _UNFINISHED[(url, session_hash)] = [list(outputs), *kept][:UNFINISHED_KEPT]
        while len(_UNFINISHED) > UNFINISHED_SESSIONS:
            _UNFINISHED.pop(next(iter(_UNFINISHED)))


def open_client(info: SpaceInfo, session_hash: str,
                connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> gci.AdapterClient:
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
        deadline = getattr(client.httpx_kwargs.get("auth"), "seconds", DEFAULT_CONNECT_TIMEOUT) + len(data) / 1e6
        response = httpx.post(
            gci.check_same_origin(client.src, client.upload_url), files=[("files", (name, data, mime_type))],
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
    url = urllib.parse.urljoin(client.src_prefixed, f"file={path}")
    return {"path": path, "url": url, "orig_name": name, "size": len(data), "mime_type": mime_type,
            "meta": {"_type": "gradio.FileData"}}


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
