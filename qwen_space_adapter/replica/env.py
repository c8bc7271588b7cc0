"""The replica's own Python environment: created on first use, cached, reused after.

The Space's stack (gradio 4.44.1) pins `gradio_client==1.3.0` and old pydantic/fastapi, which
cannot share an environment with the adapter's current `gradio_client`. So the replica runs in a
virtual environment of its own, keyed by the requirements' hash so that a change of pins builds
a fresh one instead of silently reusing a stale one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

from ..errors import ReplicaError

REQUIREMENTS = Path(__file__).with_name("requirements.txt")


def cache_root() -> Path:
    """Where replica environments live; `QWEN_SPACE_CACHE` overrides it (CI caches this folder)."""
    explicit = os.environ.get("QWEN_SPACE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qwen_space_adapter"


def env_dir() -> Path:
    """The environment's folder: one per requirements file and Python minor version."""
    override = os.environ.get("QWEN_SPACE_REPLICA_ENV")
    if override:
        return Path(override).expanduser()
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:10]
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    return cache_root() / f"replica-{tag}-{digest}"


def _python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_env(*, quiet: bool = False) -> Path:
    """Return the replica environment's Python, building the environment once if needed.

    A file lock makes concurrent first uses (two test processes, a CLI and a notebook) build it
    once; the `.ready` marker is written last, so a half-built environment is never used.
    """
    env = env_dir()
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
            print(f"qwen-space: building the replica environment in {env} (once)...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(env)
        cmd = [str(_python(env)), "-m", "pip", "install", "--disable-pip-version-check",
               "-q", "-r", str(REQUIREMENTS)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise ReplicaError(
                "Could not install the replica's Space stack (gradio 4.44.1, modelscope_studio "
                f"0.5.2) into {env}. pip said:\n{tail}\nCheck that PyPI is reachable, then retry."
            )
        marker.write_text(REQUIREMENTS.read_text())
    return _python(env)
