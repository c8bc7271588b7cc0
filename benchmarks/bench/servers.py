"""The servers: the stamp app (`stamp_app.py`), started and stopped by the replica's launcher.

The stamp app is a different app from the replica's (its tokens carry the server's clock, its
`add_text` is queued), but it starts, serves and stops like one: it launches through the replica's
`serving.py`, and `qwen_space_adapter.replica.Replica` serves it (`app=`) in a flavor's environment,
in a process group of its own that is always stopped. The Space-shaped app runs in the hand flavor's
environment (gradio 4.44 + modelscope_studio), the plain one (`--plain`) in the gradio6 flavor's.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from qwen_space_adapter.errors import ReplicaError
from qwen_space_adapter.replica import Replica, ReplicaSettings, ensure_env, flavor

from .settings import HERE

STAMP_APP = HERE / "stamp_app.py"


class Server:
    """The stamp app with `args` (`--plain`: the plain generator app); ready when the launcher read its URL.

    `python`, when given, is the interpreter of the environment the caller expects it in, as
    `ensure_env()` returns it (`serve_bench.py`: `Server(ensure_env())`); the environment follows
    from the app (`--plain`: the gradio6 flavor's, else the hand flavor's), so it is checked, not chosen.
    """

    def __init__(self, python: Path | None = None, *args: str) -> None:
        self.python, self.args = python, args
        self.ui = "gradio6" if "--plain" in args else "hand"
        self.replica: Replica | None = None
        self.url = ""

    def start(self, timeout: float = 120.0) -> str:
        if self.python is not None and Path(self.python) != ensure_env(flavor(self.ui), quiet=True):
            raise ReplicaError(f"{self.python} is not the {self.ui} replica environment the stamp app runs in")
        settings = ReplicaSettings(ui=self.ui, app=str(STAMP_APP), extra_args=list(self.args))
        self.replica = Replica(settings, quiet=True)
        self.url = self.replica.start(timeout)
        return self.url

    def stop(self) -> None:
        replica, self.replica = self.replica, None
        if replica is not None:
            replica.close()


def current_gradio(allow_build: bool) -> str:
    """Why the current-Gradio server cannot run here, or "" when it can.

    It runs in the gradio6 replica flavor's environment (Gradio 6.31, `replica/requirements-gradio6.txt`):
    the adapter's environment holds the current gradio_client only, and the hand flavor's gradio 4.44.
    The full run builds it once (`ensure_env`); `--quick` never builds it and skips the row without it.
    """
    from qwen_space_adapter.replica.env import choose_python, env_dir

    gradio6 = flavor("gradio6")
    try:
        if not allow_build:
            _, version = choose_python(gradio6)
            env = env_dir(gradio6, "py" + version.replace(".", ""))
            if not (env / ".ready").exists():
                return f"no current-Gradio environment in {env} (the full run builds it once)"
        ensure_env(gradio6)
    except ReplicaError as e:
        return f"the current-Gradio environment could not be built: {e}"
    return ""


def start_async(server: Server) -> Any:
    """Start a server in a thread (both servers boot in parallel); the returned call joins it."""
    box: dict[str, Any] = {}

    def go() -> None:
        try:
            box["url"] = server.start()
        except Exception as e:
            box["error"] = e

    t = threading.Thread(target=go)
    t.start()

    def join() -> str:
        t.join()
        if "error" in box:
            raise RuntimeError(str(box["error"]))
        return str(box["url"])

    return join
