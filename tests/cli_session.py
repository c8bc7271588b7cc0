"""Drive the `qwen-space` CLI as a person does: on a pseudo-terminal, or with `--json` on pipes.

Also `wait_for_generation`, for code that shows nothing while it waits (`ask()`): the replica does;
and `started` / `interrupt`, the one way the tests start a program, press Ctrl-C and see it stop.

Synchronisation is always on something the CLI printed (a prompt, a JSON event, a status text),
with a deadline, never on sleeps. Every failure message carries what the CLI wrote to stderr.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CLI = [sys.executable, "-m", "qwen_space_adapter"]


class PtySession:
    """The CLI on a terminal of its own: `expect` what it shows, `send` keys, Ctrl-C with `ctrl_c`.

    Ctrl-C is the byte 0x03 typed on the terminal, so the line discipline sends SIGINT to the
    CLI's process group, as in a real terminal.
    """

    def __init__(self, *args: str) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child: the CLI, with the pty as its controlling terminal
            os.execv(sys.executable, [*CLI, *args])
        self.seen = ""  # everything shown so far
        self.pos = 0  # where the next `expect` starts looking

    def _read(self, deadline: float, what: str) -> None:
        """Add what the terminal shows next to `seen`; fail at the deadline or the CLI's end."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"timed out waiting for {what}; the terminal shows:\n{self.seen[self.pos :]!r}")
        try:
            chunk = os.read(self.fd, 65536).decode(errors="replace")
        except OSError:  # the CLI exited: its side of the pty is closed
            chunk = ""
        if not chunk:
            raise AssertionError(f"the CLI ended before showing {what}; it showed:\n{self.seen[self.pos :]!r}")
        self.seen += chunk

    def expect(self, needle: str, timeout: float = 30) -> str:
        """Everything shown since the last match, up to and including `needle`."""
        deadline = time.monotonic() + timeout
        while needle not in self.seen[self.pos :]:
            self._read(deadline, repr(needle))
        end = self.seen.index(needle, self.pos) + len(needle)
        shown, self.pos = self.seen[self.pos : end], end
        return shown

    def expect_re(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """The first match of `pattern` in what was shown since the last match, waiting for one."""
        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, self.seen[self.pos :])):
            self._read(deadline, f"/{pattern}/")
        self.pos += found.end()
        return found

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def ctrl_c(self) -> None:
        os.write(self.fd, b"\x03")

    def ctrl_d(self) -> None:
        os.write(self.fd, b"\x04")

    def wait(self, timeout: float = 30) -> int:
        """The exit status, reading the terminal meanwhile (a full pty would block the CLI)."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > deadline:
                raise AssertionError(f"the CLI did not exit within {timeout} s; it showed:\n{self.seen!r}")
            ready, _, _ = select.select([self.fd], [], [], 0.05)  # reading, not sleeping: 50 ms slices
            if ready:
                try:
                    self.seen += os.read(self.fd, 65536).decode(errors="replace")
                except OSError:
                    pass

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)

    def __enter__(self) -> PtySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JsonSession:
    """`qwen-space chat --json ...` on pipes: read its events one by one, signal it, read its stderr."""

    def __init__(self, *args: str) -> None:
        self.stderr_file = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [*CLI, "chat", "--json", *args],
            stdout=subprocess.PIPE,
            stderr=self.stderr_file,
            stdin=subprocess.DEVNULL,
        )
        self.events: list[dict[str, Any]] = []
        self._buf = b""

    @property
    def stderr(self) -> str:
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode(errors="replace")

    def fail(self, why: str) -> AssertionError:
        kinds = [e["type"] for e in self.events]
        return AssertionError(f"{why}\nevents so far: {kinds}\nthe CLI's stderr:\n{self.stderr}")

    def next_event(self, timeout: float = 30) -> dict[str, Any] | None:
        """The next event, or None at the end of the output."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise self.fail(f"no event within {timeout} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        event: dict[str, Any] = json.loads(line)
        self.events.append(event)
        return event

    def wait_for(self, kind: str, count: int = 1, timeout: float = 60) -> dict[str, Any]:
        """Read events until the `count`-th one of type `kind` (counting those already read)."""
        deadline = time.monotonic() + timeout
        while sum(e["type"] == kind for e in self.events) < count:
            if self.next_event(max(0.0, deadline - time.monotonic())) is None:
                raise self.fail(f"the output ended before {count} {kind!r} event(s)")
        return [e for e in self.events if e["type"] == kind][count - 1]

    def sigint(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout: float) -> int:
        """The exit status; reads the remaining events meanwhile."""
        deadline = time.monotonic() + timeout
        try:
            while self.next_event(max(0.0, deadline - time.monotonic())) is not None:
                pass
            return self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except (AssertionError, subprocess.TimeoutExpired):
            raise self.fail(f"the CLI was still running {timeout} s after being told to stop") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.stderr_file.close()

    def __enter__(self) -> JsonSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for_generation(replica, marker: str, timeout: float = 30) -> None:
    """Until the replica is generating tokens for the request whose text contains `marker`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(marker in r["user_text"] and r["tokens"] > 0 for r in replica.stats()["requests"]):
            return
        time.sleep(0.05)  # polling the replica's observable state, with a deadline
    raise AssertionError(f"the replica never started generating for {marker!r}")


@contextmanager
def started(args: list[str], **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """`args` as a subprocess with text pipes; killed and reaped on the way out, whatever happened,
    so a failing test leaves no process behind."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen}
    proc = subprocess.Popen(args, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def interrupt(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    """Ctrl-C (SIGINT) to `proc`, then its exit status and the rest of its stdout and stderr.

    Fails, with what it wrote to stderr, if it is still running `timeout` seconds later: a program
    that ignores Ctrl-C is the bug these tests look for."""
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"still running {timeout} s after Ctrl-C; its stderr:\n{err}") from None
    return proc.returncode, out or "", err or ""
