"""The replica whose every step counts its calls, and which with `--shifted` registers two more
events before its own: the fn indices of its chat chain shift by two.

Served by the replica launcher (`Replica(app=..., extra_args=["--shifted"])`), in the replica's
environment. With `--shifted`, a hidden note with a `.change` handler and a "wipe" button come
first, so the indices a client cached from the unshifted page now name the note's handler and
the wipe button: a client that runs them gets no error, only a wrong page. `GET /calls` says
how often each step ran, by name. Everything else is the replica, unchanged (wrapped, not copied).
"""

import collections
import functools
import sys
import threading
from pathlib import Path

REPLICA_DIR = Path(__file__).resolve().parents[2] / "qwen_space_adapter" / "replica"
sys.path.insert(0, str(REPLICA_DIR))

import app  # noqa: E402  (the replica app: starts its parent watchdog and signal handling)
import gradio as gr  # noqa: E402
import serving  # noqa: E402

SHIFTED = "--shifted" in sys.argv
if SHIFTED:
    sys.argv.remove("--shifted")
CALLS: collections.Counter = collections.Counter()
LOCK = threading.Lock()


def note_changed(text):
    return text


def wipe():
    return "wiped"


def counted(name, fn):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        with LOCK:
            CALLS[name] += 1
        return fn(*args, **kwargs)

    @functools.wraps(fn)
    async def acall(*args, **kwargs):
        with LOCK:
            CALLS[name] += 1
        async for item in fn(*args, **kwargs):
            yield item

    import inspect

    return acall if inspect.isasyncgenfunction(fn) else call


original_enter = gr.Blocks.__enter__


def enter(self):
    entered = original_enter(self)
    if SHIFTED and not getattr(self, "_shifted_events", False):
        self._shifted_events = True
        note = gr.Textbox(visible=False)
        note.change(note_changed, [note], [note])
        gr.Button("wipe").click(wipe, [], [note])
    return entered


gr.Blocks.__enter__ = enter


def build(settings):
    demo = original_build(settings)
    fns = demo.fns.values() if isinstance(demo.fns, dict) else demo.fns
    for block_fn in fns:
        inner = block_fn.fn
        if inner is not None:
            block_fn.fn = counted(getattr(inner, "__name__", "?"), inner)
    return demo


def add_routes(server_app):
    original_routes(server_app)

    def calls() -> dict:
        with LOCK:
            return dict(CALLS)

    server_app.add_api_route("/calls", calls, methods=["GET"])


original_build, app.build = app.build, build
original_routes, serving.add_stats_routes = serving.add_stats_routes, add_routes

if __name__ == "__main__":
    app.main()
