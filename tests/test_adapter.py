"""The adapter against the replica, through the real gradio_client, under asyncio and trio."""

from __future__ import annotations

import json

import anyio
import pytest

from qwen_space_adapter import (
    JsonConversation,
    QueueStatus,
    Qwen_Qwen_2_5M,
    Reasoning,
    Summary,
    generate_session_hash,
)
from qwen_space_adapter.config_cache import cached_info, forget_spaces

pytestmark = pytest.mark.anyio


async def collect(**kwargs):
    kwargs.setdefault("model", "qwen-2.5-1m")
    return [item async for item in Qwen_Qwen_2_5M.create_async_generator(**kwargs)]


def text_of(items) -> str:
    return "".join(i for i in items if isinstance(i, str))


async def test_seed_example_streams_deltas(qwen_replica):
    messages = [{"role": "user", "content": "Привет! Как дела?"}]
    items = await collect(messages=messages, space=qwen_replica.url)
    deltas = [i for i in items if isinstance(i, str)]
    assert len(deltas) >= 2, "the answer arrives as deltas, not one block"
    assert text_of(items).startswith('You said: "Привет! Как дела?".')
    assert isinstance(items[0], QueueStatus | Reasoning)
    assert any(isinstance(i, Reasoning) and i.status == "Qwen is thinking..." for i in items)
    assert all("Qwen is thinking" not in d for d in deltas)
    summaries = [i for i in items if isinstance(i, Summary)]
    assert len(summaries) == 1 and summaries[0].text.startswith("<summary>")
    assert "<summary>" not in text_of(items)
    # every event prints as nothing, so printing each item prints just the answer
    assert "".join(map(str, items)) == text_of(items)


async def test_deltas_concatenate_to_the_final_answer(qwen_replica):
    items = await collect(
        messages=[{"role": "user", "content": "count for me [[tokens=100]] [[delay=0.01]]"}],
        space=qwen_replica.url,
        return_conversation=True,
    )
    conv = items[0]
    assert isinstance(conv, JsonConversation)
    final = conv.chatbot[-1][1][0]["text"]
    assert final.split("\n<summary>")[0] == text_of(items)
    # the server sends in 50 ms batches (gradio 4.44's own quantum): 1 s of tokens is ~20 batches
    assert len([i for i in items if isinstance(i, str)]) > 5


async def test_conversation_continues_with_only_the_new_message(qwen_replica):
    first = await collect(
        messages=[{"role": "user", "content": "My name is Ada."}],
        space=qwen_replica.url,
        return_conversation=True,
    )
    conv = first[0]
    assert len(conv.session_hash) == 12
    history = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": text_of(first)},
        {"role": "user", "content": "What is my name?"},
    ]
    second = await collect(messages=history, space=qwen_replica.url, conversation=conv)
    assert 'You said: "What is my name?"' in text_of(second)
    assert 'This is turn 2 of our conversation; your first message was: "My name is Ada."' in text_of(second)
    sent = [r["user_text"] for r in qwen_replica.stats()["requests"]]
    assert "What is my name?" in sent, "only the new message was typed into the Space"
    assert not any(s.startswith("User: My name is Ada.") for s in sent)


async def test_conversation_survives_a_json_round_trip(qwen_replica):
    first = await collect(
        messages=[{"role": "user", "content": "Remember PLUM."}],
        space=qwen_replica.url,
        return_conversation=True,
    )
    data = json.loads(json.dumps(first[0].get_dict()))
    conv = JsonConversation.from_dict(data)
    second = await collect(
        messages=[{"role": "user", "content": "Which word?"}], space=qwen_replica.url, conversation=conv
    )
    assert 'your first message was: "Remember PLUM."' in text_of(second)


async def test_history_and_system_reach_a_new_conversation_as_context(qwen_replica):
    messages = [
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": "I am Grace."},
        {"role": "assistant", "content": "Hello Grace."},
        {"role": "user", "content": [{"type": "text", "text": "Who am I?"}]},
    ]
    text = text_of(await collect(messages=messages, space=qwen_replica.url))
    assert 'You said: "Who am I?"' in text
    assert 'I will follow the system prompt: "Answer like a pirate."' in text
    assert 'your first message was: "I am Grace."' in text


async def test_conversations_never_share_a_session(qwen_replica):
    a = (
        await collect(
            messages=[{"role": "user", "content": "I am Alice."}], space=qwen_replica.url, return_conversation=True
        )
    )[0]
    b = (
        await collect(
            messages=[{"role": "user", "content": "I am Bob."}], space=qwen_replica.url, return_conversation=True
        )
    )[0]
    assert a.session_hash != b.session_hash
    text_b = text_of(
        await collect(messages=[{"role": "user", "content": "Who?"}], space=qwen_replica.url, conversation=b)
    )
    assert "I am Bob." in text_b and "Alice" not in text_b


