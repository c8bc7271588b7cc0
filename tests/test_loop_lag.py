"""The caller's event loop does only the caller's work (issue 19, item 9).

Timings are measured by `benchmarks/run.py --only loop-lag`; these tests assert the structure
that keeps the loop free: a turn's client is built from the cached page without deep copies,
without rebuilding gradio_client's endpoints and without starting a thread; the cached page is
never mutated by a turn; and an update over `MAX_UPDATE_BYTES` is refused as it arrives, with
the reader handed whole messages (so gradio_client's reader cannot go quadratic).
"""

from __future__ import annotations

import copy
import json
import threading

import anyio
import gradio_client.client
import pytest

from qwen_space_adapter import Qwen_Qwen_2_5M, StreamInterruptedError, clients, config_cache, ending
from qwen_space_adapter import _gc_internals as gci
from qwen_space_adapter.options import parse_options
from tests.fakespace import Handler, fake_space, page_config

SAY = [{"role": "user", "content": "Say something short."}]
LIMIT = 32 * 1024 * 1024  # the documented MAX_UPDATE_BYTES


async def answer(url: str, **kwargs: object) -> str:
    parts = []
    async for item in Qwen_Qwen_2_5M.create_async_generator("qwen-2.5-1m", SAY, space=url, **kwargs):
        if isinstance(item, str):
            parts.append(item)
    return "".join(parts)


@pytest.mark.anyio
async def test_a_warm_turn_builds_its_client_without_copies_endpoints_or_threads(qwen_replica, mocker):
    url = qwen_replica.url
    assert await answer(url)  # warms the cache: config, info and endpoint templates
    info = config_cache.cached_info(parse_options(None, {"space": url}).target)
    assert info is not None and info.endpoints
    before = json.dumps([info.config, info.api_info], sort_keys=True, default=str)

    # The spies are process-wide: the warm-up turn's ending (in the background) must be over first.
    assert await anyio.to_thread.run_sync(ending.wait_all, 30.0)
    deepcopies = mocker.spy(copy, "deepcopy")
    endpoints = mocker.spy(gradio_client.client.Endpoint, "__init__")
    started: list[object] = []
    start = threading.Thread.start

    def record(thread: threading.Thread) -> None:
        started.append(getattr(thread, "_target", None))
        start(thread)

    mocker.patch.object(threading.Thread, "start", autospec=True, side_effect=record)
    client = clients.open_client(info, "a-session-hash", 10)
    try:
        assert deepcopies.call_count == 0
        assert endpoints.call_count == 0
        assert started == []
        assert client.config is info.config
        assert set(client.endpoints) == set(info.endpoints)
        assert all(e.client is client for e in client.endpoints.values())
        assert all(e.process_input_files is gci._as_is for e in client.endpoints.values())
    finally:
        clients.close_client(client)
    mocker.stopall()

    assert await answer(url)  # a whole turn on the shared page...
    after = json.dumps([info.config, info.api_info], sort_keys=True, default=str)
    assert after == before  # ...leaves it as fetched


def test_the_reader_gets_whole_messages_whatever_the_chunks():
    """`_Messages` regroups a stream cut anywhere (even inside a message's end) into whole ones."""
    messages = [b'data: {"a": %d}\n\n' % i for i in range(50)] + [b'data: {"big": "' + b"x" * 5000 + b'"}\n\n']
    wire = b"".join(messages)
    for size in (1, 2, 3, 7, 64, 4096):
        chunks = [wire[i : i + size] for i in range(0, len(wire), size)]
        out = list(gci._Messages(chunks, None, None))  # type: ignore[arg-type]
        assert b"".join(out) == wire
        assert all(piece.endswith(b"\n\n") for piece in out)
        assert len(out) <= len(messages)


def _huge_update(handler: Handler) -> None:
    """An SSE stream that starts an event, then sends one update bigger than the limit."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.close_connection = True
    try:
        handler.wfile.write(b'data: {"msg": "process_starts", "event_id": "e1"}\n\n')
        handler.wfile.write(
            b'data: {"msg": "process_generating", "event_id": "e1", "success": true, "output": {"data": [[["hi", "'
        )
        piece = b"x" * 65536
        for _ in range(LIMIT // len(piece) + 64):
            handler.wfile.write(piece)
        while not handler.server.stopping.wait(0.05):  # the client should go: find out when it has
            handler.wfile.write(b"x")
            handler.wfile.flush()
    except OSError:
        handler.server.disconnected.set()


@pytest.mark.anyio
async def test_an_update_over_the_limit_is_refused_with_a_clear_error():
    config_cache.forget_spaces()
    with fake_space() as space:
        space.serve_page(page_config())
        space.serve_json("/queue/join", {"event_id": "e1"})
        space.serve_json("/run/predict", {"data": [None], "is_generating": False})
        space.routes["/queue/data"] = _huge_update
        with pytest.raises(StreamInterruptedError, match="larger than 32 MiB") as info:
            await answer(space.url, max_retries=0, timeout=60)
        assert "MAX_UPDATE_BYTES" in str(info.value) and gci.MAX_UPDATE_BYTES == LIMIT
        assert space.disconnected.wait(10), "the reader's connection was not cut"
    config_cache.forget_spaces()
