"""Faults survived, retries where safe, nothing leaked, load held: against real servers.

Each fault is provoked for real (a replica fault switch, a closed port, a server answering 503,
a killed server, a changed API) and the caller must get the matching `QwenSpaceError` subclass
in bounded time, keep the text streamed so far, and be left with a clean process.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import pytest
from threadcount import settle_threads, thread_count

from qwen_space_adapter import (
    APIChangedError,
    QueueFullError,
    QueueStatus,
    Qwen_Qwen_2_5M,
    SpaceAppError,
    SpaceTimeoutError,
    SpaceUnavailableError,
    StreamInterruptedError,
    config_cache,
    ending,
)

pytestmark = pytest.mark.anyio
APPS = Path(__file__).parent / "apps"


def stream(url: str, text: str, **kw):
    return Qwen_Qwen_2_5M.create_async_generator("qwen-2.5-1m", [{"role": "user", "content": text}], space=url, **kw)


async def drain(url: str, text: str, **kw) -> str:
    out = ""
    async for item in stream(url, text, **kw):
        if isinstance(item, str):
            out += item
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http503():
    """A server that answers every request with 503, as a sleeping or broken Space does."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"Service Unavailable")

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", hits
    server.shutdown()
    server.server_close()
    thread.join()


# --- faults -------------------------------------------------------------------------------


async def test_connection_refused_is_retried_then_reported(no_thread_leak, mocker):
    url = f"http://127.0.0.1:{free_port()}"
    fetch = mocker.spy(config_cache, "_fetch_info")
    with anyio.fail_after(30), pytest.raises(SpaceUnavailableError, match="Could not connect") as info:
        await drain(url, "hello", max_retries=2, retry_backoff=0.01)
    assert fetch.call_count == 3, "two retries after the first attempt"
    assert info.value.partial_text == ""


async def test_503_is_space_unavailable(http503, no_thread_leak):
    url, hits = http503
    with anyio.fail_after(30), pytest.raises(SpaceUnavailableError, match="not serving"):
        await drain(url, "hello", max_retries=1, retry_backoff=0.01)
    assert len([h for h in hits if h.startswith("/config")]) == 2


async def test_app_error_before_first_token(qwen_replica, no_thread_leak):
    with anyio.fail_after(30), pytest.raises(SpaceAppError) as info:
        await drain(qwen_replica.url, "x [[fault:error-before-first-token]]")
    assert info.value.space_message == "Replica fault: the model failed before its first token."
    assert info.value.partial_text == ""


async def test_app_error_mid_stream_keeps_the_streamed_text(qwen_replica, no_thread_leak):
    seen = ""
    with anyio.fail_after(30), pytest.raises(SpaceAppError, match="mid-stream") as info:
        async for item in stream(qwen_replica.url, "y [[tokens=200]] [[fault:error-mid-stream]]"):
            if isinstance(item, str):
                seen += item
    assert info.value.partial_text == seen
    assert seen.startswith('You said: "y".') and "word80" in seen


async def test_stall_mid_stream_times_out_and_stops_the_space(qwen_replica, no_thread_leak):
    with anyio.fail_after(30), pytest.raises(SpaceTimeoutError) as info:
        await drain(qwen_replica.url, "z [[tokens=40]] [[fault:stall=60]]", idle_timeout=1)
    assert info.value.phase == "silence"
    assert info.value.partial_text.startswith('You said: "z".')
    stats = await anyio.to_thread.run_sync(qwen_replica.wait_idle, 15.0)
    assert stats["active"] == 0 and stats["requests"][-1]["status"] == "cancelled"


async def test_slow_first_token_beyond_the_timeout(qwen_replica, no_thread_leak):
    with anyio.fail_after(30), pytest.raises(SpaceTimeoutError) as info:
        await drain(qwen_replica.url, "w [[fault:slow-first-token=60]]", first_token_timeout=1)
    assert info.value.phase == "first token" and info.value.partial_text == ""
    stats = await anyio.to_thread.run_sync(qwen_replica.wait_idle, 15.0)
    assert stats["active"] == 0


async def test_whole_answer_timeout(qwen_replica, no_thread_leak):
    with anyio.fail_after(30), pytest.raises(SpaceTimeoutError) as info:
        await drain(qwen_replica.url, "v [[tokens=3000]] [[delay=0.01]]", timeout=1)
    assert info.value.phase == "answer"


