"""The replica environment's first build: its progress reporting, the uv path and the pip fallback, the cache.

A first run waits tens of seconds for a build and a few for the server, so every wait must say what
it is doing and for how long (`replica/progress.py`), and the build must use uv where it can and pip
where it cannot (`replica/env.py`). Nothing real is built here except two tiny environments holding
one local wheel (a few seconds each, offline): the slow steps are subprocesses that print what an
installer prints and then wait on a FIFO the test opens when it has seen what it expects, and the
reporter's clock is the test's, so the elapsed seconds shown are exact without any sleep.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import struct
import sys
import termios
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qwen_space_adapter.errors import ReplicaError
from qwen_space_adapter.replica import env as replica_env
from qwen_space_adapter.replica.flavors import HAND, Flavor, flavor
from qwen_space_adapter.replica.launcher import Replica
from qwen_space_adapter.replica.progress import Progress, _fit
from qwen_space_adapter.replica.serving import READY

WAIT = 60.0  # the longest any expected output may take to appear (a deadline, not a pace)
TASK = "building the test environment (fake)"


class Recorder:
    """A text stream that lets a test wait for what has been written."""

    def __init__(self, tty: bool = False) -> None:
        self.text = ""
        self.tty = tty
        self._changed = threading.Condition()

    def write(self, text: str) -> int:
        with self._changed:
            self.text += text
            self._changed.notify_all()
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self.tty

    def wait_for(self, pattern: str) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: re.search(pattern, self.text), timeout=WAIT):
                raise AssertionError(f"{pattern!r} never appeared in {self.text!r}")


class Clock:
    """The reporter's clock, moved by the test; counts its readings so a test can wait for ticks."""

    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0
        self._read = threading.Condition()

    def __call__(self) -> float:
        with self._read:
            self.reads += 1
            self._read.notify_all()
            return self.now

    def wait_reads(self, more: int) -> None:
        with self._read:
            target = self.reads + more
            assert self._read.wait_for(lambda: self.reads >= target, timeout=WAIT), "the reporter stopped ticking"


@pytest.fixture
def slow_step(tmp_path: Path) -> Iterator[tuple[list[str], Callable[[], None]]]:
    """A command that prints pip's "Collecting" line, then waits until `release()` is called."""
    fifo = tmp_path / "release"
    os.mkfifo(fifo)
    code = f"print('Collecting fakepkg==1.0', flush=True); open({str(fifo)!r}).read()"
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            with open(fifo, "w"):  # the step's open() returns, read() sees EOF and it exits
                pass

    yield [sys.executable, "-c", code], release
    release()  # never leave the step's process waiting


def _run_step(progress: Progress, cmd: list[str], tmp_path: Path) -> tuple[threading.Thread, threading.Event]:
    """Run `cmd` as one build step in a thread, as `ensure_env` does; the event is set once the
    step's output line has been read (so the detail is known to the reporter)."""
    detail_seen = threading.Event()
    set_detail = progress.set_detail

    def spy(text: str | None) -> None:
        set_detail(text)
        detail_seen.set()

    progress.set_detail = spy  # type: ignore[method-assign]

    def body() -> None:
        with progress:
            progress.set_step("installing 1 requirements")
            replica_env._run(cmd, HAND, tmp_path, "install", progress)

    thread = threading.Thread(target=body)
    thread.start()
    return thread, detail_seen


def test_a_log_gets_each_step_once_and_a_still_working_line_per_period(slow_step: Any, tmp_path: Path) -> None:
    cmd, release = slow_step
    out, clock = Recorder(tty=False), Clock()
    progress = Progress(TASK, stream=out, delay=0, tick=0.001, every=10, clock=clock)  # type: ignore[arg-type]
    thread, detail_seen = _run_step(progress, cmd, tmp_path)
    try:
        out.wait_for(r"installing 1 requirements\.\.\. 0 s\n")
        assert detail_seen.wait(WAIT)
        clock.now = 10.0  # one period: one still-working line, with what pip said last
        out.wait_for(r"still working, 10 s\n")
        clock.wait_reads(20)  # many more ticks within the same period: no more lines
    finally:
        release()
        thread.join(WAIT)
    assert out.text == (
        f"qwen-space: {TASK}: installing 1 requirements... 0 s\n"
        f"qwen-space: {TASK}: installing 1 requirements: collecting fakepkg==1.0... still working, 10 s\n"
        f"qwen-space: {TASK}: done in 10 s\n"
    )


