"""Which Space a call talks to: space=, the conversation's Space, a subclass's url, $QWEN_SPACE, the default.

Each step is checked twice: in `parse_options` (no network) and end to end against the replica,
with every lower-priority source pointing at a closed port, so a call that picked the wrong
source could not answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from qwen_space_adapter import InvalidRequestError, JsonConversation, Qwen_Qwen_2_5M
from qwen_space_adapter.options import own_url, parse_options
from qwen_space_adapter.target import DEFAULT_SPACE_URL

DEAD = "http://127.0.0.1:9"  # discard port: nothing answers
DEAD_ENV = "http://127.0.0.1:7"
SAY = [{"role": "user", "content": "Which Space is this?"}]


@pytest.fixture
def no_env_space(monkeypatch):
    monkeypatch.delenv("QWEN_SPACE", raising=False)


def bound(url: str) -> type:
    """A subclass bound to `url`: the README's recipe for a duplicate and the pytest plugin's fixture."""
    return type("Bound", (Qwen_Qwen_2_5M,), {"url": url})


def test_the_order_in_parse_options(monkeypatch, no_env_space):
    conv_space = "http://127.0.0.1:3"
    assert parse_options(None, {}).target.url == DEFAULT_SPACE_URL
    monkeypatch.setenv("QWEN_SPACE", "me/env-space")
    assert parse_options(None, {}).target.url == "https://me-env-space.hf.space"
    assert parse_options(None, {}, class_url="me/bound").target.url == "https://me-bound.hf.space"
    assert parse_options(None, {}, class_url="me/bound", conversation_space=conv_space).target.url == conv_space
    explicit = parse_options(None, {"space": "me/explicit"}, class_url="me/bound", conversation_space=conv_space)
    assert explicit.target.url == "https://me-explicit.hf.space"
    # space=None is "not given", as g4f passes it; the next source decides.
    assert parse_options(None, {"space": None}, class_url="me/bound").target.url == "https://me-bound.hf.space"


def test_an_empty_space_never_falls_back_to_the_public_space(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_NotForThePublicSpace")
    for empty in ("", "   ", 0, False):
        with pytest.raises(InvalidRequestError, match="space must be"):
            Qwen_Qwen_2_5M.create_async_generator("qwen-2.5-1m", SAY, space=empty)


def test_own_url_is_the_subclass_setting_only():
    assert own_url(Qwen_Qwen_2_5M, Qwen_Qwen_2_5M) is None
    assert own_url(type("Plain", (Qwen_Qwen_2_5M,), {}), Qwen_Qwen_2_5M) is None
    child = bound("http://127.0.0.1:5")
    assert own_url(child, Qwen_Qwen_2_5M) == "http://127.0.0.1:5"
    assert own_url(type("Grandchild", (child,), {}), Qwen_Qwen_2_5M) == "http://127.0.0.1:5"


def test_a_bad_conversation_space_is_named(no_env_space):
    conv = {"session_hash": "abcdef123456", "space": "not a space"}
    with pytest.raises(InvalidRequestError, match=r"conversation\.space="):
        Qwen_Qwen_2_5M.create_async_generator("qwen-2.5-1m", SAY, conversation=conv)


async def ask(provider: type, **kwargs) -> tuple[str, JsonConversation]:
    text, conv = "", None
    async for item in provider.create_async_generator("qwen-2.5-1m", SAY, return_conversation=True, **kwargs):
        if isinstance(item, str):
            text += item
        elif isinstance(item, JsonConversation):
            conv = item
    assert conv is not None
    return text, conv


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_explicit_space_beats_subclass_url_and_env(qwen_replica, monkeypatch):
    monkeypatch.setenv("QWEN_SPACE", DEAD_ENV)
    text, conv = await ask(bound(DEAD), space=qwen_replica.url, max_retries=0)
    assert text.startswith('You said: "Which Space is this?"') and conv.space == qwen_replica.url


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_subclass_url_beats_env(qwen_replica, monkeypatch):
    monkeypatch.setenv("QWEN_SPACE", DEAD_ENV)
    text, conv = await ask(bound(qwen_replica.url), max_retries=0)
    assert text.startswith('You said: "Which Space is this?"') and conv.space == qwen_replica.url


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_env_beats_the_default(qwen_replica, monkeypatch):
    monkeypatch.setenv("QWEN_SPACE", qwen_replica.url)
    text, conv = await ask(Qwen_Qwen_2_5M, max_retries=0)
    assert text.startswith('You said: "Which Space is this?"') and conv.space == qwen_replica.url


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_conversation_continues_on_its_own_space(qwen_replica, monkeypatch):
    monkeypatch.delenv("QWEN_SPACE", raising=False)
    _, conv = await ask(Qwen_Qwen_2_5M, space=qwen_replica.url)
    monkeypatch.setenv("QWEN_SPACE", DEAD_ENV)
    text, again = await ask(bound(DEAD), conversation=conv, max_retries=0)
    assert "This is turn 2 of our conversation" in text and again.space == qwen_replica.url
    # An explicit space= still wins, and a conversation of another Space cannot go there.
    with pytest.raises(InvalidRequestError, match="belongs to the Space at"):
        Qwen_Qwen_2_5M.create_async_generator("qwen-2.5-1m", SAY, conversation=conv, space=DEAD)


def test_a_restored_conversation_continues_on_its_space_in_a_fresh_process(qwen_replica, tmp_path):
    first = Qwen_Qwen_2_5M.ask("Remember QUINCE.", space=qwen_replica.url)
    assert first.conversation is not None
    saved = tmp_path / "conversation.json"
    saved.write_text(json.dumps(first.conversation.get_dict()))
    script = textwrap.dedent(
        """
        import json, sys
        from qwen_space_adapter import JsonConversation, Qwen_Qwen_2_5M
        conv = JsonConversation.from_dict(json.load(open(sys.argv[1])))
        answer = Qwen_Qwen_2_5M.ask("Which word?", conversation=conv, max_retries=0)
        print(json.dumps({"text": answer.text, "space": answer.conversation.space}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("QWEN_SPACE", "HF_TOKEN")}
    env["QWEN_SPACE"] = DEAD_ENV  # the conversation's own Space must win over the environment
    proc = subprocess.run(
        [sys.executable, "-c", script, str(saved)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 'your first message was: "Remember QUINCE."' in result["text"]
    assert result["space"] == qwen_replica.url
