"""Start and stop a replica Space as a child process, and leave nothing behind.

The replica runs in its own process group so that stopping it also stops anything it spawned.
It is stopped at interpreter exit (`atexit`), when this process gets SIGTERM (the previous
handler is chained), and, on any death of this process, SIGKILL included, by the replica
itself: it watches a pipe whose write end only this process holds (and, on Linux, asks the
kernel for SIGTERM when its parent dies). Options are checked before anything starts, so a bad
one is one line, not the app's usage text or a Gradio traceback.

Readiness is the line the app prints once its server accepts requests (`serving.READY`), read
with a deadline; Gradio's own stdout chatter is not mistaken for it. That chatter caused the rare
"The replica did not start. Its log: Closing server running on port: N": Gradio 4 prints a
"Thanks for being a Gradio user" invitation on stdout at its 25th, 50th, 150th... launch
(`gradio.utils.launch_counter`, whatever `quiet` says), which the launcher took for its URL line.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..errors import ReplicaError
from . import replay
from .env import ensure_env
from .flavors import Flavor, flavor
from .model import FAULTS
from .progress import Progress
from .serving import PARENT_FD_ENV, READY

_LIVE: weakref.WeakSet[Replica] = weakref.WeakSet()
ATTEMPTS = 3


@dataclass
class ReplicaSettings:
    """Launch-time behaviour of a replica; every field maps to an app flag.

    `ui`: "hand" (default, the hand-made app), "gradio6" (Gradio 6's own multimodal
    `gr.ChatInterface`), "qwen-agent" (Qwen-Agent 0.0.11's real UI) or "qwen-agent==X" (0.0.11 to
    0.0.34). `agents` and `mention` choose the real UI's layout. `app` serves another script in the
    flavor's environment (a Gradio 6 test app: `ui="gradio6", app=...`).
    `python`: the interpreter to build the flavor's environment with (default: found).
    """

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
    ui: str = "hand"
    agents: int = 1
    mention: bool = False
    python: str | None = None
    app: str | None = None  # another app script to serve instead (tests use a changed-API variant)
    extra_args: list[str] = field(default_factory=list)

    def flavor(self) -> Flavor:
        return flavor(self.ui)

    def validate(self) -> Flavor:
        """Check every option before launching; raise `ReplicaError` with one line saying what is wrong."""
        check_types(self)
        chosen = self.flavor()
        if self.fault is not None and self.fault not in FAULTS:
            raise ReplicaError(f"Unknown replica fault {self.fault!r}: use one of {', '.join(FAULTS)}.")
        for name in ("token_delay", "prefill_base", "prefill_per_mb", "max_queue_size", "concurrency_limit"):
            if getattr(self, name) < 0:
                raise ReplicaError(f"Replica setting {name} must not be negative, got {getattr(self, name)!r}.")
        if not self.replay_speed > 0:
            raise ReplicaError(f"Replay speed must be positive, got {self.replay_speed!r}.")
        if self.agents < 1:
            raise ReplicaError(f"A replica needs at least one agent, got agents={self.agents}.")
        if (self.agents > 1 or self.mention) and not chosen.real_ui and self.app is None:
            raise ReplicaError(
                "agents and mention choose the layout of the real UI: add ui='qwen-agent' (--ui qwen-agent)."
            )
        if self.mention and self.agents < 2:
            raise ReplicaError("mention needs at least two agents to choose from: add agents=2 (--agents 2).")
        if self.replay:
            try:
                replay.load(self.replay).schedule(0, self.replay_speed)
            except replay.TranscriptError as e:
                raise ReplicaError(f"Bad replay transcript: {e}") from None
        if self.port:
            check_port(self.host, self.port)
        return chosen

    def argv(self) -> list[str]:
        args = [
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--token-delay",
            str(self.token_delay),
            "--prefill-base",
            str(self.prefill_base),
            "--prefill-per-mb",
            str(self.prefill_per_mb),
            "--max-queue-size",
            str(self.max_queue_size),
            "--concurrency-limit",
            str(self.concurrency_limit),
        ]
        if self.fault:
            args += ["--fault", self.fault]
        if self.fault_arg is not None:
            args += ["--fault-arg", str(self.fault_arg)]
        if self.replay:
            args += ["--replay", self.replay, "--replay-speed", str(self.replay_speed)]
        if self.flavor().real_ui and self.app is None:
            args += ["--agents", str(self.agents)] + (["--mention"] if self.mention else [])
        return args + list(self.extra_args)


_NUMBERS = ("token_delay", "prefill_base", "prefill_per_mb", "replay_speed")
_COUNTS = ("max_queue_size", "concurrency_limit", "agents")
_TEXTS = ("fault", "python", "app")  # None allowed


def check_types(settings: ReplicaSettings) -> None:
    """Refuse a setting of the wrong type at once, in words (`port="abc"` used to be a bare TypeError
    from deep inside `socket.bind`, raised only by `start()`)."""

    def bad(name: str, want: str) -> ReplicaError:
        value = getattr(settings, name)
        return ReplicaError(f"Replica setting {name} must be {want}, got {value!r} ({type(value).__name__}).")

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not is_int(settings.port) or not 0 <= settings.port <= 65535:
        raise bad("port", "an integer from 0 to 65535 (0 picks a free port)")
    if not isinstance(settings.host, str) or not settings.host.strip():
        raise bad("host", "a host name or address such as '127.0.0.1'")
    for name in _NUMBERS:
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise bad(name, "a number")
    for name in _COUNTS:
        if not is_int(getattr(settings, name)):
            raise bad(name, "an integer")
    for name in _TEXTS:
        if getattr(settings, name) is not None and not isinstance(getattr(settings, name), str):
            raise bad(name, "a string or None")
    if settings.fault_arg is not None and (
        isinstance(settings.fault_arg, bool) or not isinstance(settings.fault_arg, int | float)
    ):
        raise bad("fault_arg", "a number or None")
    if settings.replay is not None and not isinstance(settings.replay, str | os.PathLike):
        raise bad("replay", "the path of a transcript, or None")
    if not isinstance(settings.ui, str):
        raise bad("ui", "a flavor name such as 'hand' or 'qwen-agent'")
    if not isinstance(settings.mention, bool):
        raise bad("mention", "True or False")
    if not isinstance(settings.extra_args, list | tuple) or not all(isinstance(a, str) for a in settings.extra_args):
        raise bad("extra_args", "a list of strings")


def check_port(host: str, port: int) -> None:
    """Refuse a port that cannot be bound now, instead of Gradio's advice about GRADIO_SERVER_PORT.

    Bound with `SO_REUSEADDR`, as Gradio's own check and uvicorn bind: connections of a replica
    that was killed mid-answer linger in TIME_WAIT for about a minute, and without the option the
    port would look busy although the server binds it fine. A port another server listens on is
    still refused.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ReplicaError(
                f"Port {port} on {host} is not free ({e.strerror}): pick another, or 0 for any."
            ) from None