def test_a_terminal_gets_one_line_redrawn_in_place(slow_step: Any, tmp_path: Path) -> None:
    cmd, release = slow_step
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))  # wide: nothing cut
    tty = os.fdopen(slave, "w")
    screen = Recorder()

    def read_screen() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other end is closed
                return
            if not data:
                return
            screen.write(data.decode(errors="replace"))

    reader = threading.Thread(target=read_screen)
    reader.start()
    clock = Clock()
    progress = Progress(TASK, stream=tty, delay=0, tick=0.001, clock=clock)
    thread, detail_seen = _run_step(progress, cmd, tmp_path)
    try:
        assert progress.live  # decided from the stream: a pty is a terminal
        screen.wait_for(r"installing 1 requirements\.\.\. 0 s")
        assert detail_seen.wait(WAIT)
        clock.now = 12.0
        screen.wait_for(r"installing 1 requirements: collecting fakepkg==1\.0\.\.\. 12 s")
    finally:
        release()
        thread.join(WAIT)
        tty.close()
        reader.join(WAIT)
        os.close(master)
    drawn, _, last = screen.text.rpartition("\r\x1b[2K")
    assert last.replace("\r\n", "\n") == f"qwen-space: {TASK}: done in 12 s\n"
    assert "\n" not in drawn  # every earlier state was drawn over the same line
    assert drawn.count("\r\x1b[2K") >= 2  # at least: the first draw and the redraw with the detail


def test_the_live_line_is_cut_to_the_terminal_width() -> None:
    # A wrapped line cannot be redrawn in place: each redraw would leave a row behind.
    line = _fit("qwen-space: building the hand replica environment (uv): installing 7 requirements...", "12 s", 40)
    assert len(line) == 39 and line.endswith("… 12 s") and line.startswith("qwen-space: building")
    assert _fit("short...", "3 s", 40) == "short... 3 s"


@pytest.mark.parametrize(("error", "outcome"), [(ValueError, "failed"), (KeyboardInterrupt, "interrupted")])
def test_a_task_that_ends_early_says_how(error: type[BaseException], outcome: str) -> None:
    out = Recorder()
    with pytest.raises(error), Progress(TASK, stream=out, delay=0, clock=Clock()) as progress:  # type: ignore[arg-type]
        progress.set_step("creating the venv")
        raise error
    assert out.text == f"qwen-space: {TASK}: creating the venv... 0 s\nqwen-space: {TASK}: {outcome} in 0 s\n"


def test_quiet_writes_nothing(slow_step: Any, tmp_path: Path) -> None:
    cmd, release = slow_step
    out = Recorder()
    progress = Progress(TASK, stream=out, quiet=True, delay=0)  # type: ignore[arg-type]
    thread, detail_seen = _run_step(progress, cmd, tmp_path)
    try:
        assert detail_seen.wait(WAIT)  # the step ran and reported, to no one
    finally:
        release()
        thread.join(WAIT)
    progress.note("a note")
    assert out.text == ""


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("Resolved 57 packages in 1.21s", "downloading 57 packages"),
        ("Prepared 57 packages in 8.02s", "installing 57 packages"),
        ("Installed 1 package in 6ms", "compiling their bytecode"),
        ("Bytecode compiled 4345 files in 13.2s", "compiled the bytecode of 4345 files"),
        ("Collecting gradio==4.44.1 (from -r requirements.txt (line 4))", "collecting gradio==4.44.1"),
        ("  Downloading aiohttp-3.14.5-cp311-cp311-manylinux2014_x86_64.whl (1.7 MB)", "downloading aiohttp-3.14.5"),
        ("Installing collected packages: pytz, pydub, tzdata", "installing 3 packages"),
        ("Using Python 3.11.7 environment at: env", None),
    ],
)
def test_installer_lines_become_the_steps_detail(line: str, shown: str | None) -> None:
    assert replica_env.installer_detail(line) == shown


# -- uv or pip ------------------------------------------------------------------------------


def test_uv_is_chosen_from_the_variable_the_wheel_or_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QWEN_SPACE_UV", "off")
    assert replica_env.find_uv() == (None, "$QWEN_SPACE_UV=off asks for pip")
    monkeypatch.setenv("QWEN_SPACE_UV", "/opt/uv/bin/uv")
    assert replica_env.find_uv() == ("/opt/uv/bin/uv", "")
    monkeypatch.delenv("QWEN_SPACE_UV")
    monkeypatch.setitem(sys.modules, "uv", None)  # the wheel is not installed: import uv fails
    monkeypatch.setenv("PATH", str(tmp_path))
    uv, why = replica_env.find_uv()
    assert uv is None and "uv is not installed" in why
    fake = tmp_path / "uv"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert replica_env.find_uv() == (str(fake), "")