async def test_twenty_conversations_at_once(qwen_replica):
    results: dict[int, tuple[str, str]] = {}

    async def converse(i: int) -> None:
        first = await collect(
            messages=[{"role": "user", "content": f"I am user {i}."}], space=qwen_replica.url, return_conversation=True
        )
        second = await collect(
            messages=[{"role": "user", "content": f"Who is {i}?"}], space=qwen_replica.url, conversation=first[0]
        )
        results[i] = (text_of(first), text_of(second))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(converse, i)
    for i, (first, second) in results.items():
        assert first.startswith(f'You said: "I am user {i}.". This is the first turn')
        assert f'You said: "Who is {i}?". This is turn 2' in second
        assert f'your first message was: "I am user {i}."' in second
    assert len(results) == 20


async def test_attachment_reaches_the_model(qwen_replica, tmp_path):
    doc = tmp_path / "long.txt"
    doc.write_text(("The grass is green. " * 5000) + "The pass key is 71432. " + ("The sky is blue. " * 5000))
    text = text_of(
        await collect(
            messages=[{"role": "user", "content": "What is the pass key?"}], space=qwen_replica.url, files=[str(doc)]
        )
    )
    assert 'I read "long.txt"' in text and "The pass key is 71432." in text
    record = [r for r in qwen_replica.stats()["requests"] if r["user_text"] == "What is the pass key?"][-1]
    assert record["files"] == ["long.txt"], "only the file the caller named was uploaded"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_4mb_haystack_one_million_tokens_of_context(qwen_replica, tmp_path):
    doc = tmp_path / "haystack.txt"
    filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
    half = filler * (2_000_000 // len(filler))
    doc.write_text(half + "The pass key is 71432. Remember it. " + half)
    assert doc.stat().st_size > 3_900_000
    items = await collect(
        messages=[{"role": "user", "content": "What is the pass key?"}], space=qwen_replica.url, files=[str(doc)]
    )
    assert "The pass key is 71432." in text_of(items)
    assert any(isinstance(i, Reasoning) for i in items), "a long context shows the thinking phase"


async def test_files_in_history_do_not_break_the_next_turn(qwen_replica, tmp_path):
    doc = tmp_path / "note.txt"
    doc.write_text("The pass key is 555.")
    first = await collect(
        messages=[{"role": "user", "content": "Read this."}],
        space=qwen_replica.url,
        files=[doc],
        return_conversation=True,
    )
    assert "The pass key is 555." in text_of(first)
    second = await collect(
        messages=[{"role": "user", "content": "And now?"}], space=qwen_replica.url, conversation=first[0]
    )
    assert "This is turn 2" in text_of(second)


async def test_warm_conversation_fetches_no_config(qwen_replica, mocker):
    await collect(messages=[{"role": "user", "content": "warm up"}], space=qwen_replica.url)
    assert cached_info(Qwen_Qwen_2_5M_target(qwen_replica.url)) is not None
    import httpx

    get = mocker.spy(httpx, "get")
    await collect(messages=[{"role": "user", "content": "second conversation"}], space=qwen_replica.url)
    urls = [str(c.args[0]) for c in get.call_args_list]
    assert not any(u.endswith(("/config", "/info")) for u in urls), urls


async def test_cold_start_fetches_config_once(qwen_replica, mocker):
    forget_spaces()
    import httpx

    get = mocker.spy(httpx, "get")
    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(lambda i=i: collect(messages=[{"role": "user", "content": f"c{i}"}], space=qwen_replica.url))
    configs = [c for c in get.call_args_list if str(c.args[0]).endswith("/config")]
    assert len(configs) == 1


async def test_breaking_out_stops_generation_on_the_replica(qwen_replica):
    before = qwen_replica.stats()
    stream = Qwen_Qwen_2_5M.create_async_generator(
        "qwen-2.5-1m",
        [{"role": "user", "content": "long please [[tokens=2000]] [[delay=0.01]]"}],
        space=qwen_replica.url,
    )
    async for item in stream:
        if isinstance(item, str):
            break
    await stream.aclose()
    after = await anyio.to_thread.run_sync(qwen_replica.wait_idle, 15.0)
    assert after["active"] == 0, "the replica is still generating"
    assert after["cancelled"] == before["cancelled"] + 1
    record = after["requests"][-1]
    assert record["status"] == "cancelled" and record["tokens"] < 2000


async def test_stream_context_cancels_at_the_end_of_the_block(qwen_replica):
    before = qwen_replica.stats()["cancelled"]
    async with Qwen_Qwen_2_5M.stream(
        "qwen-2.5-1m", [{"role": "user", "content": "ctx [[tokens=2000]] [[delay=0.01]]"}], space=qwen_replica.url
    ) as stream:
        async for item in stream:
            if isinstance(item, str):
                break
        kept = stream  # still referenced: only the block's end can close it
    after = await anyio.to_thread.run_sync(qwen_replica.wait_idle, 15.0)
    assert after["active"] == 0 and after["cancelled"] == before + 1
    assert kept.ag_frame is None, "the block's end closed the generator"
    with pytest.raises(StopAsyncIteration):
        await kept.__anext__()  # an unclosed generator would yield the next delta here


async def test_session_hash_format():
    hashes = {generate_session_hash() for _ in range(1000)}
    assert len(hashes) == 1000
    assert all(len(h) == 12 and all(c in "0123456789abcdef" for c in h) for h in hashes)


def Qwen_Qwen_2_5M_target(url):
    from qwen_space_adapter.options import parse_options

    return parse_options(None, {"space": url}).target
