"""A recording reverse proxy on loopback: the wire between one client and a replica, in order.

The browser-equivalence test puts one of these in front of a replica for each client (the page's
browser, the adapter) and compares what the two sent and got back. It must be transparent: SSE is
forwarded chunk by chunk as it arrives (a buffered stream would change what the page sees and
when), the `Host` header is kept so the page's URLs point back at the proxy, and nothing is
rewritten except `Accept-Encoding` (identity upstream, so what is recorded is what was sent).

Runs its own asyncio loop in a thread, so a sync test (Playwright's sync API) and an async one
(the adapter under anyio) can both use it. Raw h11 on the client side, httpx upstream.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import httpx

HOP = {
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"te",
    b"upgrade",
    b"proxy-connection",
    b"content-length",
    b"accept-encoding",
    b"trailer",
}


@dataclass
class Exchange:
    """One request and what came back. `sse` holds the parsed `data:` messages of a stream."""

    seq: int
    turn: str | None
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    json: Any = None
    parts: list[dict[str, Any]] | None = None  # multipart upload parts
    status: int | None = None
    response_type: str = ""
    response_json: Any = None
    sse: list[Any] = field(default_factory=list)
    done: bool = False
    started: float = 0.0  # seconds since the proxy started (for reading a dump; never compared)
    finished: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "done"}


def parse_multipart(body: bytes, content_type: str) -> list[dict[str, Any]]:
    """The parts of a multipart/form-data body: field name, filename, content type and bytes."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        return []
    boundary = b"--" + m.group(1).encode()
    parts = []
    for chunk in body.split(boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        data = data.removesuffix(b"\r\n")
        headers = dict(
            (k.strip().lower(), v.strip())
            for k, _, v in (line.partition(":") for line in head.decode("utf-8", "replace").split("\r\n"))
        )
        disp = headers.get("content-disposition", "")
        name = re.search(r'\bname="([^"]*)"', disp)
        filename = re.search(r'filename="([^"]*)"', disp)
        parts.append(
            {
                "name": name.group(1) if name else None,
                "filename": filename.group(1) if filename else None,
                "content_type": headers.get("content-type"),
                "bytes": data.decode("utf-8", "replace"),
            }
        )
    return parts


class RecordingProxy:
    """A reverse proxy to `upstream` that records every exchange in arrival order.

    `mark(label)` starts a new turn: later requests carry that label, which is how a recording is
    cut into the scenario's turns. `wait_idle()` waits until no request is in flight."""

    def __init__(self, upstream: str, name: str = "client") -> None:
        self.upstream = upstream.rstrip("/")
        self.name = name
        self.exchanges: list[Exchange] = []
        self.turn: str | None = None
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""
        self._t0 = time.monotonic()

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> str:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(120.0), follow_redirects=False)
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            port = self._server.sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"recording-proxy-{self.name}", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.url

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    def close(self) -> None:
        if self._loop and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)

    def __enter__(self) -> RecordingProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- what a test asks ------------------------------------------------------------------
    def mark(self, label: str | None) -> None:
        with self._lock:
            self.turn = label

    def wait_idle(self, timeout: float = 60.0, ignore: re.Pattern[str] | None = None) -> None:
        """Block until every request but the long-lived ones (`ignore`, e.g. the heartbeat) is done."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while any(not x.done and not (ignore and ignore.search(x.path)) for x in self.exchanges):
                left = deadline - time.monotonic()
                if left <= 0:
                    busy = [x.path for x in self.exchanges if not x.done]
                    raise TimeoutError(f"{self.name}: requests still in flight: {busy}")
                self._idle.wait(left)

    def wait_for(self, condition: Any, timeout: float = 60.0) -> None:
        """Block until `condition(exchanges)` holds, re-checked whenever a request finishes."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while not condition(self.exchanges):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name}: the awaited request never came")
                self._idle.wait(left)

    def recording(self) -> list[dict[str, Any]]:
        with self._lock:
            return [x.to_dict() for x in self.exchanges]

    # ---- the proxy -------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await self._next(conn, reader)
                if isinstance(event, h11.Request):
                    body = b""
                    while True:
                        ev = await self._next(conn, reader)
                        if isinstance(ev, h11.Data):
                            body += ev.data
                        elif isinstance(ev, h11.EndOfMessage):
                            break
                        else:
                            return
                    await self._forward(conn, writer, event, body)
                    if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                else:
                    return
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:  # the proxy is closing: open streams (the heartbeat) just end
            return
        finally:
            self._tasks.discard(task)
            writer.close()

    @staticmethod
    async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data and conn.their_state is not h11.DONE:
                    return h11.ConnectionClosed()
                continue
            return event

    def _record(self, request: h11.Request, body: bytes) -> Exchange:
        target = request.target.decode()
        split = urlsplit(target)
        headers = {k.lower(): v for k, v in request.headers}
        ctype = headers.get(b"content-type", b"").decode()
        x = Exchange(
            seq=0,
            turn=None,
            method=request.method.decode(),
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            content_type=ctype,
        )
        if body and "json" in ctype:
            try:
                x.json = json.loads(body)
            except ValueError:
                x.json = body.decode("utf-8", "replace")
        elif body and ctype.startswith("multipart/"):
            x.parts = parse_multipart(body, ctype)
        elif body:
            x.json = body.decode("utf-8", "replace")
        with self._lock:
            x.seq, x.turn, x.started = len(self.exchanges), self.turn, round(time.monotonic() - self._t0, 3)
            self.exchanges.append(x)
        return x

    def _finish(self, x: Exchange) -> None:
        with self._idle:
            x.done, x.finished = True, round(time.monotonic() - self._t0, 3)
            self._idle.notify_all()

    async def _forward(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, body: bytes
    ) -> None:
        x = self._record(request, body)
        try:
            headers = [(k, v) for k, v in request.headers if k.lower() not in HOP]
            headers.append((b"accept-encoding", b"identity"))
            req = self._client.build_request(
                request.method.decode(), self.upstream + request.target.decode(), headers=headers, content=body
            )
            try:
                resp = await self._client.send(req, stream=True)
            except httpx.HTTPError as e:
                x.status, x.response_type = 502, f"proxy error: {type(e).__name__}"
                await self._send(conn, writer, h11.Response(status_code=502, headers=[(b"content-length", b"0")]))
                await self._send(conn, writer, h11.EndOfMessage())
                return
            x.status = resp.status_code
            ctype = resp.headers.get("content-type", "")
            x.response_type = ctype.split(";")[0]
            out = [(k.encode(), v.encode()) for k, v in resp.headers.items() if k.lower().encode() not in HOP]
            try:
                if ctype.startswith("text/event-stream"):
                    await self._send(conn, writer, h11.Response(status_code=resp.status_code, headers=out))
                    buffer = b""
                    async for chunk in resp.aiter_raw():
                        await self._send(conn, writer, h11.Data(data=chunk))
                        buffer += chunk
                        *messages, buffer = re.split(rb"\r?\n\r?\n", buffer)
                        for message in messages:
                            self._sse(x, message)
                else:
                    content = await resp.aread()
                    if "json" in ctype:
                        try:
                            x.response_json = json.loads(content)
                        except ValueError:
                            x.response_json = content.decode("utf-8", "replace")
                    out.append((b"content-length", str(len(content)).encode()))
                    await self._send(conn, writer, h11.Response(status_code=resp.status_code, headers=out))
                    if content and request.method != b"HEAD":
                        await self._send(conn, writer, h11.Data(data=content))
                await self._send(conn, writer, h11.EndOfMessage())
            finally:
                await resp.aclose()
        finally:
            self._finish(x)

    @staticmethod
    def _sse(x: Exchange, message: bytes) -> None:
        data = [line[5:].lstrip() for line in message.split(b"\n") if line.startswith(b"data:")]
        if not data:
            return
        text = b"\n".join(data).decode("utf-8", "replace")
        try:
            x.sse.append(json.loads(text))
        except ValueError:
            x.sse.append(text)

    @staticmethod
    async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, event: Any) -> None:
        data = conn.send(event)
        if data:
            writer.write(data)
            await writer.drain()