async def test_queue_full_and_concurrency_limit(qwen_replica_factory, no_thread_leak):
    replica = qwen_replica_factory(concurrency_limit=1, max_queue_size=2)
    running = stream(replica.url, "a [[tokens=3000]] [[delay=0.01]]")
    waiting = stream(replica.url, "b", max_retries=0)
    second = stream(replica.url, "b2", max_retries=0)
    with anyio.fail_after(60):
        async for item in running:  # the first conversation holds the only slot
            if isinstance(item, str):
                break
        queued = None
        async for item in waiting:  # the second waits in the queue and says where
            if isinstance(item, QueueStatus):
                queued = item
                break
        assert queued is not None and queued.position == 0
        # a queued job can run out of patience: the first-token deadline covers the queue, and
        # giving up takes the job out of the Space's queue (Gradio's /cancel alone would not).
        with pytest.raises(SpaceTimeoutError) as info:
            await drain(replica.url, "d", max_retries=0, first_token_timeout=1)
        assert info.value.phase == "first token"
        # The caller got its error at its deadline; the job leaves the queue in the background.
        assert await anyio.to_thread.run_sync(ending.wait_all, 15.0), "the turn's ending never finished"
        async for item in second:  # the queue's second place is free again
            if isinstance(item, QueueStatus):
                break
        with pytest.raises(QueueFullError, match=r"queue .* is full"):
            await drain(replica.url, "c", max_retries=1, retry_backoff=0.01)
        await running.aclose()
        rest = "".join([i async for i in waiting if isinstance(i, str)])
        assert rest.startswith('You said: "b".'), "the queued conversation completes once the slot frees"
        rest = "".join([i async for i in second if isinstance(i, str)])
        assert rest.startswith('You said: "b2".')
    ran = [r["user_text"] for r in replica.wait_idle(15)["requests"]]
    assert "d" not in ran and "c" not in ran, f"a job given up on while queued still ran: {ran}"


async def test_server_killed_mid_stream(qwen_replica_factory, no_thread_leak):
    replica = qwen_replica_factory()
    seen = ""
    with anyio.fail_after(30), pytest.raises(StreamInterruptedError) as info:
        async for item in stream(replica.url, "k [[tokens=100]] [[fault:die-mid-stream]]"):
            if isinstance(item, str):
                seen += item
    assert info.value.partial_text == seen and seen.startswith('You said: "k".')
    assert replica.process.wait(timeout=10) == 3


async def test_nothing_is_retried_after_the_first_delta(qwen_replica, mocker):
    from qwen_space_adapter import bridge, protocol

    real = protocol.JobFollower._handle
    outputs = 0

    def flaky(self, msg):
        nonlocal outputs
        event = real(self, msg)
        if event is None:
            outputs += 1
            if outputs == 3:  # a retryable failure after text already reached the caller
                raise QueueFullError("transient")
        return event

    mocker.patch.object(protocol.JobFollower, "_handle", flaky)
    submit = mocker.spy(bridge, "submit")
    seen = ""
    with pytest.raises(QueueFullError) as info:
        async for item in stream(qwen_replica.url, "r [[tokens=50]]", max_retries=3, retry_backoff=0.01):
            if isinstance(item, str):
                seen += item
    assert seen and info.value.partial_text == seen
    assert submit.call_count == 2, "add_text and predict once each: no retry after the first delta"


async def test_changed_api_is_refused_with_what_changed(qwen_replica_factory, no_thread_leak):
    replica = qwen_replica_factory(app=str(APPS / "changed_api.py"))
    with anyio.fail_after(30), pytest.raises(APIChangedError, match=r"fn 0: \(textbox\) -> \(textbox\)"):
        await drain(replica.url, "hello")


async def test_gradios_own_chat_pattern_is_driven_like_any_page(qwen_replica_factory, no_thread_leak):
    replica = qwen_replica_factory(app=str(APPS / "changed_api.py"), extra_args=["--mode", "chat"])
    with anyio.fail_after(30):
        assert await drain(replica.url, "hello") == "changed"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the page model does not depend on it
