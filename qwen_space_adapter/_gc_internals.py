"""The only module that touches gradio_client internals, guarded by version, with fallbacks.

Why internals at all: the public API cannot meet the targets in `docs/benchmark-protocol.md`.
- A `Client` fetches the Space's config and API info on construction, and keeps one session hash.
  A conversation needs a session of its own, so every conversation would pay two HTTP requests.
  `AdapterClient` answers both from a per-process cache (the h2oGPT approach, without copying).
- Iterating a `Job` busy-polls every 1 ms, and its per-job reader sleeps 50 ms whenever nothing is
  pending. `tap()` copies every raw server message of a client to the adapter the moment the
  client's SSE reader receives it, so updates reach the caller without a polling quantum.

- gradio_client's SSE reader thread cannot be stopped: it reads until the Space closes the
  stream. A reader left behind on a session takes the next turn's messages, so every turn must
  end its reader. `AdapterClient` hands the reader (and only the reader: it is the one caller of
  `httpx_kwargs.copy()` once the heartbeat is off) a transport it can shut from another thread.

What is used: `Client._get_config`, `Client._get_api_info`, `Client._telemetry_thread` (overridden),
`Client.httpx_kwargs.copy()` in `stream_messages`, and `Client.pending_messages_per_event` (a dict
of deques that the client's reader appends to and `send_data` registers events in with
`setdefault`). `problems()` checks each of them; when one is
missing or changed, `tap_supported()` is false and the adapter uses the public `Job` API instead
(slower, same results). `tests/test_gc_internals.py` fails loudly when these internals change.
"""

from __future__ import annotations

import copy
import functools
import inspect
import socket
import threading
import urllib.parse
from collections import deque
from collections.abc import Callable
from typing import Any

import gradio_client
import httpx
from gradio_client import Client
from gradio_client.utils import ServerMessage

# gradio_client releases whose internals this module was written and tested against.
TESTED_VERSIONS = ("2.7",)
GC_VERSION: str = getattr(gradio_client, "__version__", "") or ""

READER_ENDED = "qwen_space_adapter:reader_ended"
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
    if "self.httpx_kwargs.copy()" not in stream_src:
        found.append("Client.stream_messages no longer copies httpx_kwargs for its reader")
    return found


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

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self._streams: list[Any] = []
        self._shut = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._shut:
            raise httpx.RemoteProtocolError("the turn is over", request=request)
        response = super().handle_request(request)
        stream = response.extensions.get("network_stream")
        with self._lock:
            late = self._shut
            if stream is not None:
                self._streams.append(stream)
        if late:
            self.shutdown()
        return response

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
        transport = ShuttableTransport(verify=self._owner.ssl_verify, proxy=proxy)
        self._owner.reader_transports.append(transport)
        kwargs["transport"] = transport
        kwargs["timeout"] = self._owner.reader_timeout
        return kwargs


class AdapterClient(Client):
    """A `Client` that can be built from a cached config and API info, without HTTP requests,
    and whose SSE reader can be ended by `end_reader()`.

    With `cached=None` it behaves like `Client` (it fetches), which is how the first client of a
    Space in this process is built; its config and info then seed every later client.
    """

    def __init__(
        self,
        src: str,
        *,
        cached: tuple[dict, dict] | None = None,
        reader_timeout: Any = None,
        **kwargs: Any,
    ) -> None:
        self._cached = cached
        self.reader_transports: list[ShuttableTransport] = []
        self.reader_timeout = reader_timeout
        self.left_unfinished = False  # a job was cancelled before it completed
        super().__init__(src, **kwargs)
        self.httpx_kwargs: dict[str, Any] = _ReaderKwargs(dict(self.httpx_kwargs), self)
        # The adapter uploads files itself, as a browser does (with `mime_type`), and sends file
        # values that already live on the Space (uploads, files in the chatbot) with their `meta`
        # tag, which Gradio 5 requires; gradio_client would try to upload those again.
        for endpoint in self.endpoints.values():
            if hasattr(endpoint, "process_input_files"):
                endpoint.process_input_files = _as_is

    def end_reader(self) -> None:
        """Cut the connection of every SSE reader this client opened (from any thread)."""
        for transport in list(self.reader_transports):
            transport.shutdown()

    def _get_config(self) -> dict:
        if self._cached is not None:
            return copy.deepcopy(self._cached[0])
        return super()._get_config()

    def _get_api_info(self):  # type: ignore[no-untyped-def]
        if self._cached is not None:
            return copy.deepcopy(self._cached[1])
        return super()._get_api_info()

    def _telemetry_thread(self) -> None:
        # Telemetry would open a connection to huggingface.co from a thread per client.
        return None


