"""Every plain request has a total deadline (issue 19, item 8).

httpx's timeouts bound each read: a server that sends a byte every 0.1 s keeps a request alive for
ever, and with it a thread, a socket and (for the config) the per-Space lock. With a total
deadline of `connect_timeout`, the request fails as a timeout, and its thread and socket end.
Each test trickles from a real server on loopback through the real gradio_client; the asserts are
on outcomes (error type, threads and descriptors back, the server saw the disconnect), not times.
"""

from __future__ import annotations

import os

import httpx
import pytest
from threadcount import settle_threads, thread_count

from qwen_space_adapter import Qwen_Qwen_2_5M, SpaceTimeoutError, SpaceUnavailableError, clients, config_cache, target
from qwen_space_adapter import _gc_internals as gci
from tests.fakespace import fake_space, page_config

SAY = [{"role": "user", "content": "Take your time."}]


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def fresh_cache():
    config_cache.forget_spaces()
    yield
    config_cache.forget_spaces()


async def drain(url: str) -> None:
    # The caller's own deadline (timeout=) is far longer than connect_timeout: what ends the
    # request must be the request's deadline, which gives SpaceUnavailableError, not the caller's.
    stream = Qwen_Qwen_2_5M.create_async_generator(
        "qwen-2.5-1m", SAY, space=url, max_retries=0, connect_timeout=1, timeout=30
    )
    async for _ in stream:
        pass


@pytest.mark.anyio
@pytest.mark.parametrize("route", ["/config", "/info", "/run/predict"])  # the page's first step is unqueued
async def test_a_trickling_request_ends_at_its_deadline_with_its_thread_and_socket(route):
    with fake_space() as space:
        space.serve_page(page_config())
        space.routes[route] = lambda handler: handler.trickle(0.1)
        threads, descriptors = thread_count(), fds()
        with pytest.raises(SpaceUnavailableError, match="did not answer in time") as info:
            await drain(space.url)
        assert not isinstance(info.value, SpaceTimeoutError)
        assert route in space.paths()
        assert space.disconnected.wait(10), "the server never saw the client go"
        assert settle_threads(threads) <= threads
        assert fds() <= descriptors


def test_the_deadline_is_total_not_per_read():
    """A bare request with the adapter's kwargs: 20 reads of 0.1 s each would each pass a 1 s
    read timeout; the total of 1 s ends the request as httpx's ReadTimeout."""
    with fake_space() as space:
        space.routes["/slow"] = lambda handler: handler.trickle(0.1)
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{space.url}/slow", timeout=httpx.Timeout(1.0), auth=gci.Deadline(1.0))
        assert space.disconnected.wait(10)


def test_the_reader_stream_has_no_total_deadline():
    """The SSE reader may stream for as long as an answer lasts: only its idle read timeout."""
    kwargs = clients.client_kwargs(target.SpaceTarget(url="http://127.0.0.1:1"), 1.0)
    assert isinstance(kwargs["httpx_kwargs"]["auth"], gci.Deadline)

    class Owner:
        ssl_verify = False
        reader_timeout = httpx.Timeout(60.0)
        reader_ended = False

        def __init__(self) -> None:
            self.reader_transports: list[gci.ShuttableTransport] = []

        def refuse(self, error):
            pass

    reader = gci._ReaderKwargs(kwargs["httpx_kwargs"], Owner()).copy()  # type: ignore[arg-type]
    assert "auth" not in reader
