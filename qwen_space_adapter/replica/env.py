"""The replica's own Python environments: one per flavor and interpreter, built once, cached.

The Space's stacks (Gradio 4.44 with `gradio_client==1.3.0`, or Gradio 5.23) cannot share an
environment with the adapter's current `gradio_client`. So each replica flavor runs in a virtual
environment of its own, in a folder keyed by a hash of its pins (`flavors.py`, the one place for
them) and the interpreter's version, so that a change of pins builds a fresh one instead of
silently reusing a stale one.

The interpreter: `python=` (`--python`), else `$QWEN_SPACE_REPLICA_PYTHON`, else this one when
the flavor supports it, else a supported one found on the machine (`python3.X` on PATH, pyenv's
versions). `$QWEN_SPACE_REPLICA_ENV` names an environment folder to use instead of the cache.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from ..errors import ReplicaError
from .flavors import HAND, Flavor, gradio_generation, gui_requirements, stack_of

REQUIREMENTS = Path(__file__).with_name("requirements.txt")
PIP = ["-m", "pip", "install", "--disable-pip-version-check", "-q"]


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
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30)
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
    advice = (f"Install one of Python {supported} and pass it with --python PATH "
              "(ReplicaSettings(python=...), or $QWEN_SPACE_REPLICA_PYTHON), or set "
              "$QWEN_SPACE_REPLICA_ENV to an environment folder built for this flavor.")
    if explicit:
        version = python_version(explicit)
        if version is None:
            raise ReplicaError(f"The replica's interpreter {explicit} cannot be run. {advice}")
        if version not in flavor.pythons:
            raise ReplicaError(f"The {flavor.ui} replica runs on Python {supported}, and {explicit} "
                               f"is Python {version}. {advice}")
        return explicit, version
    for candidate in [sys.executable, *candidates()]:
        version = python_version(candidate)
        if version in flavor.pythons:
            return candidate, version
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    raise ReplicaError(f"The {flavor.ui} replica runs on Python {supported}; this is Python {here} "
                       f"and no supported interpreter was found on PATH or in pyenv. {advice}")


def env_dir(flavor: Flavor = HAND, python_tag: str | None = None) -> Path:
    """The environment's folder: one per flavor pins and Python minor version."""
    override = os.environ.get("QWEN_SPACE_REPLICA_ENV")
    if override:
        return Path(override).expanduser()
    tag = python_tag or f"py{sys.version_info.major}{sys.version_info.minor}"
    return cache_root() / flavor.key(tag)


def _python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_env(flavor: Flavor = HAND, *, python: str | None = None, quiet: bool = False) -> Path:
    """Return the flavor environment's Python, building the environment once if needed.

    A file lock makes concurrent first uses (two test processes, a CLI and a notebook) build it
    once; the `.ready` marker is written last, so a half-built environment is never used.
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
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return _python(env)
        if env.exists():
            shutil.rmtree(env)
        if not quiet:
            print(f"qwen-space: building the {flavor.ui} replica environment (Python {version}) "
                  f"in {env} (once)...", file=sys.stderr)
        began = time.monotonic()
        _run([interpreter, "-m", "venv", str(env)], flavor, env, "create a virtual environment")
        py = str(_python(env))
        if flavor.real_ui:
            installed = _install_release(flavor, py, env)
        else:
            _run([py, *PIP, "-r", str(flavor.requirements)], flavor, env, "install")
            installed = flavor.requirements.read_text()
        _check_import(flavor, py, env)
        seconds = time.monotonic() - began
        marker.write_text(f"# built with Python {version} in {seconds:.0f} s\n{installed}")
    return _python(env)


def _install_release(flavor: Flavor, py: str, env: Path) -> str:
    """Qwen-Agent itself without dependencies, then its GUI pins and import chain only."""
    with tempfile.TemporaryDirectory(prefix="qwen-agent-") as tmp:
        _run([py, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps",
              "--only-binary=:all:", "-d", tmp, f"qwen-agent=={flavor.release}"],
             flavor, env, f"download qwen-agent=={flavor.release} (is it on PyPI?)")
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            gui = gui_requirements(zf.read(name).decode())
        stack = stack_of(str(flavor.release))
        if gradio_generation(gui) != stack.gradio:
            raise ReplicaError(f"qwen-agent=={flavor.release} pins {gui} for its GUI, not the Gradio "
                               f"{stack.gradio} that replica/flavors.py expects: its table needs a fix.")
        _run([py, *PIP, "--no-deps", str(wheel)], flavor, env, "install")
    reqs = [*gui, *stack.chain, *stack.compat]
    _run([py, *PIP, *reqs], flavor, env, "install")
    return "\n".join([f"qwen-agent=={flavor.release}  # --no-deps", *reqs]) + "\n"


def _check_import(flavor: Flavor, py: str, env: Path) -> None:
    """Prove the app's imports work before the environment is marked ready."""
    code = ("from qwen_agent.gui.web_ui import WebUI; from qwen_agent import Agent"
            if flavor.real_ui else flavor.imports)
    _run([py, "-c", code], flavor, env, "import the UI")


def _run(cmd: list[str], flavor: Flavor, env: Path, what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"))
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        advice = ("The environment installed but does not import: its pins (replica/flavors.py) "
                  "need a fix for this Python; try another with --python."
                  if what == "import the UI" else "Check that PyPI is reachable, then retry.")
        raise ReplicaError(f"Could not {what} for the {flavor.ui} replica in {env}:\n{tail}\n{advice}")
