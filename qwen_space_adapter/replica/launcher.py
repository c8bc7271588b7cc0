"""Start and stop a replica Space as a child process, and leave nothing behind.

The replica runs in its own process group so that stopping it also stops anything it spawned,
and an `atexit` hook stops replicas a caller forgot. Readiness is the URL line the app prints
once its server accepts requests, read with a deadline, so a broken start fails fast with the
app's own log instead of hanging.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..errors import ReplicaError
from .env import ensure_env

APP = Path(__file__).with_name("app.py")
_LIVE: weakref.WeakSet[Replica] = weakref.WeakSet()


@dataclass
class ReplicaSettings:
    """Launch-time behaviour of a replica; every field maps to an `app.py` flag."""

    host: str = "127.0.0.1"
    port: int = 0
    token_delay: float = 0.02
    prefill_base: float = 0.05
    prefill_per_mb: float = 0.5
    fault: str | None = None
    fault_arg: float | None = None
    max_queue_size: int = 0
    concurrency_limit: int = 0
    replay: str | None = None
    replay_speed: float = 1.0
    app: str | None = None  # another app script to serve instead (tests use a changed-API variant)
    extra_args: list[str] = field(default_factory=list)

    def argv(self) -> list[str]:
        args = [
            "--host", self.host,
            "--port", str(self.port),
            "--token-delay", str(self.token_delay),
            "--prefill-base", str(self.prefill_base),
            "--prefill-per-mb", str(self.prefill_per_mb),
            "--max-queue-size", str(self.max_queue_size),
            "--concurrency-limit", str(self.concurrency_limit),
        ]
        if self.fault:
            args += ["--fault", self.fault]
        if self.fault_arg is not None:
            args += ["--fault-arg", str(self.fault_arg)]
        if self.replay:
            args += ["--replay", self.replay, "--replay-speed", str(self.replay_speed)]
        return args + list(self.extra_args)


class Replica:
    """A running replica Space. Use as a context manager, or call `start()` and `stop()`."""

    def __init__(self, settings: ReplicaSettings | None = None, **overrides: Any) -> None:
        self.settings = settings or ReplicaSettings()
        for key, value in overrides.items():
            if not hasattr(self.settings, key):
                raise TypeError(f"Unknown replica setting {key!r}")
            setattr(self.settings, key, value)
        self.url: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="qwen-replica-", suffix=".log", delete=False)

    def __repr__(self) -> str:
        return f"<Replica url={self.url!r} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 180.0) -> str:
        """Start the app and return its URL once it accepts requests."""
        python = ensure_env()
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
        env.pop("GRADIO_SERVER_PORT", None)
        # Jupyter and Colab set an inline matplotlib backend that does not exist in the replica's
        # environment; gradio 4.44 imports matplotlib on every request and would fail each one.
        env.pop("MPLBACKEND", None)
        self.process = subprocess.Popen(
            [str(python), self.settings.app or str(APP), *self.settings.argv()],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        _LIVE.add(self)
        assert self.process.stdout is not None
        line = self._read_line(self.process.stdout, timeout)
        if not line.startswith("http"):
            self.stop()
            raise ReplicaError(f"The replica did not start. Its log:\n{self.log_tail()}")
        self.url = line.strip()
        return self.url

    def _read_line(self, stream: Any, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(stream, selectors.EVENT_READ)
            buf = b""
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return ""
                chunk = os.read(stream.fileno(), 4096)
                if not chunk:
                    return buf.decode(errors="replace")
                buf += chunk
        return buf.split(b"\n", 1)[0].decode()

    def log_tail(self, lines: int = 30) -> str:
        text = Path(self._log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the replica and every process of its group; safe to call twice."""
        proc, self.process = self.process, None
        if proc is None:
            return
        stop_process_group(proc, timeout)
        _LIVE.discard(self)

    def close(self) -> None:
        """Stop the replica and remove its log file."""
        self.stop()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def stats(self) -> dict[str, Any]:
        """What the replica generated so far (requests, tokens, cancelled generations)."""
        return self._get("/replica/stats")

    def wait_idle(self, timeout: float = 10.0) -> dict[str, Any]:
        """Block until no generation runs (or `timeout`), then return the stats."""
        return self._get("/replica/wait-idle", timeout=timeout, http_timeout=timeout + 5)

    def _get(self, path: str, http_timeout: float = 10.0, **params: Any) -> dict[str, Any]:
        if not self.url:
            raise ReplicaError("The replica is not running; call start() first.")
        r = httpx.get(self.url + path, params=params, timeout=http_timeout)
        r.raise_for_status()
        data: dict[str, Any] = json.loads(r.text)
        return data

    def __enter__(self) -> Replica:
        if self.url is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _exited(pid: int) -> bool:
    """Whether `pid` has exited, without reaping it (so its id cannot be reused meanwhile)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM a child's process group, SIGKILL what is left after `timeout`, then reap it.

    The leader is reaped only after its whole group was signalled: until then its id, which is
    the group's id, cannot be reused by an unrelated process that we would kill by mistake.
    """
    deadline = time.monotonic() + timeout
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    while not _exited(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)  # waiting for a process to exit: there is no event to wait on with a timeout
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything left in the group, the leader included
    except (ProcessLookupError, PermissionError):
        pass
    if proc.stdout:
        proc.stdout.close()
    proc.wait()


@atexit.register
def _stop_all() -> None:
    for replica in list(_LIVE):
        replica.stop()
