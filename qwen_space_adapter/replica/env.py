"""The replica's own Python environments: one per flavor and interpreter, built once, cached.

The Space's stacks (Gradio 4.44 with `gradio_client==1.3.0`, or Gradio 5.23) cannot share an
environment with the adapter's current `gradio_client`. So each replica flavor runs in a virtual
environment of its own, in a folder keyed by a hash of its pins (`flavors.py`, the one place for
them) and the interpreter's version, so that a change of pins builds a fresh one instead of
silently reusing a stale one.

The interpreter: `python=` (`--python`), else `$QWEN_SPACE_REPLICA_PYTHON`, else this one when
the flavor supports it, else a supported one found on the machine (`python3.X` on PATH, pyenv's
versions). `$QWEN_SPACE_REPLICA_ENV` names an environment folder to use instead of the cache.

The installer: uv when it is available (the `uv` wheel, a dependency of this package, else `uv`
on PATH; `$QWEN_SPACE_UV` names another binary, or `off` for pip), because it builds the same
environment about four times faster than pip (34 s against 130 s for the hand flavor), which is
most of a first run. pip is the fallback: when uv is missing, or fails for any reason (an index
only pip is configured for, a platform without a uv wheel), the reason is printed and the
environment is built again from scratch with pip, with the same pins. uv reads its own
configuration, not pip's: `$PIP_INDEX_URL` and `$PIP_EXTRA_INDEX_URL` are passed on to it as
`$UV_INDEX_URL` and `$UV_EXTRA_INDEX_URL` when those are not set; other pip settings are not.
Either way the folder, its key and its `.ready` marker are the same, so an environment built by
one is used as it is by the other.
"""

from __future__ import annotations

import collections
import fcntl
import glob
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..errors import ReplicaError
from .flavors import HAND, Flavor, gradio_generation, gui_requirements, stack_of
from .progress import Progress

