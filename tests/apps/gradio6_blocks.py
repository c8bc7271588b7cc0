"""A Gradio 6 Blocks chat: `gr.Chatbot` + `gr.MultimodalTextbox`, the pattern of Gradio 6's own docs.

Served by the replica launcher in the gradio6 flavor's environment (`Replica(ui="gradio6",
app=...)`). Not the Qwen Space's UI, but a member of the family the adapter must drive on current
Gradio: the history lives only in the chatbot value the client sends (no State), files are their own
user messages (`{"path": ...}`, which Gradio 6 turns into typed file parts), and the bot streams its
answer into an assistant message whose `content` Gradio 6 sends as a list of typed parts.

The answer proves what the app received: the last user text, how many user messages came before it
(so a lost or doubled history shows), and the first line of every file of this turn (so a lost or
unreadable attachment shows). `--mode parts` makes the bot answer in two assistant messages, the
second of them with a file part between two text parts, to prove file parts are not answer text.
"""

import tempfile
import time
from pathlib import Path

import gradio as gr
from _serve import arguments, serve

# A file the bot shows in its answer; in the temp folder, which Gradio 6 may serve.
CHART = Path(tempfile.gettempdir()) / "gradio6-blocks-chart.txt"


def _text_and_files(content):  # type: ignore[no-untyped-def]
    """Text and file paths of one history message's content, whatever form Gradio 6 hands it in."""
    parts = content if isinstance(content, list | tuple) else [content]
    text, files = "", []
    for part in parts:
        if isinstance(part, str):
            text += part
        elif isinstance(part, dict) and part.get("type") == "text":
            text += part.get("text") or ""
        elif isinstance(part, dict):
            inner = part.get("file", part)
            files.append(inner.get("path") if isinstance(inner, dict) else getattr(inner, "path", inner))
        else:
            path = getattr(getattr(part, "file", None), "path", None) or getattr(part, "path", None)
            if path:
                files.append(path)
    return text, files


def main() -> None:
    args = arguments("plain", "parts")
    CHART.write_text("not answer text\n")

    def add_message(history, message):  # type: ignore[no-untyped-def]
        history = list(history or [])
        for path in message.get("files") or []:
            history.append({"role": "user", "content": {"path": path}})
        if message.get("text"):
            history.append({"role": "user", "content": message["text"]})
        return history, gr.MultimodalTextbox(value=None, interactive=False)

    def bot(history):  # type: ignore[no-untyped-def]
        last_bot = max((i for i, m in enumerate(history) if m["role"] == "assistant"), default=-1)
        this_turn = [m for m in history[last_bot + 1 :] if m["role"] == "user"]
        earlier = sum(1 for m in history[: last_bot + 1] if m["role"] == "user")
        text, files = "", []
        for m in this_turn:
            t, f = _text_and_files(m["content"])
            text += t
            files += f
        answer = f'Blocks heard: "{text}" after {earlier} earlier user message(s).'
        for path in files:
            first = Path(path).read_text(errors="replace").splitlines()[0] if Path(path).exists() else "?"
            answer += f" {Path(path).name} begins: {first}"
        history.append({"role": "assistant", "content": ""})
        for word in answer.split(" "):
            history[-1]["content"] += word + " "
            time.sleep(0.005)
            yield history
        if args.mode == "parts":
            history.append(
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Second part."},
                        {"type": "file", "file": {"path": str(CHART)}},
                        {"type": "text", "text": "After the file."},
                    ],
                }
            )
            yield history

    with gr.Blocks() as demo:
        chatbot = gr.Chatbot(label="Gradio 6 Blocks chat")
        chat_input = gr.MultimodalTextbox(interactive=True, placeholder="Ask, or attach a file")
        chat_msg = chat_input.submit(add_message, [chatbot, chat_input], [chatbot, chat_input])
        bot_msg = chat_msg.then(bot, chatbot, chatbot)
        bot_msg.then(lambda: gr.MultimodalTextbox(interactive=True), None, [chat_input])
    serve(demo, args)


if __name__ == "__main__":
    main()
