"""Spaces of other shapes (Gradio 4.44), served by the replica launcher (`Replica(app=...)`).

- `--mode no-chat` (default): a Space that is not a chat UI at all (a textbox that echoes into a
  textbox), which the adapter must refuse with a clear APIChangedError;
- `--mode chat`: Gradio's own chat pattern (a Textbox submit writing a messages-style Chatbot),
  which the adapter drives like any other page.
"""

import gradio as gr
from _serve import arguments, serve


def main() -> None:
    args = arguments("no-chat", "chat")

    def respond(message, history):
        history = (history or []) + [{"role": "user", "content": message}, {"role": "assistant", "content": "changed"}]
        return "", history

    with gr.Blocks() as demo:
        box = gr.Textbox()
        if args.mode == "chat":
            chatbot = gr.Chatbot(type="messages")
            box.submit(respond, [box, chatbot], [box, chatbot])
        else:
            out = gr.Textbox()
            box.submit(lambda text: text, [box], [out])
    serve(demo, args)


if __name__ == "__main__":
    main()
