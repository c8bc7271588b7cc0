"""Benchmark-only streaming servers whose every update carries the server's `time.time()`.

Why a separate app: the replica's tokens are `word{i}` filler, so a client cannot tell when an
update was produced. This app keeps the replica's shape exactly (same components, same event
order, so fn 1 = add_text and fn 2 = predict and the adapter discovers it like the Space) but its
tokens are ` #{seq}@{time.time()}`: each update says which it is and when it left the server.

Two flavours (`bench/servers.py` serves them with the replica's launcher, `Replica(app=...)`):
- default: gradio 4.44 + modelscope_studio 0.5 (the Space's stack), in the hand replica's environment;
- `--plain`: a plain generator endpoint on current Gradio (6.x), for "the bridge alone", in the
  gradio6 replica's environment.
It starts, launches and stops as the replica's apps do (`replica/serving.py`: the parent watchdog,
the stop signals, port retries, the readiness line), and takes their options (the model's are unused).

Knobs in the prompt, like the replica's: `[[tokens=N]]`, `[[delay=S]]`, `[[stamp=0]]` (short
` #{seq}` tokens, for the growth runs where only CPU matters and text size should stay small).
This file runs in other environments than the adapter's: it imports nothing from it, and reads
only `space_text.py` and `replica/serving.py` by path.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import time
from pathlib import Path
from types import ModuleType
from typing import Any

PACKAGE = Path(__file__).resolve().parent.parent / "qwen_space_adapter"


def _by_path(name: str, path: Path) -> ModuleType:
    """A module of the package, loaded by path: this app runs where the adapter is not installed."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


serving = _by_path("qwen_replica_serving", PACKAGE / "replica" / "serving.py")
serving.begin()  # first: its parent watchdog covers the slow import below

import gradio as gr  # noqa: E402

KNOB_RE = re.compile(r"\[\[(tokens|delay|stamp)=([0-9.]+)\]\]")
# The placeholder is the Space's string, defined once in the package.
_space_text = _by_path("qwen_space_text", PACKAGE / "space_text.py")
THINKING = _space_text.THINKING
SUMMARY = _space_text.SUMMARY_MARKER + "<details><summary>Generation details</summary>benchmark</details>"


def knobs(text: str) -> tuple[int, float, bool]:
    """Answer length, seconds between updates and whether to stamp, read from the prompt."""
    found = {k: float(v) for k, v in KNOB_RE.findall(text)}
    return int(found.get("tokens", 20)), found.get("delay", 0.0), bool(found.get("stamp", 1))


def token(seq: int, stamp: bool) -> str:
    """One update's text: its sequence number and, if asked, the wall clock as it leaves."""
    return f" #{seq}@{time.time():.6f}" if stamp else f" #{seq}"


def build_space() -> Any:
    """The Space-shaped app: clear (fn 0), add_text (fn 1), predict (fn 2, chained)."""
    import modelscope_studio as mgr

    def reset() -> tuple[list, list]:
        return [], []

    def add_text(_input: Any, _chatbot: list | None, _task_history: list | None) -> tuple:
        text = _input.text if _input is not None else ""
        files = [f.path if hasattr(f, "path") else str(f) for f in (_input.files or [])]
        _chatbot = list(_chatbot or [])
        _chatbot.append([_input, None])
        history = list(_task_history or [])
        history.append({"role": "user", "content": [{"text": text}] + [{"file": p} for p in files]})
        return None, _chatbot, history

    async def predict(_chatbot: list, _task_history: list, _number: float | None):
        last = _task_history[-1]
        prompt = "".join(p.get("text", "") for p in last["content"] if "text" in p)
        n, delay, stamp = knobs(prompt)
        head = f" turn:{sum(1 for h in _task_history if h['role'] == 'user')}"
        for part in last["content"]:
            if "file" in part:
                size = len(Path(part["file"]).read_text(encoding="utf-8", errors="replace"))
                head += f" file:{size}"
        _chatbot[-1][1] = [{"text": THINKING}]
        yield _chatbot
        text = head
        for i in range(n):
            text += token(i, stamp)
            _chatbot[-1][1] = [{"text": text}]
            yield _chatbot
            if delay:
                await asyncio.sleep(delay)
        _chatbot[-1][1] = [{"text": text + SUMMARY}]
        _task_history.append({"role": "assistant", "content": [{"text": text}]})
        yield _chatbot

    with gr.Blocks(title="benchmark stamp app") as demo:
        chatbot = mgr.Chatbot(label="bench")
        query = mgr.MultimodalInput()
        task_history = gr.State([])
        number = gr.Number(0, visible=False)
        clear = gr.Button("Clear History")
        clear.click(reset, [], [chatbot, task_history], queue=False)
        query.submit(add_text, [query, chatbot, task_history], [query, chatbot, task_history]).then(
            predict, [chatbot, task_history, number], [chatbot]
        )
    demo.queue(default_concurrency_limit=None)
    return demo


def build_plain() -> Any:
    """A plain generator endpoint (fn 0): `gen(n, delay)` yields the growing stamped text."""

    async def gen(n: float, delay: float):
        text = ""
        for i in range(int(n)):
            text += token(i, True)
            yield text
            if delay:
                await asyncio.sleep(delay)

    with gr.Blocks() as demo:
        n = gr.Number(200)
        delay = gr.Number(0.01)
        out = gr.Textbox()
        gr.Button("go").click(gen, [n, delay], [out], api_name="gen")
    demo.queue(default_concurrency_limit=None)
    return demo


def main() -> None:
    ap = serving.parser(__doc__)
    ap.add_argument("--plain", action="store_true")
    args = ap.parse_args()
    serving.hook_launch(gr, args)  # the launch below serves until SIGTERM, then exits
    if args.plain:
        build_plain().launch(max_file_size=None)
    else:
        build_space().launch(max_file_size=None, show_api=False)


if __name__ == "__main__":
    main()
