"""g4f's own client drives our g4f-native provider against a replica Space.

These tests use the real `g4f.client.AsyncClient` (and `Client`), not a stand-in, because the
point of the drop-in is that g4f's own chunk handling recognises what the provider yields: text
as `delta.content`, the Space's status as `delta.reasoning`, the session as `chunk.conversation`.
"""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("g4f", reason="g4f is not installed (pip install 'qwen_space_adapter[g4f]')")

from g4f.client import AsyncClient, Client
from g4f.providers.response import JsonConversation as G4FJsonConversation
from g4f.providers.response import Reasoning as G4FReasoning

from qwen_space_adapter import ModelNotSupportedError, QueueStatus, Reasoning, Summary, TextRewritten
from qwen_space_adapter.g4f_provider import (
    Qwen_Qwen_2_5M,
    SpaceSummary,
    SpaceTextRewritten,
    to_g4f_event,
)

THINKING = "Qwen is thinking..."
# The replica "prefills" 0.5 s per MB of context before its first token. A document makes that
# pause long enough for the `Qwen is thinking...` update to arrive on its own rather than folded
# into the first token's update by a busy machine.
HAYSTACK = "The grass is green. The sky is blue. " * 16_000


@pytest.fixture
def document(tmp_path: Path) -> Path:
    path = tmp_path / "haystack.txt"
    path.write_text(HAYSTACK + "The pass key is 71432.")
    return path


@pytest.fixture
def anyio_backend() -> str:
    """g4f's client is built on asyncio (aiohttp, asyncio.wait_for), so only asyncio applies."""
    return "asyncio"


@pytest.fixture(autouse=True)
def g4f_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """g4f appends usage logs to its cookies folder after each call; keep them in tmp_path."""
    import g4f.cookies

    monkeypatch.setattr(g4f.cookies.CookiesConfig, "cookies_dir", str(tmp_path / "g4f"))


def unique(text: str) -> str:
    """A message no other test sends: g4f caches conversations by message history."""
    return f"{text} ({uuid.uuid4().hex[:8]})"


async def stream(client: AsyncClient, messages: list[dict[str, str]], **kwargs: Any) -> list[Any]:
    response = client.chat.completions.create(model="qwen-2.5-1m", messages=messages, stream=True, **kwargs)
    return [chunk async for chunk in response]


def content_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks)


def reasoning_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.reasoning or "" for c in chunks)


def no_ignored_option_warnings(recwarn: pytest.WarningsRecorder) -> None:
    """g4f's own keyword arguments (stream, provider...) must not reach the core as 'ignored'."""
    messages = [str(w.message) for w in recwarn if "no setting for" in str(w.message)]
    assert not messages, messages


@pytest.mark.anyio
async def test_stream_yields_text_reasoning_and_conversation(qwen_replica, document, recwarn):
    first = unique("My name is Ada")
    chunks = await stream(
        AsyncClient(provider=Qwen_Qwen_2_5M),
        [{"role": "user", "content": first}],
        space=qwen_replica.url,
        files=[document],
    )

    contents = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content is not None]
    assert all(isinstance(piece, str) for piece in contents), "only text reaches delta.content"
    text = content_of(chunks)
    assert text.startswith(f'You said: "{first}".')
    assert "first turn" in text and "The pass key is 71432." in text
    assert "<summary>" not in text and THINKING not in text
    assert THINKING in reasoning_of(chunks), "the Space's placeholder arrives as g4f reasoning"
    assert len(contents) > 3, "the answer streams in several chunks"

    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    conversation = final.conversation
    assert isinstance(conversation, G4FJsonConversation)
    assert conversation.space == qwen_replica.url
    assert conversation.message_count == 1 and len(conversation.chatbot) == 1
    no_ignored_option_warnings(recwarn)


@pytest.mark.anyio
async def test_second_call_with_the_conversation_continues_the_session(qwen_replica, recwarn):
    client = AsyncClient(provider=Qwen_Qwen_2_5M)
    first = unique("Remember the colour teal")
    messages = [{"role": "user", "content": first}]
    chunks = await stream(client, messages, space=qwen_replica.url)
    conversation = chunks[-1].conversation
    session = conversation.session_hash

    messages += [
        {"role": "assistant", "content": content_of(chunks)},
        {"role": "user", "content": "Which colour did I mention?"},
    ]
    chunks = await stream(client, messages, space=qwen_replica.url, conversation=conversation)
    text = content_of(chunks)
    assert text.startswith('You said: "Which colour did I mention?".')
    assert f'your first message was: "{first}"' in text
    again = chunks[-1].conversation
    assert again is conversation, "the caller's g4f conversation is updated in place"
    assert again.session_hash == session and again.message_count == 3

    # The g4f API server hands conversations around as JSON: a plain dict continues it too.
    data = json.loads(json.dumps(again.get_dict()))
    messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "And now?"}]
    chunks = await stream(client, messages, space=qwen_replica.url, conversation=data)
    assert "This is turn 3 of our conversation" in content_of(chunks)
    assert chunks[-1].conversation.session_hash == session
    no_ignored_option_warnings(recwarn)