@pytest.mark.parametrize("mode", ["tuples", "messages", "multimodal"])
async def test_gradios_chat_interface_is_driven_like_any_page(qwen_replica_factory, mode, anyio_backend):
    replica = qwen_replica_factory(app=str(APPS / "chat_interface.py"), extra_args=["--mode", mode])
    messages = [{"role": "user", "content": "first"}]
    conversation = None
    with anyio.fail_after(60):
        for turn in range(2):
            text = ""
            async for item in Qwen_Qwen_2_5M.create_async_generator(
                "", messages, space=replica.url, conversation=conversation, return_conversation=True
            ):
                if isinstance(item, str):
                    text += item
                elif hasattr(item, "get_dict"):
                    conversation = item
            # ChatInterface keeps the history in the chatbot, which the adapter sends back.
            earlier = turn if mode == "tuples" else 2 * turn  # pairs, or messages
            said = messages[-1]["content"]
            assert text.strip() == f'You said: "{said}". This chat has {earlier} earlier message(s).'
            messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "second"}]


# --- leaks, load, isolation ---------------------------------------------------------------


def wait_for_threads(count: int, timeout: float = 10.0) -> None:
    settle_threads(count, within=timeout)


def live_tasks(backend: str) -> int:
    """Tasks alive in the running event loop (asyncio), or in the whole task tree (trio)."""
    if backend == "asyncio":
        return len([t for t in asyncio.all_tasks() if not t.done()])
    import trio

    count, stack = 0, [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_no_leaks_over_200_abandoned_and_timed_out_conversations(qwen_replica, anyio_backend):
    await drain(qwen_replica.url, "warm")
    gc.collect()
    threads, fds = thread_count(), _fds()
    tasks = live_tasks(anyio_backend)
    for i in range(200):
        s = stream(qwen_replica.url, f"leak {i} [[tokens=400]] [[delay=0.005]]")
        if i % 2:
            async for item in s:  # abandoned mid-stream
                if isinstance(item, str):
                    break
            await s.aclose()
        else:
            with anyio.move_on_after(0.05):  # cancelled by the caller's timeout
                async for _ in s:
                    pass
            await s.aclose()
    stats = await anyio.to_thread.run_sync(qwen_replica.wait_idle, 30.0)
    assert stats["active"] == 0, "the replica still generates for abandoned conversations"
    gc.collect()
    await anyio.to_thread.run_sync(wait_for_threads, threads)
    assert thread_count() <= threads, [t.name for t in threading.enumerate()]
    assert _fds() <= fds + 2
    assert live_tasks(anyio_backend) == tasks


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_100_concurrent_conversations_stay_apart(qwen_replica):
    answers: dict[int, str] = {}

    async def one(i: int) -> None:
        answers[i] = await drain(qwen_replica.url, f"I am number {i}.", timeout=120)

    with anyio.fail_after(180):
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(one, i)
    assert len(answers) == 100
    for i, text in answers.items():
        assert text == f'You said: "I am number {i}.". This is the first turn of our conversation.'


async def test_an_event_joined_after_its_turn_was_stopped_is_still_ours(mocker):
    """A turn stopped while its join was in flight no longer hears the tap's registration; its
    event may still run, and its messages reach the session's next reader. They must be known
    as this process's own, not taken for another client's (`ConversationInUseError`)."""
    from qwen_space_adapter import _gc_internals as gci
    from qwen_space_adapter import bridge, protocol

    mocker.patch.object(gci, "join", return_value="ev-of-the-stopped-turn")
    own: set[str] = set()
    stopped = protocol.JobFollower("http://127.0.0.1:9", True, (), own=own)
    job = bridge.DirectJob(object(), stopped, 1, [], None)
    assert await anyio.to_thread.run_sync(job.future.result, 10) == "ev-of-the-stopped-turn"

    nxt = protocol.JobFollower("http://127.0.0.1:9", True, (), own=own)  # the session's next step
    nxt.on_register("ev-next")
    nxt.sink("ev-of-the-stopped-turn", {"msg": "process_starts"})
    nxt.sink("ev-of-the-stopped-turn", {"msg": "process_generating", "output": {"data": [["x"]]}})
    nxt.sink("ev-next", {"msg": "process_completed", "success": True, "output": {"data": ["done"]}})
    events = [event async for event in nxt.events()]
    assert events == [protocol.Completed(["done"])]
