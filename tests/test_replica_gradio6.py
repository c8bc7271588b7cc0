"""The adapter on current Gradio (6.31): the gradio6 replica flavor and a Gradio 6 Blocks chat.

The gradio6 flavor is Gradio's own multimodal `gr.ChatInterface`, unmodified, over the replica's
model: its messages carry `content` as lists of typed parts, and the model reads the history the
client sends back (ChatInterface copies the client's chatbot into its history after each answer).
So every answer here proves what reached the model through the client. The Blocks app
(`tests/apps/gradio6_blocks.py`) is the `gr.Chatbot` + `gr.MultimodalTextbox` pattern of Gradio 6's
docs, with files as their own messages and a bot message mixing text and file parts.

The replicas are shared by the session (one start each), so stats are compared before and after.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from qwen_space_adapter import JsonConversation, Qwen_Qwen_2_5M, Reasoning, Summary, TextRewritten
from qwen_space_adapter.deltas import SUMMARY_MARKER, answer_text
from qwen_space_adapter.errors import APIChangedError, SpaceAppError
from qwen_space_adapter.page import Page
from qwen_space_adapter.provider import collect
from qwen_space_adapter.replica import Replica, ReplicaSettings
from qwen_space_adapter.replica import env as replica_env
from qwen_space_adapter.replica.flavors import PYTHONS, flavor

APPS = Path(__file__).parent / "apps"
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the turn engine's trio runs are in test_turns.py; the page shapes do not depend on it


@pytest.fixture
def g6(qwen_shared_replica: Any) -> Any:
    return qwen_shared_replica(ui="gradio6")


@pytest.fixture
def blocks(qwen_shared_replica: Any) -> Any:
    return qwen_shared_replica(ui="gradio6", app=str(APPS / "gradio6_blocks.py"), extra_args=["--mode", "parts"])


async def ask(
    space: str, messages: list[dict[str, str]], conversation: JsonConversation | None = None, **kw: Any
) -> tuple[str, list[Any], JsonConversation]:
    stream = Qwen_Qwen_2_5M.create_async_generator(
        "", messages, space=space, return_conversation=True, conversation=conversation, **kw
    )
    with anyio.fail_after(60):
        answer = collect([item async for item in stream])
    assert answer.conversation is not None
    return answer.text, answer.events, answer.conversation


def final_answer(conv: JsonConversation) -> str:
    return (answer_text(conv.chatbot) or "").split(SUMMARY_MARKER)[0]


def last_request(replica: Any, user_text: str) -> dict[str, Any]:
    """The server's record of the generation for the prompt starting with `user_text`, once no generation runs."""
    found = [r for r in replica.wait_idle(20)["requests"] if r["user_text"].startswith(user_text)]
    assert found, f"the server never generated for {user_text!r}"
    return found[-1]


def test_the_flavor_serves_gradio_6s_own_chat_interface(g6):
    page = Page.from_config(httpx.get(f"{g6.url}/config", timeout=10).json())
    assert page.version.startswith("6.") and page.protocol == "sse_v3"
    assert page.input_type == "multimodaltextbox" and page.chatbot_type == "chatbot"
    # ChatInterface's chain: clear and save the textbox, append the message, stream the answer,
    # then copy the chatbot the client holds into the history the next answer reads.
    # Gradio 6 dispatches the first step's `.success` listener (lambda_5) before its `.then` one.
    assert [s.name for s in page.chain][:3] == ["_clear_and_save_textbox", "lambda_5", "_append_message_to_history"]
    assert page.answer_step.name == "_submit_fn" and page.answer_step.generator
    after = page.chain[page.answer + 1 :]
    assert any(page.chatbot_id in s.inputs and "state" in page.types(s.outputs) for s in after)


async def test_the_answer_streams_as_deltas_that_join_to_the_final_answer(g6):
    text, events, conv = await ask(g6.url, [{"role": "user", "content": "Hello there [[tokens=40]]"}])
    assert text.startswith('You said: "Hello there". This is the first turn of our conversation.')
    assert text == final_answer(conv), "the deltas join to the Space's final answer"
    assert not any(isinstance(e, TextRewritten) for e in events)
    assert any(isinstance(e, Reasoning) for e in events), "the thinking placeholder is a status"
    assert any(isinstance(e, Summary) for e in events) and SUMMARY_MARKER not in text
    bot = conv.chatbot[-1]
    assert bot["role"] == "assistant" and bot["content"][0]["type"] == "text", "Gradio 6 content parts"
    assert last_request(g6, "Hello there")["tokens"] == 40


