"""A chat page whose last update takes the answer back: it clears it, or shortens it.

Served by the replica launcher (`Replica(app=...)`, Gradio 4.44). The streamed text must not
outlive the Space's final answer: the caller gets a `TextRewritten` to the final text.
"""

import time

import gradio as gr
from _serve import arguments, serve


def main() -> None:
    args = arguments("clear", "shorten")

    def answer(message, history):
        history = [*history, [message, ""]]
        for word in "This answer will be taken back soon".split(" "):
            history[-1][1] = (history[-1][1] + " " + word).strip()
            time.sleep(0.005)
            yield "", history
        history[-1][1] = "" if args.mode == "clear" else "This answer"
        yield "", history

    with gr.Blocks() as demo:
        chatbot = gr.Chatbot()
        box = gr.Textbox()
        box.submit(answer, [box, chatbot], [box, chatbot])
    serve(demo, args)


if __name__ == "__main__":
    main()
