"""Gradio's own `gr.ChatInterface` (Gradio 4.44), served by the replica launcher (`Replica(app=...)`).

Not the Qwen Space's UI, but a member of the family the adapter drives: a textbox (or multimodal
textbox) whose submit runs a chain of steps, one of which streams into a `gr.Chatbot` in the tuples
or the messages format, with the history in the chatbot itself.
"""

import time

import gradio as gr
from _serve import arguments, serve


def respond(message, history):
    text = message["text"] if isinstance(message, dict) else message
    answer = f'You said: "{text}". This chat has {len(history)} earlier message(s).'
    out = ""
    for word in answer.split(" "):
        out += word + " "
        time.sleep(0.005)
        yield out


def main() -> None:
    args = arguments("tuples", "messages", "multimodal")
    demo = gr.ChatInterface(
        respond,
        type="tuples" if args.mode == "tuples" else "messages",
        multimodal=args.mode == "multimodal",
    )
    serve(demo, args)


if __name__ == "__main__":
    main()
