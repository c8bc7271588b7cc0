"""The replica on current Gradio: a plain multimodal `gr.ChatInterface` (Gradio 6) over the model.

If the Qwen team moves the Space onto current Gradio, the likeliest page is Gradio's own
`ChatInterface`, not a hand-wired Blocks: this flavor is that page, unmodified, so the adapter is
proven against what Gradio 6 itself serves (messages whose `content` is a list of typed parts, a
`MultimodalTextbox`, ChatInterface's own chain of steps).

Unlike the other flavors, there is no server-side history: ChatInterface hands `respond` the
chatbot value the client sent, so **the model reads exactly what the client sends back**, and the
turn it names ("This is turn N") is counted from that history. Attachments are read from the files
of that history too: this message's files are `message["files"]`, earlier ones are the file parts
of earlier user messages (paths on this server, as Gradio 6 moved them into its cache).

Runs inside the flavor's own environment (see `env.py`); imports its siblings by path and shares
`serving.py` with the other apps (options, stats, `/replica/*` routes, launch, shutdown).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving  # first: its parent watchdog covers the slow imports below

serving.begin()

import gradio as gr  # noqa: E402
import model  # noqa: E402
import replay  # noqa: E402

STATS = serving.STATS


def _part_path(part: Any) -> str | None:
    """The server path of a file part (`{"type": "file", "file": FileData}`, or a bare FileData)."""
    if not isinstance(part, dict):
        return getattr(getattr(part, "file", None), "path", None) or getattr(part, "path", None)
    if part.get("type") == "file" or "file" in part:
        inner = part.get("file")
        return inner.get("path") if isinstance(inner, dict) else getattr(inner, "path", inner)
    return part.get("path")


def _content(content: Any) -> list[dict[str, str]]:
    """A chatbot message's content as the model's history items (`{"text"}` / `{"file": path}`).

    Assistant text is cut at the summary block: it is metadata the page shows, not what the
    model said (the other flavors keep their answers without it too)."""
    items: list[dict[str, str]] = []
    parts = content if isinstance(content, list | tuple) else [content]
    for part in parts:
        if isinstance(part, str):
            items.append({"text": part})
        elif isinstance(part, dict) and part.get("type", "text") == "text" and "text" in part:
            items.append({"text": str(part["text"])})
        elif (path := _part_path(part)) is not None:
            items.append({"file": str(path)})
    return items


def history_of(message: dict[str, Any], history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The model's history: the chatbot messages the client sent, then this turn's message."""
    out: list[dict[str, Any]] = []
    for m in history:
        items = _content(m.get("content"))
        if m.get("role") == "assistant":
            items = [{"text": i["text"].split(model.SUMMARY_MARKER)[0]} for i in items if "text" in i]
        if out and out[-1]["role"] == m.get("role") == "user":  # a file sent as its own message
            out[-1]["content"] += items
        else:
            out.append({"role": m.get("role"), "content": items})
    files = [{"file": _part_path(f) or str(f)} for f in (message.get("files") or [])]
    out.append({"role": "user", "content": [{"text": message.get("text") or ""}, *files]})
    return out


def build(settings: Any) -> gr.ChatInterface:
    async def respond(message: dict[str, Any], history: list[dict[str, Any]]) -> AsyncIterator[str]:
        req = model.request_from_history(history_of(message, history))
        p, record = model.planned(req, settings)
        with STATS.generation(record) as outcome:
            if settings.replay:  # answer with a recorded transcript's turn instead of the model
                player = replay.load(settings.replay)
                try:
                    async for bot in player.stream(len(req.history), settings.replay_speed, gr.Error):
                        yield replay.text_of(bot)
                except replay.ReplayExhausted as e:
                    outcome("failed")
                    raise gr.Error(str(e)) from None
                outcome("completed")
                return
            for step in model.steps(p, p.fault or settings.fault, p.fault_arg or settings.fault_arg):
                if step.delay:
                    await asyncio.sleep(step.delay)  # a cancel interrupts it, as in the hand app
                yield serving.shown(step, record, outcome, gr.Error) or ""
            outcome("completed")

    limit = None if settings.concurrency_limit == 0 else settings.concurrency_limit
    demo = gr.ChatInterface(
        respond,
        multimodal=True,
        title="Qwen2.5-1M-Demo (local replica, Gradio 6)",
        concurrency_limit=limit,
    )
    demo.queue(max_size=settings.max_queue_size or None, default_concurrency_limit=limit)
    return demo


def main(argv: list[str] | None = None) -> None:
    settings = serving.parser(__doc__).parse_args(argv)
    serving.hook_launch(gr, settings)
    build(settings).launch(max_file_size=None)


if __name__ == "__main__":
    main()
