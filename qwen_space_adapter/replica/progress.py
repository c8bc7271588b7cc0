"""What a replica is waiting for, on stderr, with the time spent: one small reporter for every wait.

Building a flavor's environment takes half a minute to minutes, and starting its server a few
seconds. A single unchanging "building ... (once)..." line could not tell a slow build from a
hang, so every wait goes through a `Progress`: a task ("building the hand replica environment
(uv)") made of steps ("creating the venv", "installing 6 requirements", "checking the import"),
each step optionally refined by what its installer is doing ("downloading 52 packages").

On a terminal it is one line redrawn in place every second, with the elapsed seconds. Elsewhere
(a pipe, CI, a log file) it writes plain lines at a modest rate: each step once, then a
still-working line every `every` seconds (10 by default), so a log shows progress without being
flooded. Nothing is written for a task that ends within `delay` (a second), so a warm start
stays silent. `quiet=True` writes nothing at all.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

PREFIX = "qwen-space: "


class Progress:
    """One task's progress on a stream (stderr by default); see the module docstring.

    `live` forces the redrawn line on or off (default: whether the stream is a terminal);
    `tick` is how often the live line is redrawn, `every` how often a plain still-working line
    is written, `delay` how long a task runs before anything is shown. Thread-safe: a background
    thread redraws while the caller waits on a subprocess or a socket.
    """

    def __init__(
        self,
        task: str,
        *,
        stream: TextIO | None = None,
        quiet: bool = False,
        live: bool | None = None,
        tick: float = 1.0,
        every: float = 10.0,
        delay: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.task = task
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.live = _isatty(self.stream) if live is None else live
        self.tick, self.every, self.delay, self.clock = tick, every, delay, clock
        self.began = clock()
        self.step_text: str | None = None
        self.detail: str | None = None
        self.shown = False  # anything written yet (the task outlived `delay`)
        self._drawn = False  # a live line is on screen, to be replaced
        self._last_plain = 0.0  # when the last plain line was written
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the caller's side -------------------------------------------------------------------

    def __enter__(self) -> Progress:
        self.begin()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.finish("done")
        else:
            self.finish("interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed")

    def begin(self) -> None:
        """Start the clock and the background thread that redraws (or writes still-working lines)."""
        if self.quiet or self._thread is not None:
            return
        self.began = self.clock()
        self.shown = self.delay <= 0  # shown from the start: every step, in order, without a race
        self._thread = threading.Thread(target=self._run, name="qwen-space-progress", daemon=True)
        self._thread.start()

    @contextmanager
    def step(self, text: str) -> Iterator[None]:
        """A step of the task, shown while its body runs."""
        self.set_step(text)
        yield

    def set_step(self, text: str) -> None:
        """Enter a new step: shown at once once the task outlived `delay`."""
        with self._lock:
            self.step_text, self.detail = text, None
            if self.shown:
                self._emit(changed=True)

    def set_detail(self, text: str | None) -> None:
        """Refine the current step (what its installer reports); a change is shown on a terminal
        at once and in a plain log with the next still-working line, so a chatty installer does
        not flood the log."""
        with self._lock:
            if text == self.detail:
                return
            self.detail = text
            if self.shown and self.live:
                self._emit(changed=False)

    def note(self, text: str) -> None:
        """A line that stays (why uv was not used, say), whatever the elapsed time."""
        if self.quiet:
            return
        with self._lock:
            self._clear_live()
            self._write(f"{PREFIX}{text}\n")

    def finish(self, outcome: str = "done") -> None:
        """Stop redrawing; if anything was shown, end with one line saying the outcome and the time."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            if self.shown and not self.quiet:
                self._clear_live()
                self._write(f"{PREFIX}{self.task}: {outcome} in {self.elapsed():.0f} s\n")
                self.shown = False

    def elapsed(self) -> float:
        return self.clock() - self.began

    # -- drawing -----------------------------------------------------------------------------

    def text(self) -> str:
        """The current line, without the elapsed time."""
        what = self.step_text or "working"
        if self.detail:
            what += f": {self.detail}"
        return f"{PREFIX}{self.task}: {what}..."

    def _run(self) -> None:
        if not self.shown:
            if self._stop.wait(self.delay):
                return
            with self._lock:
                self.shown = True
                if self.step_text is not None:  # else the first step shows itself when it starts
                    self._emit(changed=True)
        period = self.tick if self.live else min(self.tick, self.every)
        while not self._stop.wait(period):
            with self._lock:
                if self.live:
                    self._emit(changed=False)
                elif self.clock() - self._last_plain >= self.every:
                    self._emit(changed=False, still=True)

    def _emit(self, changed: bool, still: bool = False) -> None:
        seconds = f"{self.elapsed():.0f} s"
        if self.live:
            self._write(f"\r\x1b[2K{_fit(self.text(), seconds, _columns(self.stream))}")
            self._drawn = True
        elif changed or still:
            self._write(f"{self.text()}{' still working,' if still else ''} {seconds}\n")
            self._last_plain = self.clock()

    def _clear_live(self) -> None:
        if self._drawn:
            self._write("\r\x1b[2K")
            self._drawn = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed stderr must not fail a build
            pass


def _columns(stream: TextIO) -> int:
    """The terminal's width; 80 when it is not known (a pty nobody sized says 0)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return 80


def _fit(text: str, seconds: str, columns: int) -> str:
    """The live line cut to the terminal's width: a line that wraps cannot be redrawn in place
    (the carriage return goes back to its last row only), so each redraw would add rows."""
    room = max(columns - 1 - len(seconds) - 1, 10)
    if len(text) > room:
        text = text[: room - 1] + "…"
    return f"{text} {seconds}"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
