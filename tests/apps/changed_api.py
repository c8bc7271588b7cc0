"""A Space whose API changed: a plain Textbox and a messages-style Chatbot (Gradio 4.44).

Served by the replica launcher (`Replica(app=...)`) to prove the adapter refuses it with a
clear APIChangedError instead of sending requests it cannot interpret.
"""

import argparse
import os
import signal
import socket
import threading

import gradio as gr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args, _ = ap.parse_known_args()
    port = args.port
    if not port:
        with socket.socket() as s:
            s.bind((args.host, 0))
            port = s.getsockname()[1]

    def respond(message, history):
        history = (history or []) + [{"role": "user", "content": message},
                                     {"role": "assistant", "content": "changed"}]
        return "", history

    with gr.Blocks() as demo:
        chatbot = gr.Chatbot(type="messages")
        box = gr.Textbox()
        box.submit(respond, [box, chatbot], [box, chatbot])
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