async def test_the_model_reads_the_history_the_client_sends_back(g6):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "First question"}]
    text, _, conv = await ask(g6.url, msgs)
    assert 'follow the system prompt: "Be brief."' in text
    msgs += [{"role": "assistant", "content": text}, {"role": "user", "content": "Second question"}]
    text2, _, conv = await ask(g6.url, msgs, conversation=conv)
    # The history is the chatbot the adapter sent back after turn 1: a lost one reads "first turn".
    assert text2.startswith(
        'You said: "Second question". This is turn 2 of our conversation; your first message was: "'
    )
    assert last_request(g6, "Second question")["history_turns"] == 1
    restored = JsonConversation.from_dict(conv.get_dict())
    msgs += [{"role": "assistant", "content": text2}, {"role": "user", "content": "Third"}]
    text3, _, _ = await ask(g6.url, msgs, conversation=restored)
    assert text3.startswith('You said: "Third". This is turn 3 of our conversation;')


async def test_an_attachment_is_read_and_stays_in_the_history(g6, tmp_path: Path):
    doc = tmp_path / "notes.txt"
    doc.write_text("filler. " * 500 + "The pass key is 90125. " + "more filler. " * 500)
    msgs = [{"role": "user", "content": "What is the pass key?"}]
    text, _, conv = await ask(g6.url, msgs, files=[doc])
    assert f'I read "notes.txt" ({len(doc.read_text())} characters). The pass key is 90125.' in text
    part = next(p for p in conv.chatbot[0]["content"] if p["type"] == "file")
    assert part["file"]["meta"] == {"_type": "gradio.FileData"}, "Gradio 6 refuses a file part without it"
    # No new upload: the file part the client sends back is what the model reads the file from.
    msgs += [{"role": "assistant", "content": text}, {"role": "user", "content": "And again?"}]
    text2, _, conv2 = await ask(g6.url, msgs, conversation=conv)
    assert 'I still have "notes.txt" from an earlier message' in text2 and "The pass key is 90125." in text2
    # A conversation stored by a tool that dropped the tag still continues: the adapter restores it.
    stored = conv2.get_dict()
    for message in stored["chatbot"]:
        for part in message["content"]:
            if part["type"] == "file":
                del part["file"]["meta"]
    msgs += [{"role": "assistant", "content": text2}, {"role": "user", "content": "Once more?"}]
    text3, _, _ = await ask(g6.url, msgs, conversation=JsonConversation.from_dict(stored))
    assert text3.startswith('You said: "Once more?". This is turn 3') and "The pass key is 90125." in text3


async def test_a_cancel_stops_the_model_and_the_conversation_goes_on(g6):
    msgs = [{"role": "user", "content": "Start"}]
    _, _, conv = await ask(g6.url, msgs)
    msgs += [{"role": "assistant", "content": "x"}, {"role": "user", "content": "long one [[tokens=400]]"}]
    with anyio.fail_after(60):
        async with Qwen_Qwen_2_5M.stream("", msgs, space=g6.url, conversation=conv) as stream:
            async for item in stream:
                if isinstance(item, str):
                    break
    record = last_request(g6, "long one")
    assert record["status"] == "cancelled" and record["tokens"] < 400, "the server stopped generating"
    msgs += [{"role": "assistant", "content": "x"}, {"role": "user", "content": "next"}]
    text, events, _ = await ask(g6.url, msgs, conversation=conv)
    assert text.startswith('You said: "next". This is turn ')
    assert text.endswith('of our conversation; your first message was: "Start".')
    assert not any(isinstance(e, TextRewritten) for e in events)


async def test_a_fault_fails_the_turn_with_its_partial_text_and_the_next_turn_answers(g6):
    failed_before = g6.stats()["failed"]
    msgs = [{"role": "user", "content": "Break [[fault:error-mid-stream]] [[tokens=40]]"}]
    with anyio.fail_after(60), pytest.raises(SpaceAppError, match="failed mid-stream") as info:
        async for _ in Qwen_Qwen_2_5M.create_async_generator("", msgs, space=g6.url):
            pass
    assert info.value.partial_text.startswith('You said: "Break". This is the first turn')
    assert g6.wait_idle(20)["failed"] == failed_before + 1
    text, _, _ = await ask(g6.url, [{"role": "user", "content": "Fine now"}])
    assert text.startswith('You said: "Fine now".')


