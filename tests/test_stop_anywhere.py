"""Stop an answer at any moment, ask again at once: the next turn is answered, every time.

A turn is over only when everything it started is over (`ending.py`). The moments that broke it
were the first fraction of a second: during the first step, in the Space's queue, while the
model thinks (a job cancelled while queued still ran, and its second completion broke the next
turn's stream). So each round stops a turn at a seeded random moment between 0 and 1 s, then
continues the conversation at once and checks the answer, on the hand-made replica and on the
real UIs, under asyncio and trio. `QWEN_SPACE_STOP_ROUNDS` sets the rounds per case (the suite
runs a few; the issue's verification ran hundreds).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import anyio
import pytest
from threadcount import settle_threads, thread_count

from qwen_space_adapter import JsonConversation, Qwen_Qwen_2_5M, StreamInterruptedError, ending, protocol, state

pytestmark = pytest.mark.anyio
ROUNDS = int(os.environ.get("QWEN_SPACE_STOP_ROUNDS", "10"))
FLAVORS = {"hand": {}, "qwen-agent": {"ui": "qwen-agent"}, "gradio6": {"ui": "gradio6"}}
# Gradio 4 and 5 key diff streams by a generator's id() and never end those of cancelled or
# unqueued generators: a step that draws a stale id is answered with a diff against one. Met on
# the real stack now and then (Qwen-Agent's add_text after a stop); certain with this app.
STALE_STREAM = protocol.STALE_STREAM
STALE_APP = Path(__file__).parent / "apps" / "stale_streams.py"  # every add_text draws a stale id


async def _turn(url: str, msgs: list[dict[str, str]], conv: Any, stop_at: float | None) -> tuple[str, Any]:
    text = ""
    with anyio.move_on_after(stop_at if stop_at is not None else float("inf")):
        async for item in Qwen_Qwen_2_5M.create_async_generator(
            "",
            list(msgs),
            space=url,
            conversation=conv,
            return_conversation=True,
            timeout=60,
        ):
            if isinstance(item, JsonConversation):
                conv = item
            elif isinstance(item, str):
                text += item
    return text, conv


async def _checked(replica: Any, what: str, turn: Any) -> tuple[str, Any]:
    """A turn's outcome; a failure fails the test with the Space's log, which says why."""
    try:
        return await turn
    except Exception as exc:
        raise AssertionError(f"{what}: {exc!r}\nthe Space's log:\n" + replica.log_tail(80)) from exc


@pytest.mark.parametrize("flavor", sorted(FLAVORS))
async def test_stop_at_a_random_moment_then_ask_again_at_once(qwen_shared_replica, flavor, anyio_backend):
    replica = qwen_shared_replica(**FLAVORS[flavor])
    rnd = random.Random(f"{flavor}-{anyio_backend}")
    baseline = settle_threads(thread_count())
    msgs: list[dict[str, str]] = []
    conv = None
    for i in range(ROUNDS):
        stop_at = rnd.uniform(0.0, 1.0)
        msgs.append({"role": "user", "content": f"stopped {i} [[tokens=60]]"})
        what = f"round {i}, the turn to stop at {stop_at:.3f} s failed first"
        _, conv = await _checked(replica, what, _turn(replica.url, msgs, conv, stop_at))
        msgs += [{"role": "assistant", "content": "(stopped)"}, {"role": "user", "content": f"again {i}"}]
        what = f"round {i}, stopped at {stop_at:.3f} s"
        text, conv = await _checked(replica, what, _turn(replica.url, msgs, conv, None))
        assert text.startswith(f'You said: "again {i}".'), f"{what}: {text!r}"
        msgs.append({"role": "assistant", "content": text})
    assert await anyio.to_thread.run_sync(ending.wait_all, 15.0)
    assert replica.wait_idle(15)["active"] == 0, "a stopped generation still runs on the Space"
    assert settle_threads(baseline) <= baseline


async def test_a_step_answered_with_a_diff_against_its_previous_result_is_read_right(qwen_shared_replica):
    """Gradio 4 answers an unqueued generator step that draws a stale id() with a diff against
    that stream; the page's browser takes the diff as the value. Here every add_text draws the
    previous one's id: each turn after the first, a stopped one included, is answered with the
    right history, because the adapter keeps each such step's result to read the next against."""
    replica = qwen_shared_replica(app=str(STALE_APP))
    msgs: list[dict[str, str]] = []
    conv = None
    for i in range(3):
        msgs.append({"role": "user", "content": f"turn {i}"})
        text, conv = await _turn(replica.url, msgs, conv, None)
        assert text.startswith(f'You said: "turn {i}".'), (i, text)
        msgs.append({"role": "assistant", "content": text})
    assert [pair[0]["text"] for pair in conv.chatbot] == ["turn 0", "turn 1", "turn 2"]
    msgs.append({"role": "user", "content": "stopped [[tokens=400]]"})
    async for item in Qwen_Qwen_2_5M.create_async_generator("", list(msgs), space=replica.url, conversation=conv):
        if isinstance(item, str):
            break  # stopped at its first delta: the answer's stream is left unfinished too
    msgs += [{"role": "assistant", "content": "(stopped)"}, {"role": "user", "content": "again"}]
    text, conv = await _turn(replica.url, msgs, conv, None)
    assert text.startswith('You said: "again".'), text
    assert [pair[0]["text"] for pair in conv.chatbot][-2:] == ["stopped [[tokens=400]]", "again"]
    assert await anyio.to_thread.run_sync(ending.wait_all, 15.0)


async def test_a_diff_against_a_result_another_process_saw_is_read_against_the_pages_values(qwen_shared_replica):
    """A conversation continued by a process that did not run its last turn holds no kept
    result: the page's values (which that result led to) are the base, and the answer is right."""
    replica = qwen_shared_replica(app=str(STALE_APP))
    msgs = [{"role": "user", "content": "first"}]
    text, conv = await _turn(replica.url, msgs, None, None)
    msgs += [{"role": "assistant", "content": text}, {"role": "user", "content": "second"}]
    state.reset()  # as a new process: the first turn's result is not remembered
    text, conv = await _turn(replica.url, msgs, JsonConversation.from_dict(conv.get_dict()), None)
    assert text.startswith('You said: "second". This is turn 2'), text
    assert [pair[0]["text"] for pair in conv.chatbot] == ["first", "second"]


async def test_a_diff_no_base_fits_is_refused_by_name_before_the_answer_step(qwen_shared_replica):
    """Another process continues an older copy of the conversation: the Space's stale result is
    one neither this process nor the copy holds. The turn fails with the named error, and the
    diff is never kept as the chatbot (which breaks the next step on the Space)."""
    replica = qwen_shared_replica(app=str(STALE_APP))
    msgs = [{"role": "user", "content": "one"}]
    text, conv = await _turn(replica.url, msgs, None, None)
    older = conv.get_dict()
    msgs += [{"role": "assistant", "content": text}, {"role": "user", "content": "two"}]
    await _turn(replica.url, msgs, conv, None)
    state.reset()  # a new process, with the copy saved after the first turn
    before = replica.stats()["started"]
    msgs[-1] = {"role": "user", "content": "two, again"}
    with pytest.raises(StreamInterruptedError, match=STALE_STREAM):
        await _turn(replica.url, msgs, JsonConversation.from_dict(older), None)
    assert replica.stats()["started"] == before, "the answer step ran on a diff"
