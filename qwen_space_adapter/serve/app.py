"""The OpenAI-compatible HTTP API as a plain ASGI application (no framework: five routes).

Routes: `POST /v1/chat/completions` (streamed as SSE or whole), `GET /v1/models`,
`GET /v1/models/{id}`, `GET /health`. Plain ASGI because the server's work per delta is one
`send` of a pre-encoded frame; a framework would add a layer on the hot path and nothing the
five routes need.

Each chat request runs in a task group with a watcher on `receive()`: when the client goes away
the group is cancelled, which closes the adapter's stream, which cancels the job on the Space.
The response's head is sent only with the first item of the answer (a queue position, the
thinking status or text), so an error before it is a real HTTP status (429, 503, ...), and the
`X-Qwen-Session` header names the session that actually answers (a restarted Space changes it).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import anyio.abc

from ..events import StreamEvent
from .chunks import DONE, ChunkEncoder, completion, event_fields
from .errors import ApiError, api_error
from .offload import AdapterLoop
from .request import MAX_BODY_BYTES, ChatRequest, parse_body
from .turns import Context, Turn

log = logging.getLogger("qwen_space_adapter.serve")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

JSON = [(b"content-type", b"application/json")]
SSE = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
SESSION_HEADER = b"x-qwen-session"
CONTINUED_HEADER = b"x-qwen-session-continued"


def _dumps(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


async def _respond(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = _dumps(body)
    head = [*JSON, (b"content-length", str(len(data)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": data})


async def _read_body(receive: Receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise anyio.get_cancelled_exc_class()()  # nobody to answer
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, f"The request body is over {MAX_BODY_BYTES:,} bytes.", code="request_too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class ServeApp:
    """The ASGI app. `cancel_all()` ends every running answer (and its job on the Space) at once."""

    def __init__(self, ctx: Context, *, api_key: str | None = None, offload: bool = True) -> None:
        self.ctx = ctx
        # the adapter's turns run on a loop of their own, so this one only serves HTTP (offload.py)
        self.adapter_loop = AdapterLoop() if offload else None
        self._api_key = api_key.encode() if api_key else None
        self._running: set[anyio.CancelScope] = set()
        self._idle: anyio.Event | None = None
        self.disconnects = 0  # answers cancelled because their client went away (for tests, logs)

    def __repr__(self) -> str:  # never the key
        return f"ServeApp(space={self.ctx.space!r}, auth={'on' if self._api_key else 'off'})"

    def close(self) -> None:
        """Stop the adapter's loop (after the server stopped: what still runs there is cancelled)."""
        if self.adapter_loop is not None:
            self.adapter_loop.close()

    async def _batches(self, turn: Turn) -> AsyncGenerator[list[Any], None]:
        """The turn's items in batches: as they crossed from the adapter's loop, else one by one."""
        if self.adapter_loop is not None:
            stream = self.adapter_loop.batches(turn.items)
            try:
                async for batch in stream:
                    yield batch
            finally:
                await stream.aclose()
            return
        items = turn.items()
        try:
            async for item in items:
                yield [item]
        finally:
            await items.aclose()

    def cancel_all(self) -> None:
        for scope in list(self._running):
            scope.cancel()

    @property
    def running(self) -> int:
        """Answers running now (each a task group of this app)."""
        return len(self._running)

    async def wait_idle(self) -> None:
        """Return once no answer runs (tests and the benchmark wait on it instead of sleeping)."""
        while self._running:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    def _leave(self, scope: anyio.CancelScope) -> None:
        self._running.discard(scope)
        if not self._running and self._idle is not None:
            self._idle.set()
            self._idle = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._route(scope, receive, send)
        except ApiError as e:
            await _respond(send, e.status, e.body(), e.headers())

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.cancel_all()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _check_key(self, scope: Scope) -> None:
        if self._api_key is None:
            return
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
        scheme, _, key = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(key.strip(), self._api_key):
            raise ApiError(
                401,
                "Missing or wrong API key: send it as 'Authorization: Bearer KEY'.",
                type="authentication_error",
                code="invalid_api_key",
            )

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"].rstrip("/") or "/"
        method: str = scope["method"]
        if path == "/health":
            self._allow(method, "GET")
            await _respond(send, 200, {"status": "ok", "running": self.running})
            return
        if not path.startswith("/v1/"):
            raise ApiError(404, f"No route {path}; the API is under /v1.", code="not_found")
        self._check_key(scope)
        if path == "/v1/models":
            self._allow(method, "GET")
            await _respond(send, 200, {"object": "list", "data": self._models()})
        elif path.startswith("/v1/models/"):
            self._allow(method, "GET")
            wanted = path[len("/v1/models/") :]
            for entry in self._models():
                if entry["id"] == wanted:
                    await _respond(send, 200, entry)
                    return
            raise api_error(self._unknown_model(wanted))
        elif path == "/v1/chat/completions":
            self._allow(method, "POST")
            await self._chat(receive, send)
        else:
            raise ApiError(404, f"No route {path}.", code="not_found")

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed:
            raise ApiError(405, f"Use {allowed} here, not {method}.", code="method_not_allowed")

    def _models(self) -> list[dict[str, Any]]:
        provider = self.ctx.provider
        out = [{"id": m, "object": "model", "created": 0, "owned_by": "qwen"} for m in provider.models]
        out += [
            {"id": alias, "object": "model", "created": 0, "owned_by": "qwen", "qwen": {"alias_of": target}}
            for alias, target in provider.model_aliases.items()
        ]
        return out

    def _unknown_model(self, name: str) -> Exception:
        try:
            self.ctx.provider.get_model(name or "?")
        except Exception as e:
            return e
        return ApiError(404, f"Model {name!r} not found.", code="model_not_found", param="model")

    async def _chat(self, receive: Receive, send: Send) -> None:
        request = parse_body(await _read_body(receive))
        try:
            self.ctx.provider.get_model(request.model)
        except Exception as e:
            raise api_error(e) from None
        turn = Turn(request, self.ctx)
        done = False  # the response's last byte is on its way: a disconnect now is the normal end

        async def tracked(message: MutableMapping[str, Any]) -> None:
            nonlocal done
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                done = True
            await send(message)

        async def watch(group: anyio.abc.TaskGroup) -> None:
            message = await receive()
            while message["type"] != "http.disconnect":
                message = await receive()
            if not done:
                self.disconnects += 1
                log.info("client went away: cancelling its answer (session %s)", turn.session_hash)
                group.cancel_scope.cancel()

        group = anyio.create_task_group()
        try:
            async with group:
                self._running.add(group.cancel_scope)
                group.start_soon(watch, group)
                if request.stream:
                    await self._stream(turn, request, tracked)
                else:
                    await self._whole(turn, request, tracked)
                group.cancel_scope.cancel()  # the watcher's job is over
        finally:
            self._leave(group.cancel_scope)

    @staticmethod
    def _session_headers(turn: Turn) -> list[tuple[bytes, bytes]]:
        if turn.session_hash is None:
            return []
        continued = b"true" if turn.continued else b"false"
        return [(SESSION_HEADER, turn.session_hash.encode()), (CONTINUED_HEADER, continued)]

    async def _stream(self, turn: Turn, request: ChatRequest, send: Send) -> None:
        encoder = ChunkEncoder(request.model)
        batches = self._batches(turn)
        started = False
        try:
            async for batch in batches:
                frames = [encoder.content(item) if isinstance(item, str) else encoder.event(item) for item in batch]
                if not started:
                    head = [*SSE, *self._session_headers(turn)]
                    await send({"type": "http.response.start", "status": 200, "headers": head})
                    frames.insert(0, encoder.role())
                    started = True
                body = b"".join(f for f in frames if f is not None)
                if body:  # one write for the whole burst
                    await send({"type": "http.response.body", "body": body, "more_body": True})
        except Exception as e:
            error = api_error(e)
            self._log_error(e, error)
            if not started:
                await _respond(send, error.status, error.body(), [*error.headers(), *self._session_headers(turn)])
                return
            await send({"type": "http.response.body", "body": encoder.error(error.body()), "more_body": False})
            return
        finally:
            await batches.aclose()
        if not started:  # an answer without a single item (the adapter always yields one; be safe)
            await send({"type": "http.response.start", "status": 200, "headers": [*SSE, *self._session_headers(turn)]})
            await send({"type": "http.response.body", "body": encoder.role(), "more_body": True})
        tail = encoder.finish()
        if request.include_usage:
            tail += encoder.usage(_prompt_chars(request), len(turn.text))
        await send({"type": "http.response.body", "body": tail + DONE, "more_body": False})

    async def _whole(self, turn: Turn, request: ChatRequest, send: Send) -> None:
        batches = self._batches(turn)
        reasoning: list[str] = []
        try:
            async for item in (item async for batch in batches for item in batch):
                fields = event_fields(item) if isinstance(item, StreamEvent) else None
                line = fields[0].get("reasoning_content") if fields else None
                if line is not None and (not reasoning or reasoning[-1] != line):
                    reasoning.append(line)
        except Exception as e:
            error = api_error(e)
            self._log_error(e, error)
            await _respond(send, error.status, error.body(), [*error.headers(), *self._session_headers(turn)])
            return
        finally:
            await batches.aclose()
        qwen: dict[str, Any] = {"summary": turn.summary, "session": turn.session_hash, "continued": turn.continued}
        body = completion(
            request.model, turn.text, reasoning="".join(reasoning), qwen=qwen, prompt_chars=_prompt_chars(request)
        )
        await _respond(send, 200, body, self._session_headers(turn))

    @staticmethod
    def _log_error(exc: BaseException, error: ApiError) -> None:
        if error.status >= 500 and error.code == "internal_error":
            log.error("answer failed unexpectedly", exc_info=exc)
        else:
            log.info("answer failed: %s %s", error.status, error.code)


def _prompt_chars(request: ChatRequest) -> int:
    return sum(len(m.content) + sum(len(f.data) for f in m.files) for m in request.messages)


__all__ = ["CONTINUED_HEADER", "SESSION_HEADER", "ServeApp"]