async def test_a_gradio_6_blocks_chat_with_files_is_driven(blocks, tmp_path: Path):
    doc = tmp_path / "doc.txt"
    doc.write_text("The pass key is 4242.\nsecond line\n")
    msgs = [{"role": "user", "content": "hello"}]
    text, events, conv = await ask(blocks.url, msgs, files=[doc])
    # The bot's second message holds text, a file, text: the file part is not answer text.
    assert text == (
        'Blocks heard: "hello" after 0 earlier user message(s). doc.txt begins: The pass key is 4242. '
        "\n\nSecond part.\n\nAfter the file."
    )
    assert text == answer_text(conv.chatbot) and not any(isinstance(e, TextRewritten) for e in events)
    # The history lives in the chatbot alone; sent back with its file parts (the user's and the bot's).
    msgs += [{"role": "assistant", "content": text}, {"role": "user", "content": "again"}]
    text2, _, conv2 = await ask(blocks.url, msgs, conversation=conv)
    assert text2.startswith('Blocks heard: "again" after 2 earlier user message(s). \n\nSecond part.')
    assert sum(p["type"] == "file" for m in conv2.chatbot for p in m["content"]) == 3


def _installed(version: str) -> str | None:
    return next((p for p in replica_env.candidates() if replica_env.python_version(p) == version), None)


def test_the_flavor_is_keyed_by_its_own_pins():
    g6_flavor = flavor("gradio6")
    assert "gradio==6.31.0" in g6_flavor.pins() and "modelscope" not in g6_flavor.pins()
    assert g6_flavor.key("py311").startswith("replica-gradio6-py311-") and g6_flavor.pythons == PYTHONS
    assert g6_flavor.key("py311") != flavor("hand").key("py311") and not g6_flavor.real_ui


@pytest.mark.parametrize("version", PYTHONS)
async def test_the_flavor_runs_on_each_python(version: str):
    if version == f"{sys.version_info.major}.{sys.version_info.minor}":
        pytest.skip("this interpreter's environment serves every other test of this file")
    python = _installed(version)
    if python is None:
        pytest.skip(f"Python {version} is not installed here")
    with Replica(ReplicaSettings(ui="gradio6", python=python, token_delay=0.001, prefill_base=0.01)) as replica:
        text, _, _ = await ask(str(replica.url), [{"role": "user", "content": "hi"}])
    assert text.startswith('You said: "hi". This is the first turn')


TRANSCRIPT = Path(__file__).parent / "fixtures" / "replica_transcript.json"


async def test_a_recorded_transcript_is_replayed_through_gradio_6(qwen_replica_factory: Any):
    turns = json.loads(TRANSCRIPT.read_text())["turns"]
    replica = qwen_replica_factory(ui="gradio6", replay=str(TRANSCRIPT), replay_speed=100.0)
    recorded = turns[0]["updates"][-1]["text"].split(SUMMARY_MARKER)[0]
    text, events, _ = await ask(str(replica.url), [{"role": "user", "content": "replay me"}])
    assert text == recorded and any(isinstance(e, Reasoning) for e in events)


async def test_a_gradio_6_chat_interface_with_a_textbox_is_driven(qwen_shared_replica: Any):
    replica = qwen_shared_replica(ui="gradio6", app=str(APPS / "gradio6_chat_interface.py"))
    page = Page.from_config(httpx.get(f"{replica.url}/config", timeout=10).json())
    assert page.input_type == "textbox" and not page.multimodal and page.messages_format
    msgs = [{"role": "user", "content": "one"}]
    text, events, conv = await ask(str(replica.url), msgs)
    assert text == 'Textbox heard: "one" with 0 message(s) of history.'
    assert not any(isinstance(e, TextRewritten) for e in events)
    msgs += [{"role": "assistant", "content": text}, {"role": "user", "content": "two"}]
    text2, _, _ = await ask(str(replica.url), msgs, conversation=conv)
    assert text2 == 'Textbox heard: "two" with 2 message(s) of history.', "the chatbot sent back is the history"
    with anyio.fail_after(60), pytest.raises(APIChangedError, match="takes no files"):
        await ask(str(replica.url), [{"role": "user", "content": "a file?"}], files=[Path(__file__)])