class _NotStarted(Exception):
    """One start attempt failed; `retry` says whether another attempt can help."""

    def __init__(self, cause: str, retry: bool) -> None:
        super().__init__(cause)
        self.retry = retry


class Replica:
    """A running replica Space. Use as a context manager, or call `start()` and `stop()`."""

    def __init__(self, settings: ReplicaSettings | None = None, *, quiet: bool = False, **overrides: Any) -> None:
        self.settings = settings or ReplicaSettings()
        self.quiet = quiet  # no progress on stderr (building the environment, waiting for the server)
        for key, value in overrides.items():
            if not hasattr(self.settings, key):
                raise TypeError(f"Unknown replica setting {key!r}")
            setattr(self.settings, key, value)
        check_types(self.settings)  # a wrong type fails here, not at start()
        self.url: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._watch: int | None = None  # write end of the parent-watchdog pipe

    def __repr__(self) -> str:
        return f"<Replica ui={self.settings.ui!r} url={self.url!r} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 180.0) -> str:
        """Start the app and return its URL once it accepts requests.

        Options are validated first and the environment is built if needed (once); both waits are
        reported on stderr unless the replica is `quiet` (`progress.Progress`). A start that
        fails for a cause a retry can help (the process died without a reason) is retried; the
        error names the cause of the last attempt and the log is removed.
        """
        chosen = self.settings.validate()
        python = ensure_env(chosen, python=self.settings.python, quiet=self.quiet)
        causes: list[str] = []
        # Silent when the server is ready within a second; else a live line (or plain lines in a log).
        with Progress(f"starting the {chosen.ui} replica", quiet=self.quiet) as progress:
            for attempt in range(ATTEMPTS):
                progress.set_step(
                    "waiting for its ready line" + (f" (attempt {attempt + 1} of {ATTEMPTS})" if attempt else "")
                )
                try:
                    self.url = self._start_once(python, chosen, timeout)
                    return self.url
                except _NotStarted as e:
                    causes.append(str(e))
                    if not e.retry:
                        break
        self.close()
        earlier = "; ".join(c.splitlines()[0] for c in causes[:-1])
        earlier = f"\n(after {len(causes) - 1} earlier attempt(s): {earlier})" if earlier else ""
        raise ReplicaError(f"The {chosen.ui} replica did not start: {causes[-1]}{earlier}")

    def _start_once(self, python: Path, chosen: Flavor, timeout: float) -> str:
        if self._log is None:
            self._log = tempfile.NamedTemporaryFile(prefix="qwen-replica-", suffix=".log", delete=False)
        self._log.seek(0)
        self._log.truncate(0)
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
        env.pop("GRADIO_SERVER_PORT", None)
        # Jupyter and Colab set an inline matplotlib backend that does not exist in the replica's
        # environment; gradio 4.44 imports matplotlib on every request and would fail each one.
        env.pop("MPLBACKEND", None)
        read_end, self._watch = os.pipe()
        os.set_inheritable(read_end, True)
        env[PARENT_FD_ENV] = str(read_end)
        try:
            self.process = subprocess.Popen(
                [str(python), self.settings.app or str(chosen.app), *self.settings.argv()],
                stdout=subprocess.PIPE,
                stderr=self._log,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                pass_fds=(read_end,),
                preexec_fn=_die_with_parent() if threading.current_thread() is threading.main_thread() else None,
            )
        finally:
            os.close(read_end)
        _LIVE.add(self)
        _chain_sigterm()
        assert self.process.stdout is not None
        began = time.monotonic()
        url, chatter = self._read_ready(self.process.stdout, timeout)
        if chatter:
            self._log.write(("stdout: " + "\nstdout: ".join(chatter) + "\n").encode())
            self._log.flush()
        if url:
            return url
        waited = time.monotonic() - began
        code = self.process.poll()
        if code is None and waited < timeout:  # its stdout ended: it is exiting, or has closed it
            try:
                code = self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                code = None
        self.stop()
        reason = self._reason()
        if code is None:
            what = (
                f"no readiness line within {timeout:.0f} s"
                if waited >= timeout
                else "it closed its output without a readiness line"
            )
            raise _NotStarted(f"{what}. Its log:\n{self.log_tail()}", retry=False)
        if reason:
            raise _NotStarted(reason, retry=False)
        raise _NotStarted(f"it exited with code {code}. Its log:\n{self.log_tail()}", retry=True)

    def _read_ready(self, stream: Any, timeout: float) -> tuple[str | None, list[str]]:
        """The URL from the readiness line (a bare URL line from another app), and other lines."""
        deadline = time.monotonic() + timeout
        chatter: list[str] = []
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(stream, selectors.EVENT_READ)
            while True:
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode(errors="replace").strip()
                    if line.startswith(READY):
                        return line.removeprefix(READY).strip(), chatter
                    if line.startswith("http"):
                        return line, chatter
                    if line:
                        chatter.append(line)
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None, chatter
                chunk = os.read(stream.fileno(), 4096)
                if not chunk:
                    return None, chatter
                buf += chunk

    def _reason(self) -> str | None:
        """The app's own one-line reason for refusing to start, if it gave one."""
        for line in reversed(self.log_text().splitlines()):
            if line.startswith("replica error: "):
                return line.removeprefix("replica error: ")
        return None

    def log_text(self) -> str:
        if self._log is None:
            return ""
        try:
            return Path(self._log.name).read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the replica and every process of its group; safe to call twice."""
        proc, self.process = self.process, None
        watch, self._watch = self._watch, None
        if proc is not None:
            stop_process_group(proc, timeout)
        if watch is not None:
            os.close(watch)
        _LIVE.discard(self)

    def close(self) -> None:
        """Stop the replica and remove its log file."""
        self.stop()
        if self._log is not None:
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)
            self._log = None

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


def _die_with_parent() -> Any:
    """A `preexec_fn` asking Linux to SIGTERM the child when the thread that forked it ends.

    Only used from the main thread (whose end is the process's end); elsewhere the watchdog
    pipe alone covers it. None on other systems.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


_CHAINED = False


def _chain_sigterm() -> None:
    """Stop every live replica on SIGTERM, then do what the previous handler did."""
    global _CHAINED
    if _CHAINED or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        _stop_all()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # the default, or a handler not set from Python: exit
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)
    _CHAINED = True


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
