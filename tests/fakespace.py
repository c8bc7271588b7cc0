"""A small hand-driven HTTP server on loopback that plays a Gradio Space for security and
transport tests: it serves a config (from tests/fixtures/pages), records every request it gets
(path and headers), and can trickle, stream a given body, or answer JSON, per path.

Real sockets, real gradio_client on the other side; nothing here is mocked. Each server is
started by a test (or fixture) and shut down by it.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PAGES = Path(__file__).parent / "fixtures" / "pages"
EMPTY_INFO = {"named_endpoints": {}, "unnamed_endpoints": {}}


def page_config(name: str = "hand-gradio4", **changes: Any) -> dict[str, Any]:
    """A config fetched from a running replica (see tests/test_page.py), with `changes` applied."""
    config = json.loads((PAGES / f"{name}.json").read_text())
    config.update(changes)
    return config


Route = Callable[["Handler"], None]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeSpace

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append(
            {
                "path": path,
                "method": self.command,
                "body": body,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        )
        route = self.server.routes.get(path)
        if route is None:
            self.json({"detail": "Not Found"}, 404)
        else:
            route(self)

    do_POST = do_GET

    def json(self, value: Any, status: int = 200) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def trickle(self, every: float = 0.1) -> None:
        """Answer 200 and send one byte every `every` seconds until the client goes away; the
        server's `disconnected` event is set when it has."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(10**9))
        self.end_headers()
        try:
            while not self.server.stopping.is_set():
                self.wfile.write(b" ")
                self.wfile.flush()
                self.server.stopping.wait(every)
        except OSError:
            self.server.disconnected.set()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


class FakeSpace(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), Handler)
        self.seen: list[dict[str, Any]] = []
        self.routes: dict[str, Route] = {}
        self.stopping = threading.Event()
        self.disconnected = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def serve_json(self, path: str, value: Any, status: int = 200) -> None:
        self.routes[path] = lambda h: h.json(value, status)

    def serve_page(self, config: dict[str, Any], info: dict[str, Any] | None = None, prefix: str = "") -> None:
        """`/config` and the API info, as a Gradio app serves them."""
        self.serve_json("/config", config)
        self.serve_json(f"{prefix}/info", EMPTY_INFO if info is None else info)

    def paths(self) -> list[str]:
        return [r["path"] for r in self.seen]


@contextmanager
def fake_space(host: str = "127.0.0.1") -> Iterator[FakeSpace]:
    """A `FakeSpace` serving on `host` (any loopback address) for the block, then stopped."""
    server = FakeSpace(host)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
