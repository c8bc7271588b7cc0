"""The replica on the Qwen team's real UI: Qwen-Agent's `WebUI`, from PyPI, unmodified.

The Space most likely runs `qwen_agent.gui.web_ui.WebUI` (docs/space-api.md). This app imports it
from the installed release (0.0.11 on Gradio 4 ... 0.0.34 on Gradio 5) and calls
`WebUI(agents, chatbot_config=...).run(...)` as a Space would. Only the agents behind it are the
replica's: `ReplicaAgent._run` answers with the same deterministic model as the hand-made app
(`model.py`), from the server-side history the UI hands it.

Qwen-Agent streams by yielding the whole response list so far, each time; the UI turns every
message of it into a chat bubble. With `[[tool]]` in the prompt the agent answers in two parts (a
function call with its result, then the answer), which the UI shows as two bot bubbles, the first
with a "Start calling tool" `<details>` block.

Runs inside the flavor's own environment; imports its siblings by path.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving  # first: its parent watchdog covers the slow imports below

serving.begin()

import gradio as gr  # noqa: E402
import model  # noqa: E402
import replay  # noqa: E402
from gradio.context import LocalContext  # noqa: E402
from qwen_agent import Agent  # noqa: E402
from qwen_agent.gui.web_ui import WebUI  # noqa: E402
from qwen_agent.llm.schema import ASSISTANT, FUNCTION, FunctionCall, Message  # noqa: E402

AGENT_NAMES = ["Qwen", "Helper", "Critic", "Planner", "Writer", "Reader", "Coder", "Tester"]


class Cancelled(Exception):
    """The caller cancelled this answer while the model was busy (thinking or stalled)."""


def _probe() -> Callable[[], bool]:
    """Whether Gradio cancelled the event this thread now works for, askable from any thread:
    its `/cancel` (and a client gone away) moves the event to `app.iterators_to_reset`, and
    nothing else tells the generator."""
    event_id, blocks = LocalContext.event_id.get(), LocalContext.blocks.get()
    resets = getattr(getattr(blocks, "server_app", None), "iterators_to_reset", ())
    return lambda: bool(event_id) and event_id in resets


def _cancelled() -> bool:
    return _probe()()


def _sleep(seconds: float) -> None:
    """A pause that a cancel interrupts, as an awaited sleep is in the hand-made app: a long
    prefill or a stall must not hold the worker (and the stats) after the caller left."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if _cancelled():
            raise Cancelled
        time.sleep(min(left, 0.05))


STATS = serving.STATS
TOOL = "read_history"


class ReplicaAgent(Agent):
    """A Qwen-Agent agent whose "LLM" is the replica's deterministic model."""

    def __init__(self, name: str, settings: Any) -> None:
        super().__init__(
            llm=None, system_message=None, name=name, description=f"Replica agent {name}: quotes what it was sent."
        )
        self.settings = settings

    def _run(self, messages: list[Message], lang: str = "en", **kwargs: Any) -> Iterator[list[Message]]:
        """Answer the last user message of the server-side history `messages`.

        Each yield is marked as parked in the stats until Gradio pulls the next one: that is how
        a cancel is seen, since Gradio stops pulling a cancelled sync generator without closing it.
        """
        req = model.request_from_history(messages)
        p, record = model.planned(req, self.settings, agent=self.name)
        with STATS.generation(record, _probe()) as outcome:
            try:
                for responses in self._respond(req, p, record, outcome):
                    STATS.suspended(record, time.monotonic())
                    yield responses
                    STATS.suspended(record, None)
            except Cancelled:
                return  # nobody listens any more; the outcome stays "cancelled"

    def _respond(
        self, req: model.Request, p: model.Plan, record: dict[str, Any], outcome: Any
    ) -> Iterator[list[Message]]:
        """The cumulative response lists of one answer (each yield is the whole answer so far)."""
        s = self.settings
        done: list[Message] = []
        if p.tool:  # a first part: the call of a tool and its result, from a tool runner
            call = Message(
                role=ASSISTANT,
                content="",
                name="tools",
                function_call=FunctionCall(name=TOOL, arguments=json.dumps({"turns": len(req.history)})),
            )
            yield [call]
            result = Message(role=FUNCTION, name=TOOL, content=f"{len(req.history)} earlier turn(s)")
            done = [call, result]
            yield list(done)
        if s.replay:
            yield from self._replay(s, req, done, outcome)
            return
        for step in model.steps(p, p.fault or s.fault, p.fault_arg or s.fault_arg):
            if step.delay:
                _sleep(step.delay)
            text = serving.shown(step, record, outcome, gr.Error)
            yield [*done, Message(role=ASSISTANT, content=text, name=self.name)]
        outcome("completed")

    def _replay(self, s: Any, req: model.Request, done: list[Message], outcome: Any) -> Iterator[list[Message]]:
        """Answer with a recorded transcript's turn: its bot texts, with the recorded spacing."""
        player = replay.load(s.replay)
        try:
            for step in player.schedule(len(req.history), s.replay_speed):
                _sleep(step.delay)
                if step.error is not None:
                    outcome("failed")
                    raise gr.Error(step.error)
                yield [*done, Message(role=ASSISTANT, content=replay.text_of(step.bot), name=self.name)]
        except replay.ReplayExhausted as e:
            outcome("failed")
            raise gr.Error(str(e)) from None
        outcome("completed")


def main(argv: list[str] | None = None) -> None:
    ap = serving.parser(__doc__)
    ap.add_argument("--agents", type=int, default=1)
    ap.add_argument("--mention", action="store_true")
    settings = ap.parse_args(argv)
    serving.hook_launch(gr, settings)
    names = [AGENT_NAMES[i] if i < len(AGENT_NAMES) else f"Agent{i + 1}" for i in range(settings.agents)]
    agents = [ReplicaAgent(name, settings) for name in names]
    ui = WebUI(
        agents if len(agents) > 1 else agents[0],
        chatbot_config={"input.placeholder": "Ask the replica", "verbose": False},
    )
    ui.run(
        server_name=settings.host,
        server_port=settings.port or None,
        concurrency_limit=settings.concurrency_limit or None,
        enable_mention=settings.mention,
    )


if __name__ == "__main__":
    main()
