"""Benchmark-only streaming servers whose every update carries the server's `time.time()`.

Why a separate app: the replica's tokens are `word{i}` filler, so a client cannot tell when an
update was produced. This app keeps the replica's shape exactly (same components, same event
order, so fn 1 = add_text and fn 2 = predict and the adapter discovers it like the Space) but its
tokens are ` #{seq}@{time.time()}`: each update says which it is and when it left the server.

Two flavours, both printing their URL as the first stdout line once they serve:
- default: gradio 4.44 + modelscope_studio 0.5 (the Space's stack), run in the replica's venv;
- `--plain`: a plain generator endpoint on current Gradio (6.x), for "the bridge alone".

Knobs in the prompt, like the replica's: `[[tokens=N]]`, `[[delay=S]]`, `[[stamp=0]]` (short
` #{seq}` tokens, for the growth runs where only CPU matters and text size should stay small).
This file runs in other environments than the adapter's: it imports nothing from it, and reads
only `space_text.py` by path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import importlib.util

import gradio as gr

KNOB_RE = re.compile(r"\[\[(tokens|delay|stamp)=([0-9.]+)\]\]")
# The placeholder is the Space's string, defined once in the package; loaded by path, since this
# app runs in another environment where the adapter is not installed.
_spec = importlib.util.spec_from_file_location(
    "qwen_space_text", Path(__file__).resolve().parent.parent / "qwen_space_adapter" / "space_text.py"
)
assert _spec is not None and _spec.loader is not None
_space_text = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_space_text)
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
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--plain", action="store_true")
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind((args.host, 0))
        port = s.getsockname()[1]
    demo = build_plain() if args.plain else build_space()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    launch: dict[str, Any] = {
        "server_name": args.host,
        "server_port": port,
        "prevent_thread_lock": True,
        "quiet": True,
        "share": False,
        "max_file_size": None,
    }
    if not args.plain:
        launch["show_api"] = False
    demo.launch(**launch)
    print(f"http://{args.host}:{port}", flush=True)
    os.dup2(2, 1)
    while not stop.wait(3600):
        pass
    demo.close()


if __name__ == "__main__":
    main()
