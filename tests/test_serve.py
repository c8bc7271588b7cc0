"""`qwen-space serve` against a real replica Space, driven by the official OpenAI SDK and raw httpx.

Every server runs for real on a free loopback port (uvicorn on a thread, or the CLI as a
process), and the replica's deterministic answers prove what reached the Space: it quotes the
user's message, names the turn of its session, and says whether it holds a file from an earlier
message (only a continued session can: a new one gets the file again, as context).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from threadcount import settle_threads, thread_count  # noqa: E402

from qwen_space_adapter.replica import Replica  # noqa: E402
from qwen_space_adapter.serve import Context, ServeApp, SessionStore  # noqa: E402
from qwen_space_adapter.serve.server import BackgroundServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = "qwen-2.5-1m"


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def file_part(name: str, text: str) -> dict[str, Any]:
    data = base64.b64encode(text.encode()).decode()
    return {"type": "file", "file": {"filename": name, "file_data": f"data:text/plain;base64,{data}"}}


def start_server(space: str, store: SessionStore | None = None, **kw: Any) -> BackgroundServer:
    options = kw.pop("options", {})
    ctx = Context(store=store if store is not None else SessionStore(), space=space, options=options)
    return BackgroundServer(ServeApp(ctx, **kw)).start()


@pytest.fixture(scope="module")
def replica() -> Iterator[Replica]:
    with Replica(token_delay=0.005, prefill_base=0.02) as r:
        yield r


@pytest.fixture(scope="module")
def server(replica: Replica) -> Iterator[BackgroundServer]:
    srv = start_server(str(replica.url))
    yield srv
    srv.stop()


@pytest.fixture
def client(server: BackgroundServer) -> Any:
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)


def wait_idle(server: BackgroundServer) -> None:
    """Until the server runs no answer (its own event, awaited on its loop; no sleeping)."""
    assert server._loop is not None
    asyncio.run_coroutine_threadsafe(server.app.wait_idle(), server._loop).result(30)


# --- the OpenAI SDK -----------------------------------------------------------------------------


def test_sdk_whole_answer_then_continued_session_keeps_the_file(client: Any) -> None:
    first = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Read this."}, file_part("key.txt", "The pass key is 4242.")],
        }
    ]
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=first)
    answer = raw.parse()
    text = answer.choices[0].message.content
    assert text.startswith('You said: "Read this.". This is the first turn')
    assert 'I read "key.txt"' in text and "The pass key is 4242." in text
    session = raw.headers["x-qwen-session"]
    assert raw.headers["x-qwen-session-continued"] == "false"
    assert answer.model_extra["qwen"]["session"] == session
    assert answer.model_extra["qwen"]["summary"].startswith("<summary>")
    assert answer.choices[0].finish_reason == "stop" and answer.usage.completion_tokens > 0

    history = [*first, {"role": "assistant", "content": text}, user("What was the key?")]
    raw2 = client.chat.completions.with_raw_response.create(model=MODEL, messages=history)
    text2 = raw2.parse().choices[0].message.content
    assert raw2.headers["x-qwen-session"] == session
    assert raw2.headers["x-qwen-session-continued"] == "true"
    assert "This is turn 2 of our conversation" in text2
    # the Space's own session holds the file: a new session would have been sent it again
    assert 'I still have "key.txt" from an earlier message' in text2 and 'I read "key.txt"' not in text2


def test_sdk_streaming_deltas_reasoning_and_summary(client: Any) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=[user("Stream me")], stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == 'You said: "Stream me". This is the first turn of our conversation.'
    reasoning = [c.choices[0].delta.model_extra.get("reasoning_content") for c in chunks if c.choices]
    first_text = next(i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content)
    assert any(r and "thinking" in r for r in reasoning[:first_text]), "the thinking phase comes before text"
    summaries = [c.model_extra["qwen"]["summary"] for c in chunks if "summary" in (c.model_extra.get("qwen") or {})]
    assert len(summaries) == 1 and "<summary>" in summaries[0] and "<summary>" not in content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1


def test_async_sdk_streams_with_usage_and_continues(server: BackgroundServer) -> None:
    async def main() -> tuple[str, str, Any]:
        client = openai.AsyncOpenAI(base_url=server.url, api_key="unused", max_retries=0)
        async with client:
            stream = await client.chat.completions.create(
                model="qwen-2.5-1m-demo",
                messages=[user("Async one")],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [c async for c in stream]
            one = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            history = [user("Async one"), {"role": "assistant", "content": one}, user("Async two")]
            two = await client.chat.completions.create(model=MODEL, messages=history)
            return one, two.choices[0].message.content, chunks[-1]

    one, two, last = asyncio.run(main())
    assert one.startswith('You said: "Async one"')
    assert two.startswith(
        'You said: "Async two". This is turn 2 of our conversation; your first message was: "Async one".'
    )
    assert last.choices == [] and last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


def test_sdk_errors_have_openai_statuses(client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[user("hi")])
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    assert "qwen-2.5-1m" in e.value.body["message"]
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [image]}])
    assert "image" in e.value.body["message"] and e.value.body["param"] == "messages[0].content[0]"
    with pytest.raises(openai.BadRequestError, match="n > 1"):
        client.chat.completions.create(model=MODEL, messages=[user("hi")], n=2)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(model=MODEL, messages=[user("hi")], tools=[tool])
    with pytest.raises(openai.BadRequestError, match=r"x\.bin.* looks binary"):
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, file_part("x.bin", "\x00\x01")]}],
        )
    # sampling knobs are accepted and ignored: the answer is the same deterministic one
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[user("knobs")],
        temperature=0.1,
        max_tokens=3,
        top_p=0.5,
        seed=1,
        stop=["x"],
        user="someone",
    )
    assert answer.choices[0].message.content == 'You said: "knobs". This is the first turn of our conversation.'


def test_space_error_before_and_after_streaming_began(client: Any, server: BackgroundServer) -> None:
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model=MODEL, messages=[user("[[fault:error-before-first-token]]")])
    assert e.value.status_code == 502 and e.value.body["code"] == "space_error"
    assert "failed before its first token" in e.value.body["message"]

    got = []
    with pytest.raises(openai.APIError, match="failed mid-stream"):
        for chunk in client.chat.completions.create(
            model=MODEL, messages=[user("half [[fault:error-mid-stream]]")], stream=True
        ):
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got).startswith("You said:"), "the text before the error reached the client"
    with httpx.stream(
        "POST",
        server.url + "/chat/completions",
        timeout=60,
        json={"model": MODEL, "stream": True, "messages": [user("half [[fault:error-mid-stream]]")]},
    ) as r:
        frames = [line for line in r.iter_lines() if line]
    assert r.status_code == 200
    error = json.loads(frames[-1].removeprefix("data: "))
    assert error["error"]["code"] == "space_error" and set(error["error"]) == {"message", "type", "param", "code"}
    assert "data: [DONE]" not in frames


def test_unreachable_space_is_503_and_timeout_is_504(replica: Replica) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    down = start_server(closed, options={"max_retries": 0})
    slow = start_server(str(replica.url), options={"first_token_timeout": 0.5})
    try:
        c = openai.OpenAI(base_url=down.url, api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model=MODEL, messages=[user("anyone?")], stream=True)
        assert e.value.status_code == 503 and e.value.body["code"] == "space_unavailable"
        c = openai.OpenAI(base_url=slow.url, api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model=MODEL, messages=[user("[[fault:slow-first-token=5]]")])
        assert e.value.status_code == 504 and e.value.body["code"] == "timeout"
        assert "first token" in e.value.body["message"]
    finally:
        down.stop()
        slow.stop()


def test_api_key_is_required_and_checked(replica: Replica) -> None:
    srv = start_server(str(replica.url), api_key="s3cret-key")
    try:
        for key in ("wrong", "s3cret-key-but-longer", "s3cret-ke"):
            with pytest.raises(openai.AuthenticationError) as e:
                openai.OpenAI(base_url=srv.url, api_key=key, max_retries=0).models.list()
            assert e.value.body["code"] == "invalid_api_key" and "s3cret" not in json.dumps(e.value.body)
        r = httpx.get(srv.url + "/models")
        assert r.status_code == 401 and "error" in r.json()
        good = openai.OpenAI(base_url=srv.url, api_key="s3cret-key", max_retries=0)
        assert good.chat.completions.create(model=MODEL, messages=[user("key ok")]).choices[0].message.content
        assert "s3cret" not in repr(srv.app)
    finally:
        srv.stop()


# --- raw HTTP -----------------------------------------------------------------------------------


def test_raw_sse_framing(server: BackgroundServer) -> None:
    body = {"model": MODEL, "stream": True, "stream_options": {"include_usage": True}, "messages": [user("Frames")]}
    with httpx.stream("POST", server.url + "/chat/completions", json=body, timeout=60) as r:
        raw = r.read().decode()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert re.fullmatch(r"[0-9a-f]{12}", r.headers["x-qwen-session"])
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") and "\n" not in e for e in events[:-1])
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["completion_tokens"] > 0
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(p["object"] == "chat.completion.chunk" and p["model"] == MODEL for p in payloads)
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads if p["choices"])
    assert text == 'You said: "Frames". This is the first turn of our conversation.'


def test_models_health_and_routes(server: BackgroundServer, client: Any) -> None:
    ids = {m.id for m in client.models.list()}
    assert ids == {"qwen-2.5-1m-demo", "qwen-2.5-1m"}
    assert client.models.retrieve("qwen-2.5-1m").model_extra["qwen"] == {"alias_of": "qwen-2.5-1m-demo"}
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    assert httpx.get(server.url.removesuffix("/v1") + "/health").json()["status"] == "ok"
    r = httpx.get(server.url + "/nothing")
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(server.url + "/chat/completions").status_code == 405
    r = httpx.post(server.url + "/chat/completions", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


# --- cancellation, concurrency, persistence -----------------------------------------------------


def test_client_disconnect_cancels_the_job_on_the_space(server: BackgroundServer, replica: Replica) -> None:
    replica.wait_idle()
    before = replica.stats()
    wait_idle(server)
    threads = thread_count()
    tasks = server.call(lambda: len(asyncio.all_tasks()))
    body = {"model": MODEL, "stream": True, "messages": [user("long [[tokens=2000]]")]}
    with httpx.Client(timeout=60) as http, http.stream("POST", server.url + "/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if '"content":"You' in line:
                break  # text flows: leave mid-answer
    wait_idle(server)
    after = replica.wait_idle()
    assert after["cancelled"] == before["cancelled"] + 1, (before, after)
    assert after["tokens"] - before["tokens"] < 2000
    assert server.app.disconnects >= 1
    assert server.call(lambda: len(asyncio.all_tasks())) == tasks
    assert server.app.adapter_loop is not None and server.app.adapter_loop.tasks() == 0
    assert settle_threads(threads) <= threads


def test_two_requests_continuing_one_conversation_at_once(client: Any, server: BackgroundServer) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=[user("Fork base")])
    base = [user("Fork base"), {"role": "assistant", "content": raw.parse().choices[0].message.content}]
    session = raw.headers["x-qwen-session"]
    results: dict[str, Any] = {}

    def ask(word: str) -> None:
        results[word] = client.chat.completions.with_raw_response.create(model=MODEL, messages=[*base, user(word)])

    threads = [threading.Thread(target=ask, args=(w,)) for w in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    sessions = {w: r.headers["x-qwen-session"] for w, r in results.items()}
    for word, r in results.items():
        text = r.parse().choices[0].message.content
        # each answered as the second turn after the base, about its own message only
        assert text.startswith(
            f'You said: "{word}". This is turn 2 of our conversation; your first message was: "Fork base".'
        ), text
    assert sorted(r.headers["x-qwen-session-continued"] for r in results.values()) == ["false", "true"]
    assert session in sessions.values() and len(set(sessions.values())) == 2
    # both forks were filed: each continues in its own session
    for word, r in results.items():
        history = [
            *base,
            user(word),
            {"role": "assistant", "content": r.parse().choices[0].message.content},
            user(f"{word} again"),
        ]
        again = client.chat.completions.with_raw_response.create(model=MODEL, messages=history)
        assert again.headers["x-qwen-session"] == sessions[word]
        assert again.headers["x-qwen-session-continued"] == "true"
        text = again.parse().choices[0].message.content
        assert text.startswith(f'You said: "{word} again".')
        if sessions[word] == session:  # the original session: its third turn
            assert "This is turn 3 of our conversation" in text
        else:  # the fork's session began with the history as one context message, then its own question
            assert "This is turn 2 of our conversation" in text and f"User: {word} Assistant:" in text


def test_restarted_server_continues_from_its_sessions_file(replica: Replica, tmp_path: Path) -> None:
    db = str(tmp_path / "sessions.sqlite")

    def ask_a_fresh_server(messages: list[dict[str, Any]]) -> Any:
        """One answer from a server started for it on the sessions file, stopped before returning."""
        store = SessionStore(db)
        srv = start_server(str(replica.url), store)
        try:
            client = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0)
            return client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
        finally:
            srv.stop()
            store.close()

    first = [{"role": "user", "content": [{"type": "text", "text": "Persist"}, file_part("p.txt", "pass key")]}]
    raw = ask_a_fresh_server(first)
    history = [*first, {"role": "assistant", "content": raw.parse().choices[0].message.content}, user("Still there?")]
    raw2 = ask_a_fresh_server(history)
    assert raw2.headers["x-qwen-session"] == raw.headers["x-qwen-session"]
    assert raw2.headers["x-qwen-session-continued"] == "true"
    text = raw2.parse().choices[0].message.content
    assert "This is turn 2" in text and 'I still have "p.txt" from an earlier message' in text


def restart_on(port: int, within: float = 20.0) -> Replica:
    """A new replica on the port of the one just stopped. The kernel may hold the port a moment
    (connections in TIME_WAIT) and no event says when it is free, so this retries within a bound."""
    import time

    from qwen_space_adapter.errors import ReplicaError

    deadline = time.monotonic() + within
    while True:
        space = Replica(port=port, token_delay=0.005, prefill_base=0.02)
        try:
            space.start()
            return space
        except ReplicaError as e:
            if "not free" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_restarted_space_is_answered_in_a_new_session_with_the_history() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    space = Replica(port=port, token_delay=0.005, prefill_base=0.02)
    url = space.start()
    srv = start_server(url)
    try:
        c = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0)
        raw = c.chat.completions.with_raw_response.create(model=MODEL, messages=[user("Before restart")])
        space.close()
        space = restart_on(port)
        history = [
            user("Before restart"),
            {"role": "assistant", "content": raw.parse().choices[0].message.content},
            user("After restart"),
        ]
        raw2 = c.chat.completions.with_raw_response.create(model=MODEL, messages=history)
    finally:
        srv.stop()
        space.close()
    assert raw2.headers["x-qwen-session"] != raw.headers["x-qwen-session"]
    assert raw2.headers["x-qwen-session-continued"] == "false"
    assert (
        raw2.parse()
        .choices[0]
        .message.content.startswith(
            'You said: "After restart". This is turn 2 of our conversation; your first message was: "Before restart".'
        )
    )


def test_100_concurrent_streams_each_get_their_own_answer(server: BackgroundServer) -> None:
    async def one(http: httpx.AsyncClient, i: int) -> str:
        body = {"model": MODEL, "stream": True, "messages": [user(f"client number {i}")]}
        text = ""
        async with http.stream("POST", server.url + "/chat/completions", json=body) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    choices = json.loads(line[6:])["choices"]
                    if choices:
                        text += choices[0]["delta"].get("content") or ""
        return text

    async def main() -> list[str]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:
            return await asyncio.gather(*(one(http, i) for i in range(100)))

    texts = asyncio.run(main())
    for i, text in enumerate(texts):
        assert text == f'You said: "client number {i}". This is the first turn of our conversation.'


# --- the command --------------------------------------------------------------------------------


def _read_url(proc: subprocess.Popen[str], timeout: float = 300) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the server printed no URL"
    return proc.stdout.readline().strip()


def test_cli_serve_replica_streams_continues_and_stops_at_ctrl_c() -> None:
    canary = "hf_CANARYcanaryCANARY1234567890"
    env = {**os.environ, "HF_TOKEN": canary, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qwen_space_adapter", "serve", "--replica", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        url = _read_url(proc)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", url)
        c = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        text = "".join(
            ch.choices[0].delta.content or ""
            for ch in c.chat.completions.create(model=MODEL, messages=[user("From the CLI")], stream=True)
            if ch.choices
        )
        assert text == 'You said: "From the CLI". This is the first turn of our conversation.'
        raw = c.chat.completions.with_raw_response.create(
            model=MODEL, messages=[user("From the CLI"), {"role": "assistant", "content": text}, user("Next")]
        )
        assert raw.headers["x-qwen-session-continued"] == "true"
        assert "This is turn 2 of our conversation" in raw.parse().choices[0].message.content
        seen = json.dumps(raw.parse().model_dump()) + json.dumps(dict(raw.headers))
        body = {"model": MODEL, "stream": True, "messages": [user("endless [[tokens=5000]] [[delay=0.02]]")]}
        rest: list[str] = []
        with httpx.stream("POST", url + "/chat/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()
            for line in lines:
                if '"content":"You' in line:
                    proc.send_signal(signal.SIGINT)  # Ctrl-C mid-answer
                    break
            try:  # the stream ends (cut, or closed): the server is gone
                rest.extend(lines)
            except httpx.HTTPError:
                pass
        assert not any("word4000" in line for line in rest)
        assert "data: [DONE]" not in rest
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out, err = proc.communicate()
    assert canary not in out + err + seen


def test_cli_refuses_a_public_bind_without_api_key() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "qwen_space_adapter", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert r.returncode == 2 and "--api-key" in r.stderr and not r.stdout


# --- the docs' recipes --------------------------------------------------------------------------


def recipe(name: str) -> str:
    """The code block of docs/serving.md that follows the marker `<!-- recipe: NAME -->`."""
    doc = (ROOT / "docs" / "serving.md").read_text()
    match = re.search(rf"<!-- recipe: {name} -->\s*```python\n(.*?)```", doc, re.DOTALL)
    assert match, f"docs/serving.md has no recipe {name!r}"
    return match.group(1)


@pytest.mark.parametrize("name", ["openai", "openai-async", "langchain", "litellm"])
def test_docs_recipe_runs(name: str, server: BackgroundServer) -> None:
    needs = {"langchain": "langchain_openai", "litellm": "litellm"}.get(name)
    if needs:
        pytest.importorskip(needs)
    code = recipe(name)
    env = {**os.environ, "QWEN_SERVE_URL": server.url, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "This is turn 2 of our conversation" in r.stdout, r.stdout
