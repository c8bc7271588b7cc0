"""How a turn runs, ends and hands the session over (reliability, second pass).

A turn owns its client and its reader, and is over only when the reader has ended: so a
conversation continued right after a cancel, an error or a timeout is answered whole, one
conversation used by two tasks is served one turn at a time, and deadlines cover reaching
the Space as well as the answer. Real servers throughout: the replica, and small fault servers.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import anyio
import httpx
import pytest
from threadcount import settle_threads, thread_count

from qwen_space_adapter import (
    ConversationInUseError,
    InvalidRequestError,
    JsonConversation,
    Qwen_Qwen_2_5M,
    SpaceAppError,
    SpaceRestartedError,
    SpaceTimeoutError,
    SpaceUnavailableError,
    TextRewritten,
)
from qwen_space_adapter.config_cache import forget_spaces

pytestmark = pytest.mark.anyio
PAGES = Path(__file__).parent / "fixtures" / "pages"


class Chat:
    """One conversation, continued turn after turn like a chat UI does."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.messages: list[dict[str, str]] = []
        self.conversation: JsonConversation | None = None

    def _stream(self, text: str, **kw: Any) -> Any:
        self.messages += [{"role": "user", "content": text}]
        return Qwen_Qwen_2_5M.create_async_generator(
            "",
            list(self.messages),
            space=self.url,
            return_conversation=True,
            conversation=self.conversation,
            **kw,
        )

    async def ask(self, text: str, **kw: Any) -> tuple[str, list[Any]]:
        out, events = "", []
        async for item in self._stream(text, **kw):
            if isinstance(item, JsonConversation):
                self.conversation = item
            elif isinstance(item, str):
                out += item
            else:
                events.append(item)
        self.messages.append({"role": "assistant", "content": out})
        return out, events

    async def ask_and_leave(self, text: str, after: int = 1) -> None:
        seen = 0
        async with Qwen_Qwen_2_5M.stream(
            "",
            [*self.messages, {"role": "user", "content": text}],
            space=self.url,
            return_conversation=True,
            conversation=self.conversation,
        ) as stream:
            async for item in stream:
                if isinstance(item, JsonConversation):
                    self.conversation = item
                elif isinstance(item, str):
                    seen += 1
                    if seen >= after:
                        break
        self.messages += [{"role": "user", "content": text}, {"role": "assistant", "content": "(left)"}]


def expected(text: str, turn: int, first: str) -> str:
    return f'You said: "{text}". This is turn {turn} of our conversation; your first message was: "{first}".'


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_cancel_then_continue_at_once_twenty_times(qwen_replica, anyio_backend):
    chat = Chat(qwen_replica.url)
    await chat.ask("Start")
    baseline = settle_threads(thread_count())
    for i in range(20):
        await chat.ask_and_leave(f"long answer {i} [[tokens=400]]")
        text, events = await chat.ask(f"next {i}")
        assert text == expected(f"next {i}", 2 * i + 3, "Start"), f"round {i}"
        assert not any(isinstance(e, TextRewritten) for e in events)
    assert settle_threads(baseline) <= baseline, "threads piled up across turns"


@pytest.mark.parametrize(
    ("fault", "kw", "error"),
    [
        ("[[fault:error-mid-stream]] [[tokens=40]]", {}, SpaceAppError),
        ("[[fault:stall=30]] [[tokens=40]]", {"idle_timeout": 1}, SpaceTimeoutError),
        ("[[fault:slow-first-token=30]]", {"first_token_timeout": 1}, SpaceTimeoutError),
    ],
    ids=["mid-stream error", "silence timeout", "first-token timeout"],
)
async def test_continue_at_once_after_a_failure(qwen_replica, fault, kw, error):
    chat = Chat(qwen_replica.url)
    await chat.ask("Start")
    baseline = settle_threads(thread_count())
    for i in range(5):
        with pytest.raises(error):
            await chat.ask(f"failing {i} {fault}", **kw)
        chat.messages.append({"role": "assistant", "content": "(failed)"})
        text, _ = await chat.ask(f"after {i}")
        # The failed message stays in the Space's history: a retry is a new turn (README).
        assert text == expected(f"after {i}", 2 * i + 3, "Start"), f"round {i}"
    assert settle_threads(baseline) <= baseline


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_one_conversation_in_two_tasks_is_served_one_turn_at_a_time(qwen_replica, anyio_backend):
    chat = Chat(qwen_replica.url)
    await chat.ask("Start")
    conv = chat.conversation
    texts: dict[str, str] = {}

    async def turn(text: str) -> None:
        msgs = [*chat.messages, {"role": "user", "content": text}]
        out = ""
        async for item in Qwen_Qwen_2_5M.create_async_generator("", msgs, space=qwen_replica.url, conversation=conv):
            if isinstance(item, str):
                out += item
        texts[text] = out

    async with anyio.create_task_group() as tg:
        tg.start_soon(turn, f"alpha {anyio_backend} [[tokens=60]]")
        tg.start_soon(turn, f"beta {anyio_backend} [[tokens=60]]")
    turns = sorted(int(t.split("This is turn ")[1].split(" ")[0]) for t in texts.values())
    assert turns == [2, 3], texts  # both answered whole, one after the other
    stats = qwen_replica.wait_idle(15)
    mine = [
        r for r in stats["requests"] if r["user_text"].startswith((f"alpha {anyio_backend}", f"beta {anyio_backend}"))
    ]
    assert len(mine) == 2 and all(r["status"] == "completed" for r in mine)
    first, second = sorted(mine, key=lambda r: r["began"])
    assert first["ended"] <= second["began"], "the two turns overlapped on one session"


