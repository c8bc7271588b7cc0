"""The only module that touches gradio_client internals, guarded by version, with fallbacks.

Why internals at all: the public API cannot meet the targets in `docs/benchmark-protocol.md`.
- A `Client` fetches the Space's config and API info on construction, and keeps one session hash.
  A conversation needs a session of its own, so every conversation would pay two HTTP requests.
  `AdapterClient` answers both from a per-process cache (the h2oGPT approach, without copying).
- Iterating a `Job` busy-polls every 1 ms, and its per-job reader sleeps 50 ms whenever nothing is
  pending. `tap()` copies every raw server message of a client to the adapter the moment the
  client's SSE reader receives it, so updates reach the caller without a polling quantum.

- gradio_client builds every later URL from the Space's config (`api_prefix`): a config could send
  the token, cookies and files to another host. `AdapterClient` checks every URL it derives, and the
  adapter's own requests go through `derived_url`, so nothing leaves the origin the caller named.
- huggingface_hub 2.x fetches a list of AI agents from `$HF_ENDPOINT` (often a mirror) the first time a
  process builds Hub headers, which gradio_client does in every `Client`: a request to a host the caller did
  not name, up to 3 s of a first turn offline. `quiet_agent_registry` resolves it as huggingface_hub does
  when the Hub is unreachable (its cached copy, else none), before the first client is built.
- httpx timeouts are per read: a server that trickles a byte at a time holds a request (and its
  thread and socket) forever. `Deadline` gives each plain request a total deadline.
- gradio_client's SSE reader thread cannot be stopped: it reads until the Space closes the
  stream. A reader left behind on a session takes the next turn's messages, so every turn must
  end its reader. `AdapterClient` hands the reader (and only the reader: it is the one caller of
  `httpx_kwargs.copy()` once the heartbeat is off) a transport it can shut from another thread.
- Gradio closes a session's stream once its last pending event completes, and a step joined as that close
  is on the wire can register with gradio_client before its reader thread reads the close: gradio_client
  ends the step with that reader. `AdapterClient.resume_reader` follows it on a new reader instead.

What is used: `Client._get_config`, `Client._get_api_info`, `Client._telemetry_thread` (overridden),
`Client.httpx_kwargs.copy()` in `stream_messages`, `Client.pending_messages_per_event` (a dict
of deques that the client's reader appends to and `send_data` registers events in with
`setdefault`), and the reader bookkeeping `send_data` keeps under `pending_lock` (`stream_open`,
`stream_epoch`, `pending_event_epoch`). `problems()` checks each of them; when one is
missing or changed, `tap_supported()` is false and the adapter uses the public `Job` API instead
(slower, same results). `tests/test_gc_internals.py` fails loudly when these internals change.
"""

from __future__ import annotations

import concurrent.futures
import copy
import functools
import inspect
import json
import socket
import threading
import time
import urllib.parse
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import gradio_client
import httpcore
import httpx
from gradio_client import Client
from gradio_client.utils import ServerMessage
from packaging import version as _version

from .constants import MAX_UPDATE_BYTES
from .errors import APIChangedError, StreamInterruptedError

# gradio_client releases whose internals this module was written and tested against.
TESTED_VERSIONS = ("2.7",)
GC_VERSION: str = getattr(gradio_client, "__version__", "") or ""

READER_ENDED = "qwen_space_adapter:reader_ended"
# MAX_UPDATE_BYTES (constants): the largest single server message (one update) the reader
# accepts; a larger one ends the turn with `StreamInterruptedError`. A whole 1M-token answer,
# JSON-escaped, stays well below it.
OLDEST_GRADIO = _version.Version("4.0")
"""Older pages make gradio_client post the whole config to a Hugging Face service to learn the
API (`SPACE_FETCHER_URL`), a host the caller did not name; they are refused before that."""
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_DERIVED_URLS = (
    "src_prefixed",
    "api_url",
    "sse_url",
    "heartbeat_url",
    "sse_data_url",
    "ws_url",
    "upload_url",
    "reset_url",
)
Sink = Callable[[str, Any], None]
"""Called from gradio_client's reader thread with (event_id, message); must not block."""


