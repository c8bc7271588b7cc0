"""A step joined while the Space's close of the stream is on the wire is followed to its end.

Gradio 4 and 5 end a session's stream (`close_stream`) right after the completed message of its
last pending event. The adapter joins the page's next step as soon as that message arrives, so on
a loaded machine the join can register with gradio_client before its reader thread has read the
close: gradio_client then counted the event as the ended reader's, and the step failed with
"the connection to the Space ended" while the Space ran it (met once in a suite run, on the
@-mention layout's answer step). Here that order is made certain: each server message reaches
gradio_client alone, and the first close waits until the next step has been joined.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from qwen_space_adapter import Qwen_Qwen_2_5M, _gc_internals
from qwen_space_adapter.deltas import SUMMARY_MARKER, answer_text
from qwen_space_adapter.provider import collect

pytestmark = pytest.mark.anyio
# Layouts whose submit runs queued steps one after another (Qwen-Agent's: [add_mention,]
# agent_run, flushed; Gradio 6's ChatInterface), on Gradio 4.44, 5.23 and 6.31.
LAYOUTS = {
    "qa11-2-mention": {"ui": "qwen-agent", "agents": 2, "mention": True},
    "qa11-1": {"ui": "qwen-agent"},
    "qa34-1": {"ui": "qwen-agent==0.0.34"},
    "gradio6": {"ui": "gradio6"},
}
HOLD_LIMIT = 30.0  # a safety net: the test fails, not hangs, if no step follows the close


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CloseAfterJoin:
    """Hands gradio_client's reader one server message at a time and holds the first
    `close_stream` until gradio_client has registered a step joined after the completed message
    before it: the order a starved reader thread produces."""

    def __init__(self, mocker: Any) -> None:
        self.joined = threading.Condition()
        self.joins = 0
        self.held = False
        self.released_by_join: bool | None = None
        send_data, iterate = _gc_internals.AdapterClient.send_data, _gc_internals._Messages.__iter__

        def counted_send_data(client: Any, *args: Any, **kwargs: Any) -> Any:
            result = send_data(client, *args, **kwargs)  # the event is registered when it returns
            with self.joined:
                self.joins += 1
                self.joined.notify_all()
            return result

        def one_at_a_time(stream: Any) -> Any:
            joins_at_completion = None
            for block in iterate(stream):
                for message in block.split(b"\n\n")[:-1]:
                    message += b"\n\n"
                    if b'"process_completed"' in message:
                        with self.joined:
                            joins_at_completion = self.joins
                    elif _gc_internals.closes_stream(message) and not self.held and joins_at_completion is not None:
                        self.held = True
                        self.released_by_join = self.wait_for_join_after(joins_at_completion)
                    yield message

        mocker.patch.object(_gc_internals.AdapterClient, "send_data", counted_send_data)
        mocker.patch.object(_gc_internals._Messages, "__iter__", one_at_a_time)

    def wait_for_join_after(self, joins: int) -> bool:
        with self.joined:
            return self.joined.wait_for(lambda: self.joins > joins, HOLD_LIMIT)


@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_a_step_joined_before_the_reader_read_the_close_is_answered(qwen_shared_replica, mocker, caplog, layout):
    caplog.set_level(logging.WARNING, logger="qwen_space_adapter")
    replica = qwen_shared_replica(**LAYOUTS[layout])
    race = CloseAfterJoin(mocker)
    content = "@Helper who am I?" if "mention" in layout else "who am I?"
    stream = Qwen_Qwen_2_5M.create_async_generator(
        "", [{"role": "user", "content": content}], space=replica.url, return_conversation=True, timeout=60
    )
    try:
        answer = collect([item async for item in stream])
    except Exception as exc:
        raise AssertionError(f"{exc!r}\nthe Space's log:\n{replica.log_tail(40)}") from exc
    assert race.released_by_join, "the close was not held until the next step joined: the race was not made"
    assert 'You said: "' in answer.text and "who am I?" in answer.text
    assert answer.conversation is not None
    assert (answer_text(answer.conversation.chatbot) or "").split(SUMMARY_MARKER)[0] == answer.text
    # a step after the answer (Qwen-Agent's `flushed`) that failed would only be logged
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
