"""The replica Space: a Gradio 4.44 + modelscope_studio 0.5 app shaped like Qwen2.5-1M-Demo.

This file runs inside the replica's own environment (see `env.py`), never in the adapter's:
the Space's stack pins `gradio_client==1.3.0` while the adapter uses the current client.
It imports nothing from `qwen_space_adapter` except its sibling `model.py`, by path.

Component and event order are what `shared/SPACE.md` reconstructs, because fn indices and
payload shapes follow from them: fn 0 = clear, fn 1 = add_text, fn 2 = predict (chained).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import model
import modelscope_studio as mgr
import replay


class Stats:
    """What the server generated, so tests can prove a cancel stopped it or a session stayed apart."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.started = 0
        self.completed = 0
        self.cancelled = 0
        self.failed = 0
        self.tokens = 0
        self.requests: list[dict[str, Any]] = []
        self.idle = asyncio.Event()
        self.idle.set()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "active": self.active,
                "started": self.started,
                "completed": self.completed,
                "cancelled": self.cancelled,
                "failed": self.failed,
                "tokens": self.tokens,
                "requests": self.requests[-200:],
            }


STATS = Stats()


def _file_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return f"<unreadable: {e}>"


def _history_pairs(task_history: list[dict[str, Any]]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for item in task_history:
        text = "".join(part.get("text", "") for part in item["content"] if "text" in part)
        if item["role"] == "user":
            pairs.append((text, ""))
        elif pairs:
            pairs[-1] = (pairs[-1][0], text)
    return pairs


def build(settings: argparse.Namespace) -> gr.Blocks:
    def reset() -> tuple[list, list]:
        return [], []

    def add_text(_input: Any, _chatbot: list | None, _task_history: list | None):
        text = _input.text if _input is not None else ""
        files = [f.path if hasattr(f, "path") else str(f) for f in (_input.files or [])]
        _chatbot = list(_chatbot or [])
        _chatbot.append([_input, None])
        content = [{"text": text}] + [{"file": p} for p in files]
        _task_history = list(_task_history or [])
        _task_history.append({"role": "user", "content": content})
        return None, _chatbot, _task_history

    async def predict(_chatbot: list, _task_history: list, _number: float | None):
        if not _task_history or _task_history[-1]["role"] != "user":
            raise gr.Error("Nothing to answer: submit a message first.")
        last = _task_history[-1]
        user_text = "".join(p.get("text", "") for p in last["content"] if "text" in p)
        files = [
            (Path(p["file"]).name, _file_text(p["file"])) for p in last["content"] if "file" in p
        ]
        req = model.Request(
            history=_history_pairs(_task_history[:-1]), user_text=user_text, files=files
        )
        p = model.plan(
            req,
            token_delay=settings.token_delay,
            prefill_base=settings.prefill_base,
            prefill_per_mb=settings.prefill_per_mb,
        )
        fault, arg = p.fault or settings.fault, p.fault_arg or settings.fault_arg
        record = {
            "user_text": user_text,
            "history_turns": len(req.history),
            "files": [name for name, _ in files],
            "number": _number,
            "tokens": 0,
            "status": "running",
        }
        with STATS.lock:
            STATS.active += 1
            STATS.started += 1
            STATS.requests.append(record)
            STATS.idle.clear()
        status = "cancelled"
        try:
            if settings.replay:  # answer with a recorded transcript's turn instead of the model
                bot = None
                player = replay.load(settings.replay)
                async for bot in player.stream(len(req.history), settings.replay_speed, gr.Error):
                    _chatbot[-1][1] = bot
                    yield _chatbot
                _task_history.append({"role": "assistant", "content": [{"text": replay.text_of(bot)}]})
                status = "completed"
                return
            _chatbot[-1][1] = [{"text": model.THINKING}]
            yield _chatbot
            if fault == "error-before-first-token":
                raise gr.Error("Replica fault: the model failed before its first token.")
            prefill = arg if fault == "slow-first-token" and arg is not None else p.prefill_seconds
            await asyncio.sleep(prefill)
            text = ""
            half = len(p.tokens) // 2
            for i, token in enumerate(p.tokens):
                if i == half and fault == "error-mid-stream":
                    raise gr.Error("Replica fault: the model failed mid-stream.")
                if i == half and fault == "stall":
                    await asyncio.sleep(arg if arg is not None else 30.0)
                if i == half and fault == "die-mid-stream":
                    os._exit(3)
                text += token
                _chatbot[-1][1] = [{"text": text}]
                with STATS.lock:
                    STATS.tokens += 1
                    record["tokens"] += 1
                yield _chatbot
                if p.token_delay:
                    await asyncio.sleep(p.token_delay)
            _chatbot[-1][1] = [{"text": text + p.summary}]
            _task_history.append({"role": "assistant", "content": [{"text": text}]})
            yield _chatbot
            status = "completed"
        except gr.Error:
            status = "failed"
            raise
        finally:
            with STATS.lock:
                STATS.active -= 1
                record["status"] = status
                setattr(STATS, status, getattr(STATS, status) + 1)
                if STATS.active == 0:
                    STATS.idle.set()

    with gr.Blocks(title="Qwen2.5-1M-Demo (local replica)") as demo:
        gr.Markdown("## Qwen2.5-1M-Demo: local replica for offline tests")
        chatbot = mgr.Chatbot(label="Qwen2.5-1M", height=600)
        query = mgr.MultimodalInput()
        task_history = gr.State([])
        number = gr.Number(0, visible=False)
        clear = gr.Button("Clear History")
        clear.click(reset, [], [chatbot, task_history], queue=False)
        query.submit(
            add_text, [query, chatbot, task_history], [query, chatbot, task_history]
        ).then(predict, [chatbot, task_history, number], [chatbot])
    limit = None if settings.concurrency_limit == 0 else settings.concurrency_limit
    demo.queue(max_size=settings.max_queue_size or None, default_concurrency_limit=limit)
    return demo


def add_stats_routes(app: Any) -> None:
    async def stats() -> dict[str, Any]:
        return STATS.snapshot()

    async def wait_idle(timeout: float = 10.0) -> dict[str, Any]:
        try:
            await asyncio.wait_for(STATS.idle.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        return STATS.snapshot()

    app.add_api_route("/replica/stats", stats, methods=["GET"])
    app.add_api_route("/replica/wait-idle", wait_idle, methods=["GET"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token-delay", type=float, default=0.02)
    ap.add_argument("--prefill-base", type=float, default=0.05)
    ap.add_argument("--prefill-per-mb", type=float, default=0.5)
    ap.add_argument("--fault", choices=model.FAULTS, default=None)
    ap.add_argument("--fault-arg", type=float, default=None)
    ap.add_argument("--max-queue-size", type=int, default=0)
    ap.add_argument("--concurrency-limit", type=int, default=0, help="0 = unlimited")
    ap.add_argument("--ready-file", default=None, help="write the URL here once serving")
    ap.add_argument("--replay", default=None, help="answer with this recorded transcript's turns")
    ap.add_argument("--replay-speed", type=float, default=1.0, help="2.0 replays twice as fast")
    args = ap.parse_args(argv)
    if args.replay:  # a bad transcript stops the start, instead of failing the first request
        try:
            replay.load(args.replay).schedule(0, args.replay_speed)
        except replay.TranscriptError as e:
            ap.error(str(e))
    return args


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    demo = build(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # A free port picked here can be taken by another process before Gradio binds it (tests
    # start replicas in parallel): pick again a few times rather than fail.
    for attempt in range(5):
        port = settings.port or _free_port(settings.host)
        try:
            demo.launch(
                server_name=settings.host,
                server_port=port,
                show_api=False,
                prevent_thread_lock=True,
                quiet=True,
                share=False,
                max_file_size=None,
                # Skips Gradio's HEAD probe of its own URL (3 s timeout): on a loaded machine it
                # fails and aborts the launch of a server that is in fact up.
                _frontend=False,
            )
            break
        except OSError:
            if settings.port or attempt == 4:
                raise
    add_stats_routes(demo.server_app)
    url = f"http://{settings.host}:{port}"
    if settings.ready_file:
        tmp = settings.ready_file + ".tmp"
        Path(tmp).write_text(json.dumps({"url": url, "pid": os.getpid()}))
        os.replace(tmp, settings.ready_file)
    print(url, flush=True)
    os.dup2(2, 1)  # the launcher reads only the URL line; later output goes to the log
    while not stop.wait(3600):
        pass
    demo.close()
    time.sleep(0)


if __name__ == "__main__":
    main()
