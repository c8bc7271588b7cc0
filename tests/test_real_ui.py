"""The adapter against every Space UI it supports, each served by its real code.

The hand-made replica, Qwen-Agent's unmodified `WebUI` in its Gradio 4 release (0.0.11: one
agent, two agents, two agents with @-mentions) and its Gradio 5 release (0.0.34: one and two
agents), and Gradio 6's own `gr.ChatInterface` (the gradio6 flavor: messages whose content is a list
of typed parts, the history in the chatbot the client sends). Each test runs on each layout; the
replicas are shared by the session and started once.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from qwen_space_adapter import JsonConversation, Qwen_Qwen_2_5M, Reasoning, Summary, TextRewritten
from qwen_space_adapter.deltas import SUMMARY_MARKER, answer_text
from qwen_space_adapter.harness.checks import run_suite
from qwen_space_adapter.provider import collect

LAYOUTS = {
    "hand": {},
    "qa11-1": {"ui": "qwen-agent"},
    "qa11-2": {"ui": "qwen-agent", "agents": 2},
    "qa11-2-mention": {"ui": "qwen-agent", "agents": 2, "mention": True},
    "qa34-1": {"ui": "qwen-agent==0.0.34"},
    "qa34-2": {"ui": "qwen-agent==0.0.34", "agents": 2},
    "gradio6": {"ui": "gradio6"},
}
REAL_UI = [name for name in LAYOUTS if name.startswith("qa")]  # Qwen-Agent's UI: tool calls, agents
pytestmark = pytest.mark.anyio


REPLICAS: dict[str, Any] = {}  # url -> replica: a failing test shows the Space's log


@pytest.fixture(params=list(LAYOUTS))
def space(request: pytest.FixtureRequest, qwen_shared_replica: Any) -> str:
    replica = qwen_shared_replica(**LAYOUTS[request.param])
    REPLICAS[str(replica.url)] = replica
    return str(replica.url)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the trio runs of the same paths are in test_turns.py


async def ask(
    space: str, messages: list[dict[str, str]], conversation: JsonConversation | None = None, **kw: Any
) -> tuple[str, list[Any], JsonConversation]:
    stream = Qwen_Qwen_2_5M.create_async_generator(
        "", messages, space=space, return_conversation=True, conversation=conversation, **kw
    )
    answer = collect([item async for item in stream])
    assert answer.conversation is not None
    return answer.text, answer.events, answer.conversation


def final_answer(conv: JsonConversation) -> str:
    return (answer_text(conv.chatbot) or "").split(SUMMARY_MARKER)[0]


async def test_the_answer_streams_as_deltas_that_join_to_the_final_text(space):
    text, events, conv = await ask(space, [{"role": "user", "content": "Hello there [[tokens=40]]"}])
    assert text.startswith('You said: "Hello there". This is the first turn')
    assert text == final_answer(conv), "the deltas join to the Space's final answer"
    assert not any(isinstance(e, TextRewritten) for e in events)
    assert any(isinstance(e, Reasoning) for e in events), "the thinking placeholder is a status"
    assert any(isinstance(e, Summary) for e in events) and SUMMARY_MARKER not in text
    assert "None" not in text and not text.endswith((" ", "\n"))


async def test_history_and_system_prompt_reach_the_model(space):
    msgs = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "First question"}]
    text, _, conv = await ask(space, msgs)
    assert 'follow the system prompt: "Answer briefly."' in text
    msgs += [{"role": "assistant", "content": text}, {"role": "user", "content": "Second question"}]
    text2, _, conv = await ask(space, msgs, conversation=conv)
    assert 'You said: "Second question". This is turn 2' in text2
    assert 'your first message was: "' in text2 and "First question" in text2
    restored = JsonConversation.from_dict(conv.get_dict())
    msgs += [{"role": "assistant", "content": text2}, {"role": "user", "content": "Third"}]
    text3, _, _ = await ask(space, msgs, conversation=restored)
    assert "This is turn 3" in text3


async def test_an_attachment_is_read_by_the_space(space, tmp_path: Path):
    doc = tmp_path / "notes.txt"
    doc.write_text("filler. " * 2000 + "The pass key is 90125. " + "more filler. " * 2000)
    text, _, conv = await ask(space, [{"role": "user", "content": "What is the pass key?"}], files=[doc])
    assert 'I read "notes.txt"' in text and "The pass key is 90125." in text
    # A follow-up needs no new upload: the Space's history holds the file.
    follow = [
        {"role": "user", "content": "What is the pass key?"},
        {"role": "assistant", "content": text},
        {"role": "user", "content": "And again?"},
    ]
    text2, _, _ = await ask(space, follow, conversation=conv)
    assert "This is turn 2" in text2


@pytest.mark.parametrize("space", REAL_UI, indirect=True)
async def test_an_answer_in_several_parts_is_read_whole(space):
    text, events, conv = await ask(space, [{"role": "user", "content": "Look it up [[tool]]"}])
    assert "<details>" in text and "Start calling tool" in text, "tool calls are answer text"
    assert text.rstrip().endswith('You said: "Look it up". This is the first turn of our conversation.')
    assert text == final_answer(conv) and len(conv.chatbot) == 2, "the second part is a [None, bot] pair"
    assert not any(isinstance(e, TextRewritten) for e in events)


@pytest.mark.parametrize("space", ["qa11-2", "qa11-2-mention", "qa34-2"], indirect=True)
async def test_with_two_agents_the_answering_slot_is_read(space):
    text, _, conv = await ask(space, [{"role": "user", "content": "@Helper hello"}])
    assert 'You said: "' in text and "hello" in text
    bot = conv.chatbot[-1][1]
    assert isinstance(bot, list) and len(bot) == 2 and sum(slot is not None for slot in bot) == 1


async def test_cancel_then_continue_at_once_keeps_the_conversation(space):
    msgs = [{"role": "user", "content": "Start"}]
    _, _, conv = await ask(space, msgs)
    turn = 1
    for i in range(3):
        msgs += [{"role": "assistant", "content": "x"}, {"role": "user", "content": f"long {i} [[tokens=400]]"}]
        async with Qwen_Qwen_2_5M.stream("", msgs, space=space, conversation=conv) as stream:
            async for item in stream:
                if isinstance(item, str):
                    break
        msgs += [{"role": "assistant", "content": "x"}, {"role": "user", "content": f"next {i}"}]
        text, events, conv = await ask(space, msgs, conversation=conv)
        turn += 2
        expected = f'You said: "next {i}". This is turn {turn} of our conversation; your first message was: "Start".'
        assert text == expected
        assert not any(isinstance(e, TextRewritten) for e in events)


async def test_conversations_in_parallel_stay_apart(space):
    results: dict[int, str] = {}

    async def one(i: int) -> None:
        text, _, conv = await ask(space, [{"role": "user", "content": f"I am number {i}"}])
        msgs = [
            {"role": "user", "content": f"I am number {i}"},
            {"role": "assistant", "content": text},
            {"role": "user", "content": "Who am I?"},
        ]
        results[i], _, _ = await ask(space, msgs, conversation=conv)

    try:
        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(one, i)
    except BaseException as exc:
        raise AssertionError(f"{exc!r}\nthe Space's log:\n{REPLICAS[space].log_tail(80)}") from exc
    for i, text in results.items():
        assert f'your first message was: "I am number {i}"' in text


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_harness_passes_on_every_layout(space):
    before = threading.active_count()
    result = run_suite(space, ["api", "stream", "concat", "events", "context", "system", "attachment", "cancel"])
    assert result.passed, [(r.name, r.status, r.detail) for r in result.results if not r.ok]
    assert threading.active_count() <= before + 2