REQUIREMENTS = Path(__file__).with_name("requirements.txt")
# Not -q: its "Collecting X" lines are what the progress line shows while pip works.
PIP = ["-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
UV_ENV = "QWEN_SPACE_UV"
_OFF = ("off", "0", "no", "false", "pip")


def cache_root() -> Path:
    """Where replica environments live; `QWEN_SPACE_CACHE` overrides it (CI caches this folder)."""
    explicit = os.environ.get("QWEN_SPACE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qwen_space_adapter"


def python_version(python: str) -> str | None:
    """`"3.12"` for an interpreter, or None when it cannot be run."""
    if python == sys.executable:
        return f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def candidates() -> list[str]:
    """Interpreters installed on this machine, newest first: `python3.X` on PATH, then pyenv's."""
    found: list[str] = []
    for minor in range(20, 9, -1):
        path = shutil.which(f"python3.{minor}")
        if path:
            found.append(path)
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    found += sorted(glob.glob(f"{root}/versions/3.*/bin/python3"), reverse=True)
    return found


def choose_python(flavor: Flavor, python: str | None = None) -> tuple[str, str]:
    """The interpreter to build `flavor`'s environment with, and its version.

    An explicit one must be supported; otherwise this interpreter, or another supported one
    found on the machine. Raises `ReplicaError` naming the supported versions and the ways to
    point the replica at one.
    """
    explicit = python or os.environ.get("QWEN_SPACE_REPLICA_PYTHON")
    supported = ", ".join(flavor.pythons)
    advice = (
        f"Install one of Python {supported} and pass it with --python PATH "
        "(ReplicaSettings(python=...), or $QWEN_SPACE_REPLICA_PYTHON), or set "
        "$QWEN_SPACE_REPLICA_ENV to an environment folder built for this flavor."
    )
    if explicit:
        version = python_version(explicit)
        if version is None:
            raise ReplicaError(f"The replica's interpreter {explicit} cannot be run. {advice}")
        if version not in flavor.pythons:
            raise ReplicaError(
                f"The {flavor.ui} replica runs on Python {supported}, and {explicit} is Python {version}. {advice}"
            )
        return explicit, version
    for candidate in [sys.executable, *candidates()]:
        version = python_version(candidate)
        if version in flavor.pythons:
            return candidate, version
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    raise ReplicaError(
        f"The {flavor.ui} replica runs on Python {supported}; this is Python {here} "
        f"and no supported interpreter was found on PATH or in pyenv. {advice}"
    )


def env_dir(flavor: Flavor = HAND, python_tag: str | None = None) -> Path:
    """The environment's folder: one per flavor pins and Python minor version."""
    override = os.environ.get("QWEN_SPACE_REPLICA_ENV")
    if override:
        return Path(override).expanduser()
    tag = python_tag or f"py{sys.version_info.major}{sys.version_info.minor}"
    return cache_root() / flavor.key(tag)


def _python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@dataclass(frozen=True)
class Installer:
    """How an environment is created and filled: uv (`uv` is its binary) or pip (`uv` is None)."""

    uv: str | None = None

    @property
    def name(self) -> str:
        return "uv" if self.uv else "pip"

    def venv(self, interpreter: str, env: Path) -> list[str]:
        if self.uv:
            return [self.uv, "venv", "--python", interpreter, str(env)]
        return [interpreter, "-m", "venv", str(env)]

    def install(self, py: str, *args: str) -> list[str]:
        if self.uv:  # compiled as pip does: else, under PYTHONDONTWRITEBYTECODE, every start compiles gradio
            return [self.uv, "pip", "install", "--python", py, "--compile-bytecode", *args]
        return [py, *PIP, *args]

    def environ(self) -> dict[str, str]:
        """The installer's environment: pip's index settings passed on to uv, which does not read them,
        and never a download of a Python (the interpreter is chosen here)."""
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
        if self.uv:
            env.setdefault("UV_PYTHON_DOWNLOADS", "never")
            for pip_name, uv_name in (("PIP_INDEX_URL", "UV_INDEX_URL"), ("PIP_EXTRA_INDEX_URL", "UV_EXTRA_INDEX_URL")):
                if os.environ.get(pip_name) and not os.environ.get(uv_name):
                    env[uv_name] = os.environ[pip_name]
        return env


def find_uv() -> tuple[str | None, str]:
    """The uv binary to build with, or None and why there is none.

    `$QWEN_SPACE_UV` first (a path, or `off` for pip), then the `uv` wheel's binary, then `uv` on PATH.
    """
    chosen = os.environ.get(UV_ENV, "").strip()
    if chosen.lower() in _OFF:
        return None, f"${UV_ENV}={chosen} asks for pip"
    if chosen:
        return chosen, ""
    try:
        import uv  # the PyPI wheel: its binary sits in this environment's scripts folder

        return uv.find_uv_bin(), ""
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if found:
        return found, ""
    return None, "uv is not installed (`pip install uv` makes this build several times faster)"


def ensure_env(flavor: Flavor = HAND, *, python: str | None = None, quiet: bool = False) -> Path:
    """Return the flavor environment's Python, building the environment once if needed.

    A file lock makes concurrent first uses (two test processes, a CLI and a notebook) build it
    once; the `.ready` marker is written last, so a half-built environment is never used. The
    build, and a wait for another process's build, are reported on stderr (`progress.Progress`)
    unless `quiet`.
    """
    if os.environ.get("QWEN_SPACE_REPLICA_ENV") and (env_dir() / ".ready").exists():
        return _python(env_dir())
    interpreter, version = choose_python(flavor, python)
    env = env_dir(flavor, "py" + version.replace(".", ""))
    marker = env / ".ready"
    if marker.exists():
        return _python(env)
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.parent / f"{env.name}.lock", "w") as lock:
        _lock(lock, f"waiting for another process building the {flavor.ui} replica environment", quiet)
        if marker.exists():
            return _python(env)
        began = time.monotonic()
        uv, why_not = find_uv()
        installed = None
        if uv:
            try:
                installed = _build(flavor, interpreter, version, env, Installer(uv), quiet)
                used = "uv"
            except ReplicaError as e:
                why_not = f"uv could not build it ({_first_lines(str(e))})"
        if installed is None:
            if not quiet:
                print(f"qwen-space: {why_not}; building it with pip.", file=sys.stderr, flush=True)
            installed = _build(flavor, interpreter, version, env, Installer(None), quiet)
            used = "pip"
        seconds = time.monotonic() - began
        marker.write_text(f"# built with Python {version} by {used} in {seconds:.0f} s\n{installed}")
    return _python(env)


def _lock(lock: TextIO, waiting: str, quiet: bool) -> None:
    """Take the build lock; while another process holds it (building), say so and for how long."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    with Progress(waiting, quiet=quiet, delay=0) as progress:
        progress.set_step(f"{lock.name} is held")
        fcntl.flock(lock, fcntl.LOCK_EX)


def _build(flavor: Flavor, interpreter: str, version: str, env: Path, installer: Installer, quiet: bool) -> str:
    """Create and fill `env` with `installer`; return what was installed (for the marker).

    On failure the half-built folder is removed, so a retry (pip after uv) starts clean.
    """
    if env.exists():
        shutil.rmtree(env)
    if not quiet:
        print(
            f"qwen-space: building the {flavor.ui} replica environment for Python {version} in {env} (once)",
            file=sys.stderr,
            flush=True,
        )
    task = f"building the {flavor.ui} replica environment ({installer.name})"
    try:
        with Progress(task, quiet=quiet, delay=0) as progress:
            progress.set_step("creating the venv")
            _run(installer.venv(interpreter, env), flavor, env, "create a virtual environment", progress, installer)
            py = str(_python(env))
            if flavor.real_ui:
                installed = _install_release(flavor, py, env, progress, installer)
            else:
                reqs = _requirement_lines(flavor.requirements.read_text())
                progress.set_step(f"installing {len(reqs)} requirements")
                _run(installer.install(py, "-r", str(flavor.requirements)), flavor, env, "install", progress, installer)
                installed = flavor.requirements.read_text()
            progress.set_step("checking the import")
            _check_import(flavor, py, env, progress, installer)
    except BaseException:
        shutil.rmtree(env, ignore_errors=True)
        raise
    return installed


def _requirement_lines(text: str) -> list[str]:
    return [x.strip() for x in text.splitlines() if x.strip() and not x.strip().startswith("#")]


def _install_release(flavor: Flavor, py: str, env: Path, progress: Progress, installer: Installer) -> str:
    """Qwen-Agent itself without dependencies, then its GUI pins and import chain only.

    The GUI pins are read from the installed release's metadata (`Requires-Dist: ...; extra == "gui"`),
    so the same steps work with uv, which has no `pip download`.
    """
    progress.set_step(f"installing qwen-agent=={flavor.release} without its dependencies")
    _run(
        installer.install(py, "--no-deps", "--only-binary", ":all:", f"qwen-agent=={flavor.release}"),
        flavor,
        env,
        f"install qwen-agent=={flavor.release} (is it on PyPI?)",
        progress,
        installer,
    )
    read = (
        "import importlib.metadata as m; "
        "print('\\n'.join('Requires-Dist: ' + r for r in m.requires('qwen-agent') or []))"
    )
    progress.set_step("reading its GUI pins")
    gui = gui_requirements(_run([py, "-c", read], flavor, env, "read qwen-agent's metadata", progress, installer))
    stack = stack_of(str(flavor.release))
    if gradio_generation(gui) != stack.gradio:
        raise ReplicaError(
            f"qwen-agent=={flavor.release} pins {gui} for its GUI, not the Gradio "
            f"{stack.gradio} that replica/flavors.py expects: its table needs a fix."
        )
    reqs = [*gui, *stack.chain, *stack.compat]
    progress.set_step(f"installing {len(reqs)} requirements")
    _run(installer.install(py, *reqs), flavor, env, "install", progress, installer)
    return "\n".join([f"qwen-agent=={flavor.release}  # --no-deps", *reqs]) + "\n"


def _check_import(flavor: Flavor, py: str, env: Path, progress: Progress, installer: Installer) -> None:
    """Prove the app's imports work before the environment is marked ready."""
    code = "from qwen_agent.gui.web_ui import WebUI; from qwen_agent import Agent" if flavor.real_ui else flavor.imports
    _run([py, "-c", code], flavor, env, "import the UI", progress, installer)


_DETAILS = (
    # uv's summary lines (it prints nothing while it resolves, then one line per phase)
    (re.compile(r"Resolved (\d+) packages?"), "downloading {0} packages"),
    (re.compile(r"Prepared (\d+) packages?"), "installing {0} packages"),
    (re.compile(r"Installed (\d+) packages?"), "compiling their bytecode"),
    (re.compile(r"Bytecode compiled (\d+) files?"), "compiled the bytecode of {0} files"),
    # pip's
    (re.compile(r"Collecting (\S+)"), "collecting {0}"),
    (re.compile(r"Downloading (\S+)"), None),
    (re.compile(r"Installing collected packages: (.*)"), None),
)


def installer_detail(line: str) -> str | None:
    """What an installer's output line says it is doing, for the progress line; None for other lines."""
    line = line.strip()
    for pattern, template in _DETAILS:
        m = pattern.match(line)
        if m:
            if template is None and line.startswith("Downloading"):  # a wheel's file name: its name and version
                return "downloading " + "-".join(m.group(1).rsplit("/", 1)[-1].split("-")[:2])
            if template is None:  # pip names every package it installs, comma-separated
                return f"installing {len(m.group(1).split(','))} packages"
            return re.sub(r"\b1 packages", "1 package", template.format(m.group(1)))
    return None


def _run(
    cmd: list[str], flavor: Flavor, env: Path, what: str, progress: Progress, installer: Installer | None = None
) -> str:
    """Run one build step, its output shown as the step's detail; return its output.

    Raises `ReplicaError` with the output's tail when it fails (or cannot be started: a uv
    binary that is not there). Interrupted, it kills the step's process before re-raising.
    """
    environ = (installer or Installer(None)).environ()
    tail: collections.deque[str] = collections.deque(maxlen=15)
    out: list[str] = []
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=environ,
        )
    except OSError as e:
        raise ReplicaError(
            f"Could not {what} for the {flavor.ui} replica in {env}: cannot run {cmd[0]}: {e.strerror or e}"
        ) from None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if line.strip():
                tail.append(line.rstrip())
            detail = installer_detail(line)
            if detail:
                progress.set_detail(detail)
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
    if code != 0:
        advice = (
            "The environment installed but does not import: its pins (replica/flavors.py) "
            "need a fix for this Python; try another with --python."
            if what == "import the UI"
            else "Check that PyPI is reachable, then retry."
        )
        raise ReplicaError(
            f"Could not {what} for the {flavor.ui} replica in {env}:\n" + "\n".join(tail) + f"\n{advice}"
        )
    return "".join(out)


def _first_lines(text: str, count: int = 3) -> str:
    """A failure in a few lines, for the note that pip takes over."""
    lines = [x for x in text.splitlines() if x.strip()]
    return " | ".join(lines[:1] + lines[-count + 1 :]) if len(lines) > count else " | ".join(lines)