def test_each_installer_builds_with_its_own_commands() -> None:
    uv, pip = replica_env.Installer("/x/uv"), replica_env.Installer(None)
    assert uv.venv("/usr/bin/python3.11", Path("/e")) == ["/x/uv", "venv", "--python", "/usr/bin/python3.11", "/e"]
    assert uv.install("/e/bin/python", "-r", "r.txt")[:6] == [
        "/x/uv",
        "pip",
        "install",
        "--python",
        "/e/bin/python",
        "--compile-bytecode",
    ]
    assert pip.venv("/usr/bin/python3.11", Path("/e")) == ["/usr/bin/python3.11", "-m", "venv", "/e"]
    assert pip.install("/e/bin/python", "-r", "r.txt")[:4] == ["/e/bin/python", "-m", "pip", "install"]


def test_uv_is_given_pips_index_unless_it_has_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    monkeypatch.delenv("UV_INDEX_URL", raising=False)
    assert replica_env.Installer("uv").environ()["UV_INDEX_URL"] == "https://mirror.example/simple"
    monkeypatch.setenv("UV_INDEX_URL", "https://uv.example/simple")
    assert replica_env.Installer("uv").environ()["UV_INDEX_URL"] == "https://uv.example/simple"
    monkeypatch.delenv("UV_INDEX_URL")
    assert "UV_INDEX_URL" not in replica_env.Installer(None).environ()  # pip reads its own settings


def _tiny_flavor(tmp_path: Path) -> Flavor:
    """A flavor whose whole environment is one local pure-Python wheel: builds offline in seconds."""
    name, version = "qsa_tiny", "1.0"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": "VALUE = 42\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def digest(text: str) -> str:
        raw = hashlib.sha256(text.encode()).digest()
        return "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    record = "".join(f"{path},{digest(text)},{len(text.encode())}\n" for path, text in files.items())
    wheel = tmp_path / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in {**files, f"{info}/RECORD": record + f"{info}/RECORD,,\n"}.items():
            zf.writestr(path, text)
    requirements = tmp_path / "requirements-tiny.txt"
    requirements.write_text(f"# one local wheel\n{wheel}\n")
    return Flavor(
        ui="tiny",
        app=tmp_path / "unused.py",
        requirements=requirements,
        imports=f"import {name}; assert {name}.VALUE == 42",
    )


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("QWEN_SPACE_CACHE", str(root))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))  # the tiny wheel stays out of the user's cache
    for name in ("QWEN_SPACE_REPLICA_ENV", "QWEN_SPACE_REPLICA_PYTHON", "QWEN_SPACE_UV"):
        monkeypatch.delenv(name, raising=False)
    return root


def _uv_available() -> bool:
    return replica_env.find_uv()[0] is not None


@pytest.mark.skipif(not _uv_available(), reason="uv is not installed (a dependency of the package)")
def test_uv_builds_the_environment_when_it_is_there(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = _tiny_flavor(tmp_path)
    python = replica_env.ensure_env(tiny, python=sys.executable)
    env = python.parent.parent
    assert env.parent == cache
    assert (
        (env / ".ready")
        .read_text()
        .startswith(f"# built with Python {sys.version_info[0]}.{sys.version_info[1]} by uv in ")
    )
    assert not list(env.glob("lib/python*/site-packages/pip"))  # uv's venv: pip is not even seeded
    assert "(uv): done in" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("uv", "why"),
    [
        ("broken", r"uv could not build it \(.*this uv is broken on purpose.*\)"),
        ("missing", r"uv is not installed \(.*\)"),
    ],
)
def test_pip_takes_over_when_uv_fails_or_is_missing(
    uv: str, why: str, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if uv == "broken":
        broken = tmp_path / "broken-uv"
        broken.write_text("#!/bin/sh\necho 'error: this uv is broken on purpose' >&2\nexit 2\n")
        broken.chmod(0o755)
        monkeypatch.setenv("QWEN_SPACE_UV", str(broken))
    else:  # neither the wheel nor a uv on PATH
        monkeypatch.setitem(sys.modules, "uv", None)
        empty = tmp_path / "empty-bin"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))
    tiny = _tiny_flavor(tmp_path)
    half_built = replica_env.env_dir(tiny, f"py{sys.version_info[0]}{sys.version_info[1]}")
    half_built.mkdir(parents=True)
    (half_built / "left-over").write_text("from a build that was killed")
    python = replica_env.ensure_env(tiny, python=sys.executable)
    env = python.parent.parent
    assert env == half_built and not (env / "left-over").exists()  # rebuilt from scratch
    assert " by pip in " in (env / ".ready").read_text().splitlines()[0]
    err = capsys.readouterr().err
    assert re.search(why + r"; building it with pip\.", err)
    assert "(pip): done in" in err


