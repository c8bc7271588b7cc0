"""What every replica app does around its UI: start-up, options, stats, showing the model's steps, launch,
readiness, shutdown.

The hand-made app builds its own Blocks; the real-UI app lets Qwen-Agent's `WebUI.run()` build
and launch them, unmodified; the Gradio 6 app is Gradio's own `ChatInterface`. So the launch itself
is taken over here, once, for all: `hook_launch` wraps `gradio.Blocks.launch` (Gradio's, not WebUI's
code) so that whoever calls it gets the same port retries, the `/replica/*` routes, the readiness
line the launcher waits for, and a clean stop on SIGTERM or when the parent process disappears.
Each app starts with `begin()` and shows each step of the model's answer through `shown()`.

Runs inside the replica's own environment; imports no third-party module at import time, so the
parent watchdog starts before the (slow) Gradio import.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

READY = "qwen-replica-ready "
"""Prefix of the stdout line that carries the URL once the server accepts requests."""

PARENT_FD_ENV = "QWEN_REPLICA_PARENT_FD"
STOP = threading.Event()
CLOSE_GRACE = 5.0  # seconds a stopping replica gives Gradio's close before it exits anyway


def _exit_now() -> None:
    sys.stderr.flush()
    os._exit(0)


def watch_parent() -> None:
    """Stop this replica when its parent process goes away, however it went (even SIGKILL).

    The launcher passes the read end of a pipe whose write end only it holds: EOF on it means
    the parent is gone. Started before Gradio is imported, so no start-up window is uncovered.
    """
    fd = os.environ.pop(PARENT_FD_ENV, None)
    if fd is None:
        return

    def wait() -> None:
        try:
            while os.read(int(fd), 64):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)  # a clean stop, as the launcher would ask for
        # Nobody is left to ask twice: if the clean stop does not end the process (its main
        # thread stuck, a close that hangs), this thread does, a little later.
        time.sleep(2 * CLOSE_GRACE)
        _exit_now()

    threading.Thread(target=wait, name="parent-watchdog", daemon=True).start()


def handle_signals() -> None:
    """SIGTERM and SIGINT end the server cleanly (the launcher sends SIGTERM to the group)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: STOP.set())