def problems() -> list[str]:
    """What no longer matches the internals this module relies on (empty when all is well)."""
    found = []
    if not GC_VERSION.startswith(TESTED_VERSIONS):
        found.append(f"gradio_client {GC_VERSION} is not a tested version {TESTED_VERSIONS}")
    for name in ("_get_config", "_get_api_info", "_telemetry_thread", "send_data", "stream_messages"):
        if not callable(getattr(Client, name, None)):
            found.append(f"Client.{name} is missing")
    try:
        init_src = inspect.getsource(Client.__init__)
        send_src = inspect.getsource(Client.send_data)
        stream_src = inspect.getsource(Client.stream_messages)
    except (OSError, TypeError):
        return [*found, "gradio_client source is not inspectable"]
    if "self.pending_messages_per_event" not in init_src:
        found.append("Client.pending_messages_per_event is no longer set up in __init__")
    if "pending_messages_per_event.setdefault(event_id" not in send_src:
        found.append("Client.send_data no longer registers events with setdefault")
    if "pending_messages_per_event[event_id].append" not in stream_src:
        found.append("Client.stream_messages no longer appends messages per event")
    try:
        endpoint_src = inspect.getsource(gradio_client.client.Endpoint)
    except (OSError, TypeError, AttributeError):
        endpoint_src = ""
    if "data = self.process_input_files(*data)" not in endpoint_src:
        found.append("Endpoint no longer uploads files through process_input_files")
    if "self._client = weakref.ref(client)" not in endpoint_src:
        found.append("Endpoint no longer holds its client as _client (AdapterClient rebinds copies)")
    if "self.httpx_kwargs.copy()" not in stream_src:
        found.append("Client.stream_messages no longer copies httpx_kwargs for its reader")
    # `AdapterClient.resume_reader` opens a reader as `send_data` does, and ends it the same way.
    for needed in ("self.stream_epoch += 1", "self.pending_event_epoch.get(eid, epoch + 1) <= epoch"):
        if needed not in send_src:
            found.append(f"Client.send_data no longer counts events per reader ({needed!r})")
    if "ServerMessage.close_stream" not in stream_src:
        found.append("Client.stream_messages no longer ends its reader on close_stream")
    try:
        job_src = inspect.getsource(gradio_client.client.Job.__init__)
    except (OSError, TypeError, AttributeError):
        job_src = ""
    if "self.future" not in job_src:
        found.append("Job.__init__ no longer keeps its future as self.future")
    # The attributes this module reads outside the tap (api_info, shut_executors, file_url...).
    for attribute in (
        "self._info",
        "self.src_prefixed",
        "self.sse_url",
        "self.upload_url",
        "self.httpx_kwargs",
        "self.protocol",
        "self.pending_lock",
        "self.stream_open",
        "self.stream_epoch",
        "self.pending_event_epoch",
        *(f"self.{name}" for name in _EXECUTORS),
    ):
        if attribute not in init_src:
            found.append(f"Client.__init__ no longer sets {attribute}")
    return found


_EXECUTORS = ("executor", "helper_executor", "stream_executor")  # thread pools a Client keeps


@functools.cache
def tap_supported() -> bool:
    """Whether the tap can be used: checked once, on first use (not at import: it reads source)."""
    return not problems()