@pytest.mark.anyio
async def test_non_streaming_call_on_a_bound_subclass(qwen_replica, document):
    bound = type("BoundQwen", (Qwen_Qwen_2_5M,), {"url": qwen_replica.url})
    prompt = unique("Just the answer")
    result = await AsyncClient(provider=bound).chat.completions.create(
        model="", messages=[{"role": "user", "content": prompt}], files=[document]
    )
    message = result.choices[0].message
    assert message.content.startswith(f'You said: "{prompt}".')
    assert THINKING in message.reasoning
    assert isinstance(result.conversation, G4FJsonConversation)
    assert result.conversation.space == qwen_replica.url


def test_sync_client(qwen_replica):
    client = Client(provider=Qwen_Qwen_2_5M)
    prompt = unique("From g4f's sync client")
    messages = [{"role": "user", "content": prompt}]
    result = client.chat.completions.create(model="qwen-2.5-1m", messages=messages, space=qwen_replica.url)
    assert result.choices[0].message.content.startswith(f'You said: "{prompt}".')
    # g4f's sync client hands the conversation back as a plain dict (its own `get_dict()`), as the
    # README says; passed back as it is, it continues the Space's session.
    conversation = result.conversation
    assert type(conversation) is dict and conversation["space"] == qwen_replica.url
    messages += [
        {"role": "assistant", "content": result.choices[0].message.content},
        {"role": "user", "content": "Who spoke first?"},
    ]
    again = client.chat.completions.create(
        model="qwen-2.5-1m", messages=messages, space=qwen_replica.url, conversation=conversation
    )
    assert f'your first message was: "{prompt}"' in again.choices[0].message.content
    assert again.conversation["session_hash"] == conversation["session_hash"]


@pytest.mark.anyio
async def test_unknown_model_is_refused_before_anything_is_sent():
    client = AsyncClient(provider=Qwen_Qwen_2_5M)
    with pytest.raises(ModelNotSupportedError, match="gpt-4o"):
        await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def test_events_map_to_g4f_types():
    thinking = to_g4f_event(Reasoning(status=THINKING))
    assert isinstance(thinking, G4FReasoning) and thinking.status == THINKING
    queued = to_g4f_event(QueueStatus(position=2, queue_size=5, eta=12.4))
    assert isinstance(queued, G4FReasoning)
    assert queued.status == "Waiting in the Space's queue: position 3 of 5 (about 12 s)"
    summary = to_g4f_event(Summary(text="<summary>details"))
    assert isinstance(summary, SpaceSummary) and summary.text == "<summary>details"
    rewritten = to_g4f_event(TextRewritten(text="new", previous="old"))
    assert isinstance(rewritten, SpaceTextRewritten) and (rewritten.text, rewritten.previous) == (
        "new",
        "old",
    )
    assert str(summary) == str(rewritten) == ""


def test_g4f_plumbing_is_dropped_and_api_key_is_the_hf_token():
    kwargs = {
        "stream": True,
        "provider": Qwen_Qwen_2_5M,
        "stop": ["x"],
        "max_tokens": 9,
        "api_key": "hf_abc",
        "files": ["a.txt"],
        "temperature": 0.1,
    }
    assert Qwen_Qwen_2_5M._core_kwargs(kwargs) == {
        "hf_token": "hf_abc",
        "files": ["a.txt"],
        "temperature": 0.1,
    }
    assert Qwen_Qwen_2_5M._core_kwargs({"api_key": "k", "hf_token": "t"}) == {"hf_token": "t"}


def test_missing_g4f_names_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "qwen_space_adapter.g4f_provider")
    monkeypatch.setitem(sys.modules, "g4f.providers.base_provider", None)
    with pytest.raises(ImportError, match=r"qwen_space_adapter\[g4f\]"):
        importlib.import_module("qwen_space_adapter.g4f_provider")
