"""Gradio 6's `gr.ChatInterface` with a plain textbox and a sync generator, served in the gradio6
flavor's environment (`Replica(ui="gradio6", app=...)`).

The gradio6 replica flavor covers the multimodal, async case; this one is the other common Gradio 6
chat: a `gr.Textbox` input (the user's value is a string, files are refused), a sync generator run
in Gradio's worker threads, and an answer streamed as one growing text part (each update
`rstrip()`-ed, as many UIs do).
Its answer says what it received: the message and how many messages of history came with it.
"""

import time

import gradio as gr
from _serve import arguments, serve


def respond(message, history):  # type: ignore[no-untyped-def]
    answer = f'Textbox heard: "{message}" with {len(history)} message(s) of history.'
    out = ""
    for word in answer.split(" "):
        out += word + " "
        time.sleep(0.005)
        yield out.rstrip()


def main() -> None:
    args = arguments()
    serve(gr.ChatInterface(respond), args)


if __name__ == "__main__":
    main()