# --- deadlines cover reaching the Space ------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    for c in accepted:
        c.close()
    sock.close()


async def _fails_within(url: str, error: type, bound: float, **kw: Any) -> float:
    start = time.monotonic()
    with pytest.raises(error):
        async for _ in Qwen_Qwen_2_5M.create_async_generator("", [{"role": "user", "content": "hi"}], space=url, **kw):
            pass
    took = time.monotonic() - start
    assert took < bound, f"gave up after {took:.1f} s"
    return took


async def test_a_silent_server_is_bounded_by_timeout(silent_server):
    forget_spaces()
    baseline = thread_count()
    bounded = {"timeout": 3, "connect_timeout": 5}  # the call's deadline comes first
    await _fails_within(silent_server, SpaceTimeoutError, 10, first_token_timeout=3, max_retries=0, **bounded)
    await _fails_within(silent_server, SpaceTimeoutError, 10, **bounded)  # retries fit in the same time
    await _fails_within(silent_server, SpaceUnavailableError, 10, connect_timeout=1, max_retries=0)
    # A call given up on leaves its request to end by itself, within its connect_timeout.
    assert settle_threads(baseline, within=20) <= baseline, "a worker outlived its connect_timeout"


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def test_retries_against_a_closed_port_stop_at_the_deadline(caplog):
    # Five retries with backoff 1 s would wait 1 + 2 + 4 + 8 + 16 s (times jitter): the call must
    # retry (a refused connection is transient) but stop when the 2 s deadline leaves no room.
    forget_spaces()
    caplog.set_level(logging.INFO, logger="qwen_space_adapter")
    await _fails_within(
        _closed_port(), (SpaceUnavailableError, SpaceTimeoutError), 6, timeout=2, max_retries=5, retry_backoff=1
    )
    retries = [r for r in caplog.records if r.getMessage().startswith("retrying after")]
    assert 1 <= len(retries) < 5, [r.getMessage() for r in retries]