def test_a_failed_build_says_why_and_leaves_no_half_built_environment(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QWEN_SPACE_UV", "off")
    tiny = _tiny_flavor(tmp_path)
    bad = Flavor(ui="tiny", app=tiny.app, requirements=tiny.requirements, imports="import qsa_missing_module")
    with pytest.raises(ReplicaError, match=r"(?s)Could not import the UI for the tiny replica.*qsa_missing_module"):
        replica_env.ensure_env(bad, python=sys.executable, quiet=True)
    assert not replica_env.env_dir(bad, f"py{sys.version_info[0]}{sys.version_info[1]}").exists()


# -- the cache ------------------------------------------------------------------------------


def test_cache_keys_are_those_of_environments_already_built() -> None:
    # Environments built before uv sit under these names: the same key means they are used as they
    # are. A change of pins changes them on purpose (and this test with them); a change of installer
    # must not.
    assert HAND.key("py311") == "replica-hand-py311-93a1c18513"
    assert flavor("qwen-agent").key("py311") == "replica-qwen-agent-0.0.11-py311-57cd47159d"


def _fail_if_built(*_: object, **__: object) -> str:
    raise AssertionError("an environment marked ready was rebuilt")


def test_a_ready_environment_is_used_as_it_is(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    env = replica_env.env_dir(HAND, "py" + version.replace(".", ""))
    (env / "bin").mkdir(parents=True)
    marker = env / ".ready"
    marker.write_text(f"# built with Python {version} in 130 s\n(by pip, before uv)\n")
    monkeypatch.setattr(replica_env, "_build", _fail_if_built)
    assert replica_env.ensure_env(HAND, python=sys.executable) == env / "bin" / "python"
    assert marker.read_text() == f"# built with Python {version} in 130 s\n(by pip, before uv)\n"
    assert capsys.readouterr().err == ""  # nothing to wait for, nothing said


def test_a_build_by_another_process_is_waited_for_and_reported(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    env = replica_env.env_dir(HAND, "py" + version.replace(".", ""))
    env.parent.mkdir(parents=True)
    monkeypatch.setattr(replica_env, "_build", _fail_if_built)
    err = Recorder()
    monkeypatch.setattr(sys, "stderr", err)
    result: list[Path] = []
    with open(env.parent / f"{env.name}.lock", "w") as other:  # "another process" building it
        fcntl.flock(other, fcntl.LOCK_EX)
        waiter = threading.Thread(target=lambda: result.append(replica_env.ensure_env(HAND, python=sys.executable)))
        waiter.start()
        try:
            err.wait_for(r"waiting for another process building the hand replica environment: .*\.lock is held")
            (env / "bin").mkdir(parents=True)
            (env / ".ready").write_text("# built by the other process\n")
        finally:
            fcntl.flock(other, fcntl.LOCK_UN)
            waiter.join(WAIT)
    assert result == [env / "bin" / "python"]
    assert re.search(r"waiting for another process building the hand replica environment: done in \d+ s\n$", err.text)


# -- the server's start ---------------------------------------------------------------------


def test_the_replica_start_reports_its_wait_for_the_ready_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow_step: Any
) -> None:
    _, release = slow_step  # its FIFO: the stand-in app prints its ready line once the test opens it
    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").symlink_to(sys.executable)
    (env / ".ready").write_text("# a stand-in\n")
    monkeypatch.setenv("QWEN_SPACE_REPLICA_ENV", str(env))
    app = tmp_path / "app.py"
    app.write_text(
        "import signal, sys\n"
        f"open({str(tmp_path / 'release')!r}).read()\n"
        f"print({READY!r} + 'http://127.0.0.1:9', flush=True)\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "signal.pause()\n"
    )
    err = Recorder()
    monkeypatch.setattr(sys, "stderr", err)
    replica = Replica(app=str(app))
    urls: list[str] = []
    starter = threading.Thread(target=lambda: urls.append(replica.start(timeout=WAIT)))
    starter.start()
    try:
        err.wait_for(r"qwen-space: starting the hand replica: waiting for its ready line\.\.\. \d+ s\n")
    finally:
        release()
        starter.join(WAIT)
        replica.close()
    assert urls == ["http://127.0.0.1:9"]
    assert re.search(r"qwen-space: starting the hand replica: done in \d+ s\n$", err.text)
