"""Messages that say what happened and what to do, for failures the issue-19 probe found worded wrong:
a stopped local Space read as "sleeping", a redirect read as "HTTP None". Against real sockets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import pytest

from qwen_space_adapter import Qwen_Qwen_2_5M, SpaceUnavailableError

pytestmark = pytest.mark.anyio


async def drain(url: str) -> None:
    async for _ in Qwen_Qwen_2_5M.create_async_generator(
        "qwen-2.5-1m", [{"role": "user", "content": "hi"}], space=url, max_retries=0
    ):
        pass


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_stopped_local_space_is_reported_as_not_running(no_thread_leak) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with anyio.fail_after(30), pytest.raises(SpaceUnavailableError) as info:
        await drain(url)
    message = str(info.value)
    assert "not running" in message and "qwen-space replica" in message, message
    assert "sleeping" not in message and "retry in a minute" not in message, message


@pytest.fixture
def redirecting() -> Iterator[str]:
    """A server that answers every request with a 302 elsewhere (a login wall, a moved Space)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


async def test_a_redirect_is_not_reported_as_http_none(redirecting: str, no_thread_leak) -> None:
    with anyio.fail_after(30), pytest.raises(SpaceUnavailableError) as info:
        await drain(redirecting)
    message = str(info.value)
    assert "None" not in message, message
    assert "redirect" in message or "HTTP 302" in message, message