class _Trickle(BaseHTTPRequestHandler):
    """A Gradio-looking server whose event stream trickles one byte a second."""

    config: ClassVar[dict[str, Any]] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/config"):
            self._json(self.config)
        elif self.path.startswith("/info"):
            self._json({"named_endpoints": {}, "unnamed_endpoints": {}})
        elif self.path.startswith("/queue/data"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            try:
                for _ in range(120):
                    self.wfile.write(b":")
                    self.wfile.flush()
                    time.sleep(1)
            except OSError:
                self.server.cut.set()  # type: ignore[attr-defined]
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        if "/queue/join" in self.path or "/run/predict" in self.path:
            self._json({"event_id": "e1"})
        else:
            self._json({"success": True})


@pytest.fixture
def trickle_server() -> Iterator[Any]:
    config = json.loads((PAGES / "hand-gradio4.json").read_text())
    config["root"] = ""
    handler = type("Handler", (_Trickle,), {"config": config})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.cut = threading.Event()  # type: ignore[attr-defined]
    config["root"] = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_a_trickling_stream_is_cut_when_the_turn_gives_up(trickle_server):
    forget_spaces()
    url = f"http://127.0.0.1:{trickle_server.server_address[1]}"
    fds = len(os.listdir("/proc/self/fd"))
    baseline = thread_count()
    await _fails_within(url, SpaceTimeoutError, 15, first_token_timeout=2, max_retries=0)
    assert trickle_server.cut.wait(10), "the reader's connection was left open"
    assert settle_threads(baseline) <= baseline
    assert len(os.listdir("/proc/self/fd")) <= fds + 1


# --- a Space redeployed while a process runs ---------------------------------------------------


async def test_a_redeployed_space_is_followed_and_an_orphaned_conversation_refused(qwen_replica_factory):
    first = qwen_replica_factory()
    port = int(first.url.rsplit(":", 1)[1])
    chat = Chat(first.url)
    await chat.ask("Start")
    first.close()
    # The same port, another page: a dropdown registered first shifts every fn index.
    qwen_replica_factory(ui="qwen-agent", agents=2, port=port)
    fresh = Chat(chat.url)
    text, _ = await fresh.ask("Hello again")  # the cached page no longer fits: read again, once
    assert text.startswith('You said: "Hello again". This is the first turn')
    with pytest.raises(SpaceRestartedError, match="Start a new conversation"):
        await chat.ask("Do you remember me?")


SHIFTED_APP = str(Path(__file__).with_name("apps") / "shifted_page.py")


async def test_a_new_conversation_after_a_redeploy_runs_only_the_new_pages_chat_chain(qwen_replica_factory):
    """The same port, a page whose chat chain moved two fn indices on: the old indices now name
    a `.change` handler and a button. A new conversation of the same process must be answered,
    and the new page must run its chat chain only (the server counts every step's calls)."""
    first = qwen_replica_factory(app=SHIFTED_APP)
    port = int(first.url.rsplit(":", 1)[1])
    old = Chat(first.url)
    await old.ask("Start")
    first.close()
    shifted = qwen_replica_factory(app=SHIFTED_APP, extra_args=["--shifted"], port=port)
    for i in range(2):  # the first new conversation reads the page again; the second uses it
        text, _ = await Chat(shifted.url).ask(f"Hello {i}")
        assert text.startswith(f'You said: "Hello {i}". This is the first turn'), text
    calls = httpx.get(f"{shifted.url}/calls", timeout=10).json()
    assert calls == {"add_text": 2, "predict": 2}, calls
    with pytest.raises(SpaceRestartedError, match="Start a new conversation"):
        await old.ask("Do you remember me?")
    assert httpx.get(f"{shifted.url}/calls", timeout=10).json() == calls, "a step ran for the orphan"


# --- closing a conversation, as a browser tab closes -------------------------------------------


@pytest.mark.parametrize("ui", [None, "gradio6"])
async def test_a_closed_conversation_frees_its_session_and_cannot_go_on(qwen_shared_replica, ui):
    replica = qwen_shared_replica(**({"ui": ui} if ui else {}))
    chat = Chat(replica.url)
    await chat.ask("Start")
    session_hash = chat.conversation.session_hash
    state = httpx.get(f"{replica.url}/replica/session", params={"session_hash": session_hash}, timeout=10).json()
    assert state == {"known": True, "closed": False}
    await Qwen_Qwen_2_5M.aclose_conversation(chat.conversation)
    state = httpx.get(
        f"{replica.url}/replica/session", params={"session_hash": session_hash, "closed_within": 10}, timeout=20
    ).json()
    assert state == {"known": True, "closed": True}, "the Space was not told the page closed"
    restored = JsonConversation.from_dict(json.loads(json.dumps(chat.conversation.get_dict())))
    with pytest.raises(InvalidRequestError, match="was closed"):
        Qwen_Qwen_2_5M.create_async_generator(
            "", [*chat.messages, {"role": "user", "content": "more"}], conversation=restored
        )
    await Qwen_Qwen_2_5M.aclose_conversation(restored)  # closing twice is no error, and sends nothing


# --- one conversation in two processes at once --------------------------------------------------

_OTHER_PROCESS = """
import json, sys
from qwen_space_adapter import JsonConversation, Qwen_Qwen_2_5M
conv = JsonConversation.from_dict(json.loads(sys.argv[2]))
try:
    Qwen_Qwen_2_5M.ask("long [[tokens=2000]] [[delay=0.01]]", space=sys.argv[1], conversation=conv, timeout=60)
except Exception as exc:
    print(type(exc).__name__)
"""


async def test_one_conversation_in_two_processes_at_once_fails_fast(qwen_replica_factory):
    """Saved and restored across processes, a conversation moves; used from two at the same
    moment, the Space hands each message to whichever reads first. The side that sees the other's
    answer says so at once (ConversationInUseError), instead of waiting out its timeout."""
    replica = qwen_replica_factory()
    chat = Chat(replica.url)
    await chat.ask("Start")
    saved = json.dumps(chat.conversation.get_dict())
    import subprocess
    import sys

    other = subprocess.Popen(
        [sys.executable, "-c", _OTHER_PROCESS, replica.url, saved], stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while not replica.stats()["active"] and time.monotonic() < deadline:
            time.sleep(0.05)  # a bound on a state the replica reports, polled
        assert replica.stats()["active"], "the other process never started its answer"
        with pytest.raises(ConversationInUseError, match="in use by another client"):
            await chat.ask("Me too [[tokens=2000]] [[delay=0.01]]", timeout=60)
    finally:
        other.kill()
        other.wait(10)
