"""The synchronous twins: the same items from a plain loop, also inside a running event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from qwen_space_adapter import InvalidRequestError, JsonConversation, Qwen_Qwen_2_5M, Reasoning

MSG = [{"role": "user", "content": "sync hello"}]
EXPECTED = 'You said: "sync hello". This is the first turn of our conversation.'


def test_create_completion_outside_a_loop(qwen_replica):
    items = list(Qwen_Qwen_2_5M.create_completion("qwen-2.5-1m", MSG, space=qwen_replica.url,
                                                  return_conversation=True))
    assert isinstance(items[0], JsonConversation)
    assert any(isinstance(i, Reasoning) for i in items)
    assert "".join(i for i in items if isinstance(i, str)) == EXPECTED


def test_ask_continues_a_conversation(qwen_replica):
    first = Qwen_Qwen_2_5M.ask("I am Ada.", space=qwen_replica.url)
    second = Qwen_Qwen_2_5M.ask("Who am I?", conversation=first.conversation, space=qwen_replica.url)
    assert str(first) == first.text == 'You said: "I am Ada.". This is the first turn of our conversation.'
    assert 'your first message was: "I am Ada."' in second.text


def test_sync_api_inside_a_running_loop(qwen_replica):
    async def notebook_cell() -> str:
        # a Jupyter cell runs inside the kernel's loop: the sync API must not touch that loop
        loop = asyncio.get_running_loop()
        answer = Qwen_Qwen_2_5M.ask("sync hello", space=qwen_replica.url)
        assert asyncio.get_running_loop() is loop
        return answer.text

    assert asyncio.run(notebook_cell()) == EXPECTED


def test_breaking_out_of_the_sync_loop_cancels_and_cleans_up(qwen_replica):
    threads = threading.active_count()
    before = qwen_replica.stats()["cancelled"]
    for item in Qwen_Qwen_2_5M.create_completion(
        "qwen-2.5-1m", [{"role": "user", "content": "go [[tokens=3000]] [[delay=0.01]]"}], space=qwen_replica.url
    ):
        if isinstance(item, str):
            break
    stats = qwen_replica.wait_idle(15)
    assert stats["active"] == 0 and stats["cancelled"] == before + 1
    assert threading.active_count() <= threads + 8  # gradio_client's threads end by themselves


def test_bad_input_raises_at_the_call_in_the_callers_thread():
    with pytest.raises(InvalidRequestError):
        Qwen_Qwen_2_5M.create_completion("qwen-2.5-1m", [])
    with pytest.raises(InvalidRequestError):
        Qwen_Qwen_2_5M.ask("", space="http://127.0.0.1:9")


@pytest.mark.anyio
async def test_ask_async(qwen_replica):
    answer = await Qwen_Qwen_2_5M.ask_async("sync hello", space=qwen_replica.url)
    assert answer.text == EXPECTED and answer.conversation is not None
