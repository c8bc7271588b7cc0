"""Running the app on uvicorn: in the foreground for `qwen-space serve`, or on a thread for tests.

The socket is bound here, before uvicorn starts, so port 0 gives a free port whose number is known,
and the base URL is announced only once uvicorn accepts connections (its `startup` has run).
Signals are ours, not uvicorn's: uvicorn's first Ctrl-C waits for running responses to end, and a
streamed answer can run for minutes. Here Ctrl-C (or SIGTERM) cancels every running answer, which
cancels its job on the Space, and stops the server without waiting for connections.

The server's loop is uvloop's and its HTTP parser httptools where they are installed (the `serve`
extra installs both; uvloop has no Windows build), else asyncio's loop and h11. At 200 streams the
process is busy with the adapter's threads (gradio_client's readers, the adapter's loop hold the
interpreter lock about three quarters of the time), and asyncio's `transport.write` is a
`socket.send` that gives the lock up and then waits to take it back: in a profile at 200 streams,
those waits were 60% of the time the server's loop spent running callbacks, and a burst of frames
to many clients paid one each. uvloop writes with `write(2)` in C without letting the lock go and
runs its loop in C, and httptools frames a chunk without h11's state machine. Measured with
`benchmarks/serve_bench.py` on a shared 2-core machine, the loop's lag p99 at 200 streams: 12-25 ms
before, 7-16 ms after (five full runs each; shorter runs of the server role: 8-38 ms and 10-15 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import uvicorn

from ..errors import InvalidRequestError
from .app import ServeApp

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, on uvloop's loop where it is installed (the server's loop, not the adapter's)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the server on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to expose the user's Hugging Face token to a network without an API key."""
    if not is_loopback(host) and not api_key:
        raise InvalidRequestError(
            f"Binding to {host} lets other machines use this server (and the Hugging Face token it holds): "
            "give --api-key KEY (clients send it as their OpenAI API key), or bind to 127.0.0.1."
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


class _Server(uvicorn.Server):
    """uvicorn's server with a ready callback and without its own signal handling."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_ready()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _config(app: ServeApp, log_level: str) -> uvicorn.Config:
    # http="auto": httptools where installed, else h11; the loop is the one `run` made (loop="none")
    return uvicorn.Config(
        app,
        http="auto",
        ws="none",
        lifespan="off",
        loop="none",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=1,
    )


def stop(server: uvicorn.Server, app: ServeApp) -> None:
    """End every running answer (cancelled on the Space) and the server, without waiting for clients."""
    app.cancel_all()
    server.should_exit = True
    server.force_exit = True


async def serve_forever(
    app: ServeApp, sock: socket.socket, on_ready: Callable[[], None], log_level: str = "warning"
) -> None:
    """Serve on `sock` until SIGINT or SIGTERM (the foreground server of `qwen-space serve`)."""
    server = _Server(_config(app, log_level), on_ready)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, server, app)
    try:
        await server.serve(sockets=[sock])
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        app.close()


class BackgroundServer:
    """The app on uvicorn on a thread of its own, with its own event loop (tests, the benchmark).

    `start()` returns once it accepts requests; `stop()` cancels what runs and joins the thread.
    `call(fn)` runs `fn` on the server's loop and returns its result, to look inside (its tasks).
    """

    def __init__(self, app: ServeApp, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self.app = app
        self.sock = bind(host, port)
        self.url = base_url(self.sock)
        self._server = _Server(_config(app, log_level), self._ready)
        self._ready_event = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="qwen-serve", daemon=True)
        self._error: BaseException | None = None

    def _ready(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready_event.set()

    def _run(self) -> None:
        try:
            run(self._server.serve(sockets=[self.sock]))
        except BaseException as e:  # reported by start()
            self._error = e
        finally:
            self._ready_event.set()

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self._thread.start()
        if not self._ready_event.wait(timeout) or self._error is not None or self._loop is None:
            raise RuntimeError(f"the server did not start: {self._error!r}")
        return self

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        assert self._loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(stop, self._server, self.app)
        self._thread.join(timeout)
        self.app.close()
        self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["BackgroundServer", "base_url", "bind", "check_bind", "is_loopback", "run", "serve_forever", "stop"]
