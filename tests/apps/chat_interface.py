"""Gradio's own `gr.ChatInterface` (Gradio 4.44), served by the replica launcher (`Replica(app=...)`).

Not the Qwen Space's UI, but a member of the family the adapter drives: a textbox (or multimodal
textbox) whose submit runs a chain of steps, one of which streams into a `gr.Chatbot` in the tuples
or the messages format, with the history in the chatbot itself.
"""

import argparse
import os
import signal
import socket
import threading
import time

import gradio as gr


def respond(message, history):
    text = message["text"] if isinstance(message, dict) else message
    answer = f'You said: "{text}". This chat has {len(history)} earlier message(s).'
    out = ""
    for word in answer.split(" "):
        out += word + " "
        time.sleep(0.005)
        yield out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mode", choices=("tuples", "messages", "multimodal"), default="tuples")
    args, _ = ap.parse_known_args()
    port = args.port
    if not port:
        with socket.socket() as s:
            s.bind((args.host, 0))
            port = s.getsockname()[1]
    demo = gr.ChatInterface(
        respond,
        type="tuples" if args.mode == "tuples" else "messages",
        multimodal=args.mode == "multimodal",
    )
    demo.queue()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    demo.launch(server_name=args.host, server_port=port, prevent_thread_lock=True, quiet=True,
                _frontend=False)
    print(f"http://{args.host}:{port}", flush=True)
    os.dup2(2, 1)
    stop.wait()
    demo.close()


if __name__ == "__main__":
    main()
