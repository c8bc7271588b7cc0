"""The replica Space: a Gradio 4.44 + modelscope_studio 0.5 app shaped like Qwen2.5-1M-Demo.

This file runs inside the replica's own environment (see `env.py`), never in the adapter's:
the Space's stack pins `gradio_client==1.3.0` while the adapter uses the current client.
It imports nothing from `qwen_space_adapter` except its siblings (`model.py`, `serving.py`,
`replay.py`) by path. The launcher checked its options before starting it.

Component and event order are what `docs/space-api.md` reconstructs, because fn indices and
payload shapes follow from them: fn 0 = clear, fn 1 = add_text (unqueued, as the wire evidence's
`/run/predict`), fn 2 = predict (chained, queued).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving  # first: its parent watchdog covers the slow imports below

serving.begin()

import gradio as gr  # noqa: E402
import model  # noqa: E402
import modelscope_studio as mgr  # noqa: E402
import replay  # noqa: E402

STATS = serving.STATS


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
        req = model.request_from_history(_task_history)
        p, record = model.planned(req, settings, number=_number)
        with STATS.generation(record) as outcome:
            if settings.replay:  # answer with a recorded transcript's turn instead of the model
                bot = None
                player = replay.load(settings.replay)
                try:
                    async for bot in player.stream(len(req.history), settings.replay_speed, gr.Error):
                        _chatbot[-1][1] = bot
                        yield _chatbot
                except replay.ReplayExhausted as e:
                    outcome("failed")
                    raise gr.Error(str(e)) from None
                _task_history.append({"role": "assistant", "content": [{"text": replay.text_of(bot)}]})
                outcome("completed")
                return
            for step in model.steps(p, p.fault or settings.fault, p.fault_arg or settings.fault_arg):
                if step.delay:
                    await asyncio.sleep(step.delay)
                _chatbot[-1][1] = [{"text": serving.shown(step, record, outcome, gr.Error)}]
                yield _chatbot
            _task_history.append({"role": "assistant", "content": [{"text": model.answer_text(p)}]})
            outcome("completed")

    with gr.Blocks(title="Qwen2.5-1M-Demo (local replica)") as demo:
        gr.Markdown("## Qwen2.5-1M-Demo: local replica for offline tests")
        chatbot = mgr.Chatbot(label="Qwen2.5-1M", height=600)
        query = mgr.MultimodalInput()
        task_history = gr.State([])
        number = gr.Number(0, visible=False)
        clear = gr.Button("Clear History")
        clear.click(reset, [], [chatbot, task_history], queue=False)
        # add_text is unqueued, as the wire evidence shows (the page POSTs it to /run/predict).
        query.submit(add_text, [query, chatbot, task_history], [query, chatbot, task_history], queue=False).then(
            predict, [chatbot, task_history, number], [chatbot]
        )
    limit = None if settings.concurrency_limit == 0 else settings.concurrency_limit
    demo.queue(max_size=settings.max_queue_size or None, default_concurrency_limit=limit)
    return demo


def main(argv: list[str] | None = None) -> None:
    settings = serving.parser(__doc__).parse_args(argv)
    serving.hook_launch(gr, settings)
    build(settings).launch(max_file_size=None, show_api=False)


if __name__ == "__main__":
    main()