def begin() -> None:
    """What an app does first, before its slow imports (Gradio's): no analytics, the parent
    watchdog, and the signals that stop it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    watch_parent()
    handle_signals()


class Stats:
    """What the server generated, so tests can prove a cancel stopped it or a session stayed apart.

    A condition variable, not an asyncio event: the real UI generates in Gradio's worker
    threads, the hand-made app in its event loop; both report here.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.active = 0
        self.started = 0
        self.completed = 0
        self.cancelled = 0
        self.failed = 0
        self.tokens = 0
        self.requests: list[dict[str, Any]] = []
        self.probes: dict[int, Callable[[], bool]] = {}

    def snapshot(self) -> dict[str, Any]:
        with self.cond:
            self._reap()
            return {
                "active": self.active,
                "started": self.started,
                "completed": self.completed,
                "cancelled": self.cancelled,
                "failed": self.failed,
                "tokens": self.tokens,
                "requests": [dict(r) for r in self.requests[-200:]],
            }

    @contextmanager
    def generation(
        self, record: dict[str, Any], cancelled: Callable[[], bool] | None = None
    ) -> Iterator[Callable[[str], None]]:
        """Count one generation; the caller sets its outcome through the yielded function.
        An outcome never set (the generator was closed: a cancel) counts as cancelled.
        `cancelled` tells, from any thread, whether the server cancelled it (see `suspended`)."""
        if cancelled is not None:
            self.probes[id(record)] = cancelled
        record.setdefault("tokens", 0)
        record["status"] = "running"
        record["began"] = time.monotonic()  # with "ended": shows whether generations overlapped
        outcome = ["cancelled"]
        with self.cond:
            self.active += 1
            self.started += 1
            self.requests.append(record)
        try:
            yield lambda status: outcome.__setitem__(0, status)
        finally:
            with self.cond:
                self._end(record, outcome[0])

    def _end(self, record: dict[str, Any], status: str) -> None:
        if record["status"] != "running":  # already counted as abandoned
            return
        self.probes.pop(id(record), None)
        self.active -= 1
        record["status"] = status
        record["ended"] = time.monotonic()
        setattr(self, status, getattr(self, status) + 1)
        self.cond.notify_all()

    def suspended(self, record: dict[str, Any], at: float | None) -> None:
        """A synchronous generation is parked at a `yield` since `at` (None: it runs again).

        Gradio runs a sync generator one step per pull and, when the job is cancelled, simply
        stops pulling without closing it; so a generation parked for longer than `ABANDONED`
        seconds (Gradio pulls the next step as soon as it sent the last) was cancelled; one
        whose `cancelled` probe says so was cancelled at once.
        """
        with self.cond:
            record["parked"] = at

    def _reap(self) -> None:
        now = time.monotonic()
        for record in self.requests:
            parked = record.get("parked")
            if record["status"] != "running" or parked is None:
                continue
            probe = self.probes.get(id(record))
            if now - parked > ABANDONED or (probe is not None and probe()):
                self._end(record, "cancelled")

    def token(self, record: dict[str, Any]) -> None:
        with self.cond:
            self.tokens += 1
            record["tokens"] += 1

    def wait_idle(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                self._reap()
                left = deadline - time.monotonic()
                if self.active == 0 or left <= 0:
                    break
                self.cond.wait(min(left, 0.25))  # parked generations are found by looking again
        return self.snapshot()


ABANDONED = 2.0
STATS = Stats()


def shown(step: Any, record: dict[str, Any], outcome: Callable[[str], None], error: type[Exception]) -> str | None:
    """The text a step of the model's answer (`model.Step`) shows, once its delay was waited.

    A failing step sets the outcome and raises the app's `error` (`gr.Error`); a dying one ends
    the server at once, as a crashed Space; a token is counted in the stats of `record`.
    """
    if step.error:
        outcome("failed")
        raise error(step.error)
    if step.die:
        os._exit(3)
    if step.token:
        STATS.token(record)
    text: str | None = step.text
    return text


def add_stats_routes(app: Any) -> None:
    """`/replica/stats`, `/replica/wait-idle` and `/replica/session?session_hash=H` on the
    server's FastAPI app (sync routes run in FastAPI's thread pool, so waiting does not block
    the server)."""

    def stats() -> dict[str, Any]:
        return STATS.snapshot()

    def wait_idle(timeout: float = 10.0) -> dict[str, Any]:
        return STATS.wait_idle(timeout)

    def session(session_hash: str, closed_within: float = 0.0) -> dict[str, Any]:
        # Gradio's own record of a session: whether it holds State for it, and whether its page
        # was closed (a closed session's State is deleted an hour later). With `closed_within`,
        # waits that long for the close (the Space handles a closed page as it notices it).
        deadline = time.monotonic() + min(closed_within, 30.0)
        while True:
            data = getattr(getattr(app, "state_holder", None), "session_data", {}) or {}
            state = data.get(session_hash)
            closed = bool(getattr(state, "is_closed", False))
            if closed or time.monotonic() >= deadline:
                return {"known": state is not None, "closed": closed}
            time.sleep(0.02)

    app.add_api_route("/replica/stats", stats, methods=["GET"])
    app.add_api_route("/replica/wait-idle", wait_idle, methods=["GET"])
    app.add_api_route("/replica/session", session, methods=["GET"])


def parser(description: str | None) -> argparse.ArgumentParser:
    """The options both apps take (the launcher validated them already)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token-delay", type=float, default=0.02)
    ap.add_argument("--prefill-base", type=float, default=0.05)
    ap.add_argument("--prefill-per-mb", type=float, default=0.5)
    ap.add_argument("--fault", default=None)
    ap.add_argument("--fault-arg", type=float, default=None)
    ap.add_argument("--max-queue-size", type=int, default=0)
    ap.add_argument("--concurrency-limit", type=int, default=0, help="0 = unlimited")
    ap.add_argument("--replay", default=None, help="answer with this recorded transcript's turns")
    ap.add_argument("--replay-speed", type=float, default=1.0, help="2.0 replays twice as fast")
    return ap


def fail(message: str) -> None:
    """End the start with one line the launcher shows as the cause (no traceback)."""
    print(f"replica error: {message}", file=sys.stderr, flush=True)
    os._exit(2)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def hook_launch(gr: Any, settings: argparse.Namespace) -> None:
    """Make `gr.Blocks.launch` serve as the replica needs, whoever calls it.

    Port 0 picks a free port; one picked here can be taken by a parallel start before Gradio
    binds it, so that case is retried. Gradio's HEAD probe of its own URL is skipped
    (`_frontend=False`): on a loaded machine it times out and aborts a server that is up. The
    readiness line is printed with a prefix because Gradio prints other lines on stdout whatever
    `quiet` says (every 25th launch, a "Thanks for being a Gradio user" invitation).
    """
    original = gr.Blocks.launch

    def launch(self: Any, *args: Any, **kwargs: Any) -> Any:
        if settings.max_queue_size and getattr(self, "_queue", None) is not None:
            self._queue.max_size = settings.max_queue_size
        for attempt in range(5):
            port = settings.port or _free_port(settings.host)
            try:
                ours = {
                    "server_name": settings.host,
                    "server_port": port,
                    "prevent_thread_lock": True,
                    "quiet": True,
                    "share": False,
                    "_frontend": False,
                }
                original(self, *args, **{**kwargs, **ours})
                break
            except OSError as e:
                if settings.port:
                    fail(f"port {port} on {settings.host} is in use or cannot be bound ({e})")
                if attempt == 4:
                    fail(f"no free port could be bound on {settings.host}: {e}")
        add_stats_routes(self.server_app)
        url = f"http://{settings.host}:{port}"
        print(READY + url, flush=True)
        os.dup2(2, 1)  # later output goes to the log, not to the launcher's pipe
        while not STOP.wait(3600):
            pass
        # Gradio's close waits for its server's connections to end; on a loaded machine, or with
        # a client that keeps a stream open, that can outlast any parent's patience. A stopped
        # replica exits within CLOSE_GRACE seconds whatever its close does.
        threading.Timer(CLOSE_GRACE, _exit_now).start()
        try:
            self.close(verbose=False)
        finally:
            _exit_now()

    gr.Blocks.launch = launch
