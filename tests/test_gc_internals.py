"""The gradio_client internals the fast path relies on: checked loudly, with a working fallback."""

from __future__ import annotations

import threading

import pytest

from qwen_space_adapter import Qwen_Qwen_2_5M
from qwen_space_adapter import _gc_internals as gci


def test_the_internals_we_rely_on_are_still_there():
    # If this fails, gradio_client changed: read _gc_internals.py, adapt it (or widen
    # TESTED_VERSIONS after checking), because the adapter has fallen back to the slow path.
    assert gci.problems() == []
    assert gci.tap_supported() and gci.join_supported()


def test_problems_are_detected(mocker):
    mocker.patch.object(gci, "GC_VERSION", "9.0.0")
    mocker.patch.object(gci.Client, "send_data", None)
    found = gci.problems()
    assert any("9.0.0" in p for p in found) and any("send_data" in p for p in found)


def test_tap_refuses_when_internals_changed(mocker):
    mocker.patch.object(gci, "tap_supported", return_value=False)
    with pytest.raises(RuntimeError, match="public Job API"):
        gci.tap(object(), lambda *a: None, lambda e: None)


@pytest.mark.anyio
async def test_gradio_clients_job_path_gives_the_same_answer(qwen_replica, mocker):
    # Without the direct join (internals changed), steps go through `Client.submit` and its Job.
    async def answer() -> str:
        out = ""
        async for i in Qwen_Qwen_2_5M.create_async_generator(
            "qwen-2.5-1m", [{"role": "user", "content": "job path check"}], space=qwen_replica.url
        ):
            if isinstance(i, str):
                out += i
        return out

    direct, plain = mocker.spy(gci, "join"), mocker.spy(gci, "predict")
    fast = await answer()
    # add_text is unqueued (a plain call, as the page makes it); predict joined the queue directly
    assert (plain.call_count, direct.call_count) == (1, 1)
    mocker.patch.object(gci, "join_supported", return_value=False)
    assert await answer() == fast == 'You said: "job path check". This is the first turn of our conversation.'
    assert (plain.call_count, direct.call_count) == (2, 1)


@pytest.mark.anyio
async def test_public_api_fallback_gives_the_same_answer(qwen_replica, mocker):
    async def answer() -> list:
        return [
            i
            async for i in Qwen_Qwen_2_5M.create_async_generator(
                "qwen-2.5-1m", [{"role": "user", "content": "fallback check"}], space=qwen_replica.url
            )
        ]

    fast = await answer()
    mocker.patch.object(gci, "tap_supported", return_value=False)
    install = mocker.spy(gci, "tap")
    slow = await answer()
    assert install.call_count == 0
    text = lambda items: "".join(i for i in items if isinstance(i, str))
    assert text(slow) == text(fast) == 'You said: "fallback check". This is the first turn of our conversation.'


@pytest.mark.anyio
async def test_a_new_client_makes_no_request(qwen_replica, mocker):
    from qwen_space_adapter.clients import close_client, open_client
    from qwen_space_adapter.config_cache import space_info
    from qwen_space_adapter.options import parse_options

    info = await space_info(parse_options(None, {"space": qwen_replica.url}).target)
    import httpx

    get, post = mocker.spy(httpx, "get"), mocker.spy(httpx, "post")
    client = open_client(info, "abcdef123456")
    try:
        assert client.session_hash == "abcdef123456"
        assert client.config["connect_heartbeat"] is False
        assert not client.heartbeat.is_alive()
    finally:
        close_client(client)
    assert get.call_count == 0 and post.call_count == 0


# gradio_client internals the adapter uses; only `_gc_internals.py` may name them (as attributes).
INTERNALS = {
    "_info",
    "executor",
    "helper_executor",
    "stream_executor",
    "src_prefixed",
    "sse_url",
    "upload_url",
    "pending_messages_per_event",
    "communicator",
    "cancel_fn",
    "stream_messages",
    "send_data",
    "pending_lock",
    "stream_open",
    "stream_epoch",
    "pending_event_epoch",
    "_get_config",
    "_get_api_info",
    "_telemetry_thread",
    "process_input_files",
    "_client",
}


def test_only_the_internals_module_touches_gradio_client_internals():
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "qwen_space_adapter"
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "_gc_internals.py" or "replica" in path.parts:  # the replica is the Space's side
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in INTERNALS:
                found.append(f"{path.relative_to(package)}:{node.lineno} .{node.attr}")
    assert not found, f"gradio_client internals used outside _gc_internals.py: {found}"


@pytest.mark.parametrize(
    ("block", "closes"),
    [
        (b'data: {"msg":"close_stream","event_id":null}\n\n', True),  # Gradio 4.44's orjson
        (b'data: {"msg": "close_stream", "event_id": null}\n\n', True),
        (b'data: {"msg":"process_completed","event_id":"e"}\n\ndata: {"msg":"close_stream"}\n\n', True),
        (b'data: {"msg":"close_stream"}\n\ndata: {"msg":"heartbeat"}\n\n', False),  # not the last
        (b'data: {"msg":"process_generating","output":{"data":["close_stream"]}}\n\n', False),
        (b'data: {"msg":"process_generating","output":"' + b"x" * 10**6 + b' close_stream"}\n\n', False),
    ],
)
def test_only_the_spaces_close_of_the_stream_counts_as_one(block, closes):
    assert gci.closes_stream(block) is closes


def _reader_state(closed_by_space: bool) -> gci.AdapterClient:
    """A client's reader bookkeeping as it is when its reader ended under event "e" (epoch 1)."""
    client = gci.AdapterClient.__new__(gci.AdapterClient)
    client.pending_lock = threading.Lock()
    client.reader_ended, client.refused = False, None
    client.stream_open, client.stream_epoch, client.pending_event_epoch = False, 1, {"e": 1}
    transport = gci.ShuttableTransport()
    transport.closed_by_space = closed_by_space
    client.reader_transports = [transport]
    return client


def test_an_event_is_not_resumed_after_a_reader_the_space_did_not_close():
    # a cut connection, a refused update or a turn that is over ends the event with its reader
    assert not _reader_state(closed_by_space=False).resume_reader("e")
    client = _reader_state(closed_by_space=True)
    client.end_reader()
    assert not client.resume_reader("e")
    client = _reader_state(closed_by_space=True)
    client.refused = gci.StreamInterruptedError("too large")
    assert not client.resume_reader("e")


def test_an_event_goes_on_on_a_reader_a_later_join_opened():
    client = _reader_state(closed_by_space=False)
    client.stream_open, client.stream_epoch = True, 2
    assert client.resume_reader("e") and client.pending_event_epoch["e"] == 2
