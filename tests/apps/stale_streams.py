"""The replica with Qwen-Agent's unqueued generator step, and Gradio 4's stream ids made certain.

Served by the replica launcher (`Replica(app=...)`), in the replica's environment (Gradio 4.44).
Qwen-Agent's `add_text` is a generator run unqueued: Gradio runs it to its first yield and keeps
the result as a diff stream it never ends, keyed by the generator's `id()`. When a later
generator of the session is allocated at the same address (CPython reuses a freed block of the
same size soon, most often after a stopped answer), Gradio answers that step with a diff against
the stale stream, and the page's browser takes the diff as the value. On the real stack that
happens now and then; here every `add_text` draws the id of the previous one, so every turn
after the first gets its result as a diff against the previous turn's.
Everything else is the replica, unchanged (its `build` is wrapped, not copied).
"""

import functools
import sys
from pathlib import Path

REPLICA_DIR = Path(__file__).resolve().parents[2] / "qwen_space_adapter" / "replica"
sys.path.insert(0, str(REPLICA_DIR))

import app  # noqa: E402  (the replica app: starts its parent watchdog and signal handling)
import gradio as gr  # noqa: E402
from _serve import step_named  # noqa: E402

STALE_ID = 1  # the id() every add_text generator "draws"


def build(settings):
    demo = original_build(settings)
    block_fn = step_named(demo, "add_text")
    inner = block_fn.fn

    @functools.wraps(inner)
    def add_text(*args, **kwargs):
        yield inner(*args, **kwargs)

    block_fn.fn = add_text
    block_fn.types_generator = True  # as the config of Qwen-Agent's page says
    handle = demo.handle_streaming_diffs

    def handle_streaming_diffs(fn, data, session_hash, run, final, simple_format=False):
        return handle(fn, data, session_hash, STALE_ID if fn is block_fn else run, final, simple_format)

    demo.handle_streaming_diffs = handle_streaming_diffs
    return demo


original_build, app.build = app.build, build
assert gr.__version__.startswith("4."), gr.__version__

if __name__ == "__main__":
    app.main()