class _TappedDeque(deque):  # type: ignore[type-arg]
    """The per-event message deque gradio_client reads from, copying each message to a sink.

    Intermediate `process_generating` messages go only to the sink: the adapter applies their
    diffs itself, so gradio_client's own per-update work (a deep copy of the whole chatbot per
    update) is skipped. Every other message reaches gradio_client as before, so the `Job`
    still completes, fails and cancels through its own code.
    """

    def __init__(self, items: Any, event_id: str, sink: Sink) -> None:
        super().__init__(items)
        self.event_id = event_id
        self.sink = sink

    def append(self, msg: Any) -> None:
        if isinstance(msg, dict):
            if msg.get("msg") == ServerMessage.process_generating:
                self.sink(self.event_id, msg)
                return
            # gradio_client later pops keys from a completed message's output: copy first.
            copied = dict(msg)
            if isinstance(copied.get("output"), dict):
                copied["output"] = dict(copied["output"])
            self.sink(self.event_id, copied)
        elif msg is None:
            # gradio_client's mark that the reader ended while this event was pending.
            self.sink(self.event_id, {"msg": READER_ENDED})
        super().append(msg)


class _TappedEvents(dict):  # type: ignore[type-arg]
    """`Client.pending_messages_per_event`, wrapping each event's deque in a `_TappedDeque`."""

    def __init__(self, sink: Sink, on_register: Callable[[str], None]) -> None:
        super().__init__()
        self.sink = sink
        self.on_register = on_register

    def __setitem__(self, event_id: str, value: Any) -> None:
        if isinstance(value, deque) and not isinstance(value, _TappedDeque):
            value = _TappedDeque(value, event_id, self.sink)
        super().__setitem__(event_id, value)

    def setdefault(self, event_id: str, default: Any = None) -> Any:
        # Only `send_data` calls setdefault: it is how we learn a job's event id, in the
        # submitting thread, before the job's messages are consumed.
        if event_id not in self:
            self[event_id] = default if default is not None else deque()
        self.on_register(event_id)
        return self[event_id]


def join(client: Client, fn_index: int, data: list[Any], trigger_id: int | None = None) -> str:
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
    payload = {"data": list(data), "event_data": None, "fn_index": fn_index, "trigger_id": trigger_id,
               **endpoint.oauth_token_payload()}
    hash_data = {"fn_index": fn_index, "session_hash": client.session_hash}
    return str(client.send_data(payload, hash_data, endpoint.protocol, None))


def predict(client: Client, fn_index: int, data: list[Any], trigger_id: int | None = None) -> dict[str, Any]:
    """Call an unqueued step (`queue=False`) as the page does: one POST to `run/predict`.

    Such a step never takes a place in the Space's queue: it runs at once, a generator only to
    its first yield. Its answer comes back as the completed message the queue would have sent,
    so the follower reads both the same way. Blocking.
    """
    url = urllib.parse.urljoin(client.src_prefixed, "run/predict")
    body = {"data": list(data), "event_data": None, "fn_index": fn_index, "trigger_id": trigger_id,
            "session_hash": client.session_hash}
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


def request_kwargs(client: Client) -> dict[str, Any]:
    """What a plain request needs to go where this client's requests go, as they go.

    Headers (the token, where it may be sent), cookies, TLS and the client's own httpx options;
    `dict()` drops the reader's transport, which only the SSE reader may have.
    """
    return {"headers": client.headers, "cookies": client.cookies, "verify": client.ssl_verify,
            **dict(client.httpx_kwargs)}


def cancel(client: Client, fn_index: int, event_id: str | None) -> None:
    """Ask the Space to stop an event, as `Job.cancel` does for Gradio newer than 4.29."""
    url = urllib.parse.urljoin(client.src_prefixed, "cancel")
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
        tapped = _TappedEvents(sink, on_register)
        for event_id, messages in client.pending_messages_per_event.items():
            tapped[event_id] = messages
        client.pending_messages_per_event = tapped