class ShuttableTransport(httpx.HTTPTransport):
    """An httpx transport whose open response streams can be cut from any thread.

    `shutdown()` shuts the sockets down (a blocked read then sees the end of the stream, which
    gradio_client's reader treats as a closed stream and returns quietly) and refuses any
    request made after it.
    """

    def __init__(self, *, on_refused: Callable[[StreamInterruptedError], None] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self._streams: list[Any] = []
        self._shut = False
        self._on_refused = on_refused
        self.closed_by_space = False  # the Space ended the stream with `close_stream`

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._shut:
            raise httpx.RemoteProtocolError("the turn is over", request=request)
        response = super().handle_request(request)
        response.stream = _Messages(response.stream, request, self._on_refused, self._closed)
        stream = response.extensions.get("network_stream")
        with self._lock:
            late = self._shut
            if stream is not None:
                self._streams.append(stream)
        if late:
            self.shutdown()
        return response

    def _closed(self) -> None:
        self.closed_by_space = True

    def shutdown(self) -> None:
        with self._lock:
            self._shut = True
            streams, self._streams = self._streams, []
        for stream in streams:
            sock = stream.get_extra_info("socket")
            try:
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Messages(httpx.SyncByteStream):
    """A response stream handed out one whole server message (or several) at a time.

    gradio_client's reader does `buffer += chunk` and searches the whole buffer for the end of
    a message on every chunk: quadratic in the size of one message (236 s of CPU for one 50 MB
    update). Given whole messages, its buffer holds one message and each step is linear. A
    message that grows past `MAX_UPDATE_BYTES` is refused as it arrives, in linear time.
    """

    def __init__(
        self,
        stream: Any,
        request: httpx.Request,
        on_refused: Callable[[StreamInterruptedError], None] | None,
        on_closed: Callable[[], None] = lambda: None,
    ) -> None:
        self._stream = stream
        self._request = request
        self._on_refused = on_refused
        self._on_closed = on_closed

    def __iter__(self) -> Any:
        parts: list[bytes] = []
        size = 0
        tail = b""  # the last byte of the pending message, for an end split across two chunks
        for chunk in self._stream:
            if not chunk:
                continue
            # The last end of a message in tail + chunk: inside the chunk, or across the two.
            found = chunk.rfind(b"\n\n")
            end = found + 2 if found >= 0 else (1 if tail == b"\n" and chunk[:1] == b"\n" else 0)
            if end > 0:
                parts.append(chunk[:end])
                block = b"".join(parts)
                if closes_stream(block):
                    self._on_closed()  # before gradio_client reads it and ends the reader
                yield block
                rest = chunk[end:]
                parts, size, tail = ([rest] if rest else []), len(rest), rest[-1:]
            else:
                parts.append(chunk)
                size += len(chunk)
                tail = chunk[-1:]
            if size > MAX_UPDATE_BYTES:
                error = StreamInterruptedError(
                    f"The Space sent an update larger than {MAX_UPDATE_BYTES // (1024 * 1024)} MiB "
                    f"({size} bytes and counting); the adapter refuses updates over "
                    "qwen_space_adapter.constants.MAX_UPDATE_BYTES and ended the answer. Ask for a shorter "
                    "answer, or start a new conversation if the Space's history has grown that large."
                )
                if self._on_refused is not None:
                    self._on_refused(error)
                # gradio_client's reader ends quietly on this one; the turn reads `on_refused`'s error.
                raise httpx.RemoteProtocolError("update too large", request=self._request)
        if parts:
            yield b"".join(parts)

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


def closes_stream(block: bytes) -> bool:
    """Whether a block of whole server messages ends with Gradio's `close_stream`.

    It is always the last message of a stream, and small: only the tail is looked at, and parsed
    only when it names the message, so an update's size costs nothing here.
    """
    tail = block[-256:]
    if b"close_stream" not in tail:
        return False
    last = tail.rstrip(b"\n").rpartition(b"\n\n")[2]
    if not last.startswith(b"data:"):
        return False
    try:
        return bool(json.loads(last[5:]).get("msg") == ServerMessage.close_stream)
    except (ValueError, AttributeError):
        return False


def _as_is(*data: Any) -> tuple[Any, ...]:
    return data


class _ReaderKwargs(dict):  # type: ignore[type-arg]
    """`Client.httpx_kwargs`: as itself for requests, with a shuttable transport for the reader.

    `httpx.post(**kwargs)` reads the mapping directly; only `stream_messages` calls `.copy()`,
    and gets a transport the turn can shut down when it is over.
    """

    def __init__(self, base: dict[str, Any], owner: AdapterClient) -> None:
        super().__init__(base)
        self._owner = owner

    def copy(self) -> dict[str, Any]:  # type: ignore[override]
        kwargs = dict(self)
        proxy = kwargs.pop("proxy", None)
        kwargs.pop("auth", None)  # the total deadline is for plain requests, not for the stream
        transport = ShuttableTransport(verify=self._owner.ssl_verify, proxy=proxy, on_refused=self._owner.refuse)
        self._owner.reader_transports.append(transport)
        if self._owner.reader_ended:
            transport.shutdown()  # a reader resumed as its turn ended must not outlive the turn
        kwargs["transport"] = transport
        kwargs["timeout"] = self._owner.reader_timeout
        return kwargs


class Deadline(httpx.Auth):
    """A total deadline for one plain request, passed as httpx's `auth=` (which every request of
    gradio_client and of the adapter carries through `httpx_kwargs`).

    httpx's timeouts bound each read, so a server sending a byte every half second holds the
    request, its thread and its socket forever. Here every read and write of the request's
    connection is bounded by the time left; past the deadline it raises `httpcore.ReadTimeout`
    (httpx's `ReadTimeout` to the caller) and httpcore closes the socket. No thread, no timer.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def auth_flow(self, request: httpx.Request) -> Any:
        end = time.monotonic() + self.seconds
        previous = request.extensions.get("trace")

        def trace(name: str, info: dict[str, Any]) -> None:
            if previous is not None:
                previous(name, info)
            if name.endswith(("connect_tcp.complete", "start_tls.complete")):
                _bound(info.get("return_value"), end)

        request.extensions = {**request.extensions, "trace": trace}
        yield request

    def __repr__(self) -> str:
        return f"Deadline({self.seconds})"


def _bound(stream: Any, end: float) -> None:
    """Make every read and write of a connection's stream end by `end` (monotonic)."""
    read, write = getattr(stream, "read", None), getattr(stream, "write", None)
    if read is None or write is None:
        return

    def left(timeout: float | None, error: type[Exception]) -> float:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise error("the request's total deadline passed")
        return remaining if timeout is None else min(timeout, remaining)

    def bounded_read(max_bytes: int, timeout: float | None = None) -> bytes:
        return read(max_bytes, left(timeout, httpcore.ReadTimeout))

    def bounded_write(buffer: bytes, timeout: float | None = None) -> None:
        write(buffer, left(timeout, httpcore.WriteTimeout))

    stream.read, stream.write = bounded_read, bounded_write


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with ws mapped to http, default ports filled in."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
    try:
        port = parts.port
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def check_same_origin(src: str, url: str) -> str:
    """`url` if it is on the origin of `src`; else `APIChangedError` naming the other host.

    Every URL the adapter or gradio_client derives from what a Space sent (its config's
    `api_prefix`, an upload's answer) passes here before a request, so a Space cannot send the
    caller's token, cookies or files to a host the caller did not name.
    """
    if origin(url) != origin(src):
        scheme, host, port = origin(url)
        raise APIChangedError(
            f"The Space at {src.rstrip('/')} points its requests to another origin "
            f"({scheme}://{host}:{port}); the adapter sends nothing to a host the caller did not "
            "name. Pass that host as space= if you trust it."
        )
    return url


def derived_url(client: Client, path: str) -> str:
    """The URL of one of the Space's routes (`app_id`, `cancel`...), checked to be on its origin."""
    return check_same_origin(client.src, urllib.parse.urljoin(client.src_prefixed, path))


class AdapterClient(Client):
    """A `Client` that can be built from a cached config and API info, without HTTP requests,
    and whose SSE reader can be ended by `end_reader()`.

    With `cached=None` it behaves like `Client` (it fetches), which is how the first client of a
    Space in this process is built; its config and info then seed every later client. The cached
    config and info are shared, not copied: with the tap, nothing in gradio_client mutates them
    once fetched (only `Client._get_api_info`'s fetch edits the info it fetched), and a deep copy
    per turn cost 0.7 s of the caller's event loop for a page with 2,000 components.
    """

    # gradio_client starts a telemetry thread per client unless $GRADIO_ANALYTICS_ENABLED says
    # otherwise (`analytics_enabled or getenv(...)`): a thread start per turn for nothing. It
    # reads this attribute right after setting it; the setter ignores what it is given.
    analytics_enabled = property(lambda self: False, lambda self, value: None)
    stream_open: bool  # set in `Client.__init__`, kept by `send_data` and the reader

    def __init__(
        self,
        src: str,
        *,
        cached: tuple[dict, dict] | None = None,
        reader_timeout: Any = None,
        endpoints: dict[Any, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._cached = cached
        # `endpoints`: a dict shared by every client of one cached config. Empty, this client's
        # endpoints fill it; filled, this client's endpoints are shallow copies of them, bound
        # to it: `Endpoint.__init__` scans every component per input (quadratic in the page).
        self._templates = endpoints if cached is not None and tap_supported() else None
        self.reader_transports: list[ShuttableTransport] = []
        self.reader_timeout = reader_timeout
        self.left_unfinished = False  # a job was cancelled before it completed
        self.reader_ended = False  # `end_reader` was called: the turn is over, no reader may follow
        self.refused: StreamInterruptedError | None = None  # why the reader was ended, if by us
        quiet_agent_registry()  # before gradio_client builds its Hub headers
        super().__init__(src, **kwargs)
        self.httpx_kwargs: dict[str, Any] = _ReaderKwargs(dict(self.httpx_kwargs), self)
        if self._cached is not None and self._templates:
            self.config = self._cached[0]
            self.endpoints = {key: _rebound(endpoint, self) for key, endpoint in self._templates.items()}
            return
        # The adapter uploads files itself, as a browser does (with `mime_type`), and sends file
        # values that already live on the Space (uploads, files in the chatbot) with their `meta`
        # tag, which Gradio 5 requires; gradio_client would try to upload those again.
        for endpoint in self.endpoints.values():
            if hasattr(endpoint, "process_input_files"):
                endpoint.process_input_files = _as_is
        if self._templates is not None and not self._templates:
            self._templates.update(self.endpoints)

    def end_reader(self) -> None:
        """Cut the connection of every SSE reader this client opened (from any thread)."""
        with self.pending_lock:
            self.reader_ended = True
        for transport in list(self.reader_transports):
            transport.shutdown()

    def resume_reader(self, event_id: str) -> bool:
        """Follow a live event on a new reader when the Space closed the one it was counted on.

        Gradio ends a session's stream (`close_stream`) right after the completed message of the
        session's last pending event. The adapter joins the next step as soon as that message
        arrives, so under load the join can register before gradio_client's reader has read the
        close already on the wire: gradio_client counts the event as that reader's and ends it
        with the reader, while the Space runs it and queues its messages for the session's next
        stream. The page's browser reads the close first (one thread) and opens a stream for its
        join; this opens that stream after the fact. Only a close the Space sent counts: a cut
        connection, a refused update or a turn that is over still ends the event. From the
        thread that ended the reader, outside `pending_lock`; True when the event is followed.
        """
        with self.pending_lock:
            if self.reader_ended or self.refused is not None:
                return False
            if self.stream_open:  # a later join opened a reader: the event's messages reach it
                self.pending_event_epoch[event_id] = self.stream_epoch
                return True
            last = self.reader_transports[-1] if self.reader_transports else None
            if last is None or not last.closed_by_space:
                return False
            self.stream_open = True
            self.stream_epoch += 1
            epoch = self.stream_epoch
            self.pending_event_epoch[event_id] = epoch
        try:
            future = self.stream_executor.submit(self.stream_messages, self.protocol, self.session_hash)
        except RuntimeError:  # the client is being closed
            with self.pending_lock:
                if self.stream_epoch == epoch:
                    self.stream_open = False
            return False
        future.add_done_callback(functools.partial(self._resumed_reader_done, epoch))
        return True

    def _resumed_reader_done(self, epoch: int, future: Any) -> None:
        # As `send_data`'s own `close_stream` callback: the events counted on this reader end with it.
        with self.pending_lock:
            if self.stream_epoch == epoch:
                self.stream_open = False
            pending = [
                messages
                for event_id, messages in self.pending_messages_per_event.items()
                if self.pending_event_epoch.get(event_id, epoch + 1) <= epoch
            ]
        for messages in pending:
            messages.append(None)

    def refuse(self, error: StreamInterruptedError) -> None:
        """Record why the reader is being ended (an update too large), for the turn to raise."""
        self.refused = error

    def _get_config(self) -> dict:
        if self._cached is not None:
            if self._templates:
                # `Client.__init__` builds no endpoint from this one; `__init__` binds copies.
                return {**self._cached[0], "dependencies": []}
            return self._cached[0]
        config = super()._get_config()
        # No heartbeat, for this client and every client built from its config: see
        # `clients.open_client`. Set before `Client.__init__` reads it, so none is started.
        if isinstance(config, dict):
            config["connect_heartbeat"] = False
        return config

    def _get_api_info(self):  # type: ignore[no-untyped-def]
        # Called once every URL is derived from the config and before the first request to any
        # of them: the one place they are all checked.
        for name in _DERIVED_URLS:
            url = getattr(self, name, None)
            if isinstance(url, str):
                check_same_origin(self.src, url)
        self._check_version()
        if self._cached is not None:
            return self._cached[1]
        return super()._get_api_info()

    def _check_version(self) -> None:
        """Refuse pages older than the adapter drives, before gradio_client sends their config
        to `SPACE_FETCHER_URL` (a Hugging Face service the caller did not name)."""
        app_version = getattr(self, "app_version", None)
        claimed = self.config.get("version") if isinstance(self.config, dict) else None
        if not isinstance(app_version, _version.Version) or app_version < OLDEST_GRADIO:
            raise APIChangedError(
                f"The Space at {self.src.rstrip('/')} runs Gradio {claimed or 'of an unknown version'}; "
                f"the adapter drives Gradio {OLDEST_GRADIO} and newer (the Qwen demo runs 4.44 and 5.x). "
                "Nothing was sent beyond its config."
            )

    def _telemetry_thread(self) -> None:
        # Telemetry would open a connection to huggingface.co from a thread per client.
        return None


def quiet_agent_registry() -> None:
    """Resolve huggingface_hub's agent registry without fetching it (see the module's docstring).

    Detection still works from a cached copy; only the fetch is skipped. Hub versions without
    the registry need nothing; `tests/test_origin.py` fails if a later one fetches some other way.
    """
    try:
        from huggingface_hub import constants as hub_constants
        from huggingface_hub.utils import _detect_agent as registry
    except ImportError:
        return
    if getattr(registry, "_registry", "absent") is not None:
        return  # resolved already, or a version without it
    path = getattr(hub_constants, "AGENT_HARNESSES_PATH", None)
    read = getattr(registry, "_read_cached_registry", None)
    cached = read(path, max_age=None) if path and callable(read) else None
    empty: Any = getattr(registry, "_EMPTY_REGISTRY", {"standardEnvVars": [], "harnesses": {}})
    registry._registry = cached or empty


def _rebound(endpoint: Any, client: Client) -> Any:
    """A copy of a template `Endpoint` that belongs to `client` (its only per-client field)."""
    clone = copy.copy(endpoint)
    clone._client = weakref.ref(client)
    return clone


class _TappedDeque(deque):  # type: ignore[type-arg]
    """The per-event message deque gradio_client reads from, copying each message to a sink.

    Intermediate `process_generating` messages go only to the sink: the adapter applies their
    diffs itself, so gradio_client's own per-update work (a deep copy of the whole chatbot per
    update) is skipped. Every other message reaches gradio_client as before, so the `Job`
    still completes, fails and cancels through its own code.
    """

    def __init__(self, items: Any, event_id: str, sink: Sink, ends: _Ends | None = None) -> None:
        super().__init__(items)
        self.event_id = event_id
        self.sink = sink
        self.ends = ends or _Ends()
        self.completed = False

    def append(self, msg: Any) -> None:
        if isinstance(msg, dict):
            if msg.get("msg") == ServerMessage.process_generating:
                self.sink(self.event_id, msg)
                return
            if msg.get("msg") == ServerMessage.process_completed:
                self.completed = True
            # gradio_client later pops keys from a completed message's output: copy first.
            copied = dict(msg)
            if isinstance(copied.get("output"), dict):
                copied["output"] = dict(copied["output"])
            self.sink(self.event_id, copied)
        elif msg is None:
            # gradio_client's mark that the reader ended while this event was pending: unless
            # the event goes on on a new reader (`AdapterClient.resume_reader`), it ended with
            # it; `error` says why when the adapter ended it (an update over MAX_UPDATE_BYTES).
            if not self.completed and self.ends.resume(self.event_id):
                return
            self.sink(self.event_id, {"msg": READER_ENDED, "error": self.ends.why()})
        super().append(msg)


class _Ends:
    """What a tapped client says when its reader ends under an event: whether the event goes on
    on a new reader, and else why the reader ended (None when the adapter did not end it)."""

    def __init__(self, client: Any = None) -> None:
        self.client = client

    def resume(self, event_id: str) -> bool:
        resume = getattr(self.client, "resume_reader", None)
        return bool(resume(event_id)) if callable(resume) else False

    def why(self) -> Any:
        return getattr(self.client, "refused", None)


class _TappedEvents(dict):  # type: ignore[type-arg]
    """`Client.pending_messages_per_event`, wrapping each event's deque in a `_TappedDeque`."""

    def __init__(self, sink: Sink, on_register: Callable[[str], None], ends: _Ends | None = None) -> None:
        super().__init__()
        self.sink = sink
        self.on_register = on_register
        self.ends = ends or _Ends()

    def __setitem__(self, event_id: str, value: Any) -> None:
        if isinstance(value, deque) and not isinstance(value, _TappedDeque):
            value = _TappedDeque(value, event_id, self.sink, self.ends)
        super().__setitem__(event_id, value)

    def setdefault(self, event_id: str, default: Any = None) -> Any:
        # Only `send_data` calls setdefault: it is how we learn a job's event id, in the
        # submitting thread, before the job's messages are consumed.
        if event_id not in self:
            self[event_id] = default if default is not None else deque()
        self.on_register(event_id)
        return self[event_id]


def join(client: Client, fn_index: int, data: list[Any], event: dict[str, Any] | None = None) -> str:
    """Put one step on the Space's queue as `Job` would, without its per-job threads.

    A `Job` runs two helper threads that poll every 50 ms (`check_for_cancel`, `stream_sse_v1plus`)
    for as long as it lasts; with the tap, every message already reaches the adapter, so they only
    cost CPU (most of the adapter's at a few hundred conversations). Blocking: the POST to the
    queue. Returns the event id; `send_data` registers it (so the tap learns it) and opens the
    client's reader if none is open.
    """
    endpoint = client.endpoints[fn_index]
    # `data` holds every input slot, as the page sends it; the page also names the component
    # whose event started the chain (`trigger_id`) and sends `event_data`.
    payload = {"data": list(data), **(event or {}), "fn_index": fn_index, **endpoint.oauth_token_payload()}
    hash_data = {"fn_index": fn_index, "session_hash": client.session_hash}
    return str(client.send_data(payload, hash_data, endpoint.protocol, None))


def predict(client: Client, fn_index: int, data: list[Any], event: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call an unqueued step (`queue=False`) as the page does: one POST to `run/predict`.

    Such a step never takes a place in the Space's queue: it runs at once, a generator only to
    its first yield. Its answer comes back as the completed message the queue would have sent,
    so the follower reads both the same way. Blocking.
    """
    url = derived_url(client, "run/predict")
    body = {"data": list(data), **(event or {}), "fn_index": fn_index, "session_hash": client.session_hash}
    response = httpx.post(url, json=body, **request_kwargs(client))
    if response.status_code == 500:
        try:
            output = response.json()
        except ValueError:
            output = None
        if isinstance(output, dict) and "error" in output:
            return {"msg": "process_completed", "success": False, "output": output}
    response.raise_for_status()
    return {"msg": "process_completed", "success": True, "output": response.json()}


def request_kwargs(client: Client, deadline: float | None = None) -> dict[str, Any]:
    """What a plain request needs to go where this client's requests go, as they go.

    Headers (the token, where it may be sent), cookies, TLS and the client's own httpx options,
    its total `Deadline` included (`deadline` sets another, e.g. for a large upload);
    `dict()` drops the reader's transport, which only the SSE reader may have.
    """
    kwargs = {
        "headers": client.headers,
        "cookies": client.cookies,
        "verify": client.ssl_verify,
        **dict(client.httpx_kwargs),
    }
    if deadline is not None:
        kwargs["auth"] = Deadline(deadline)
    return kwargs


def api_info(client: Client) -> dict[str, Any]:
    """The API info the client fetched (`Client._info`): cached with the config, it seeds later clients."""
    return client._info  # type: ignore[no-any-return]


def shut_executors(client: Client, wait: bool) -> None:
    """Stop the client's executors (`close()` leaves them): with `wait`, until their threads end."""
    for name in _EXECUTORS:
        pool: concurrent.futures.ThreadPoolExecutor | None = getattr(client, name, None)
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)


def request_deadline(client: Client) -> float | None:
    """The total deadline of the client's plain requests (its `Deadline` auth), if it has one."""
    auth = client.httpx_kwargs.get("auth")
    return auth.seconds if isinstance(auth, Deadline) else None


def file_url(client: Client, path: str) -> str:
    """Where the Space serves an uploaded file: the value its page puts in a file's `url`."""
    return urllib.parse.urljoin(client.src_prefixed, f"file={path}")


def join_reader(client: Client) -> None:
    """Wait for the client's SSE reader to end: it runs on the `stream_executor` pool."""
    pool: concurrent.futures.ThreadPoolExecutor | None = getattr(client, "stream_executor", None)
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=False)


def job_future(job: Any) -> concurrent.futures.Future[Any] | None:
    """The future of a job: a `Job`'s own (`Job.future`), or the adapter's jobs' (`bridge`)."""
    future = getattr(job, "future", None)
    return future if isinstance(future, concurrent.futures.Future) else None


def stream_url(client: Client) -> str:
    """The Space's queue stream (`Client.sse_url`), checked to be on its origin."""
    return check_same_origin(client.src, client.sse_url)


def cancel(client: Client, fn_index: int, event_id: str | None) -> None:
    """Ask the Space to stop an event, as `Job.cancel` does for Gradio newer than 4.29."""
    url = derived_url(client, "cancel")
    body = {"fn_index": fn_index, "session_hash": client.session_hash, "event_id": event_id}
    httpx.post(url, json=body, **request_kwargs(client))


@functools.cache
def join_supported() -> bool:
    """Whether `join` can replace `Client.submit`: the tap works and the pieces it calls exist."""
    endpoint = getattr(gradio_client.client, "Endpoint", None)
    return (
        tap_supported()
        and all(callable(getattr(endpoint, n, None)) for n in ("insert_empty_state", "oauth_token_payload"))
        and "pending_messages.append(None)" in _source(Client.send_data)
    )


def _source(fn: Any) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return ""


def tap(client: Client, sink: Sink, on_register: Callable[[str], None]) -> None:
    """Route every raw server message of `client` to `sink` as soon as its reader gets it."""
    if not tap_supported():
        raise RuntimeError("gradio_client internals changed; use the public Job API")
    with client.pending_lock:
        tapped = _TappedEvents(sink, on_register, _Ends(client))
        for event_id, messages in client.pending_messages_per_event.items():
            tapped[event_id] = messages
        client.pending_messages_per_event = tapped
