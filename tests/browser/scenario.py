"""The scenario both clients play, turn by turn, and the adapter's side of it.

A person's session on the page: a first question, a question with a document attached through the
upload button, a follow-up (an @-mention on a page with mentions), an answer that fails mid-stream
(the replica's magic prompt), and a question after that failure. Each turn is one `mark` on the
client's recording proxy, so the two recordings are cut at the same places.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOCUMENT_TEXT = "Minutes of the meeting.\nThe pass key is 4217.\nNothing else was decided.\n"
DOCUMENT_NAME = "minutes.txt"
FAULT_TEXT = "Tell me about the weather [[fault:error-mid-stream]]"
HEARTBEAT = re.compile(r"/heartbeat/")  # open as long as a tab is: never idle


@dataclass(frozen=True)
class Turn:
    label: str
    text: str
    attach: bool = False  # attach the document through the page's upload button / `files=`
    fails: bool = False  # the answer fails mid-stream (a replica fault)


def turns(mention: bool) -> list[Turn]:
    """The scenario; on a page with @-mentions the third turn names the second agent."""
    follow_up = "@Helper What is my name?" if mention else "What is my name?"
    return [
        Turn("1 first question", "Hello, my name is Ada."),
        Turn("2 attached document", "What is the pass key in the minutes?", attach=True),
        Turn("3 mention" if mention else "3 follow-up", follow_up),
        Turn("4 failed answer", FAULT_TEXT, fails=True),
        Turn("5 after the failure", "Are you still there?"),
    ]


def document(folder: Path) -> Path:
    """The attachment, written once per test folder (the same bytes for both clients)."""
    path = folder / DOCUMENT_NAME
    if not path.exists():
        path.write_text(DOCUMENT_TEXT)
    return path


@dataclass
class Outcome:
    """What one client saw of a turn: its answer text, or the error it was given."""

    text: str = ""
    error: str | None = None
    unfinished: str | None = None  # the client could not play this turn (why); later turns were not played


def run_adapter(proxy: Any, scenario: list[Turn], folder: Path) -> list[Outcome]:
    """Play the scenario through the adapter's public API against `proxy` (one conversation).

    Runs in a thread of its own with its own event loop: Playwright's sync API holds the test's."""
    result: list[Outcome] = []
    failure: list[BaseException] = []

    def main() -> None:
        import anyio

        try:
            anyio.run(_adapter, proxy, scenario, folder, result)
        except BaseException as e:  # reported in the test's thread
            failure.append(e)

    thread = threading.Thread(target=main, name="adapter-scenario")
    thread.start()
    thread.join(300)
    if failure:
        raise failure[0]
    return result


async def _adapter(proxy: Any, scenario: list[Turn], folder: Path, result: list[Outcome]) -> None:
    from qwen_space_adapter import Qwen_Qwen_2_5M
    from qwen_space_adapter.conversation import JsonConversation

    conversation = None
    for turn in scenario:
        proxy.mark(turn.label)
        kwargs: dict[str, Any] = {"space": proxy.url, "return_conversation": True}
        if conversation is not None:
            kwargs["conversation"] = conversation
        if turn.attach:
            kwargs["files"] = [str(document(folder))]
        outcome = Outcome()
        try:
            stream = Qwen_Qwen_2_5M.create_async_generator(
                "qwen-2.5-1m-demo", [{"role": "user", "content": turn.text}], **kwargs
            )
            async for item in stream:
                if isinstance(item, JsonConversation):
                    conversation = item
                elif isinstance(item, str):
                    outcome.text += item
        except Exception as e:  # the failing turn: the adapter raises, the page shows a toast
            outcome.error = f"{type(e).__name__}: {e}"
        result.append(outcome)
        proxy.wait_idle(ignore=HEARTBEAT)
