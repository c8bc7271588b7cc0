"""Spaces of other shapes (Gradio 4.44), served by the replica launcher (`Replica(app=...)`).

- `--mode no-chat` (default): a Space that is not a chat UI at all (a textbox that echoes into a
  textbox), which the adapter must refuse with a clear APIChangedError;
- `--mode chat`: Gradio's own chat pattern (a Textbox submit writing a messages-style Chatbot),
  which the adapter drives like any other page.
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
    ap.add_argument("--mode", choices=("no-chat", "chat"), default="no-chat")
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
        box = gr.Textbox()
        if args.mode == "chat":
            chatbot = gr.Chatbot(type="messages")
            box.submit(respond, [box, chatbot], [box, chatbot])
        else:
            out = gr.Textbox()
            box.submit(lambda text: text, [box], [out])
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
