"""Nothing leaves the origin the caller named (issue 19, items 1, 3 and 14).

A Space's config decides gradio_client's later URLs (`api_prefix`), and a config claiming an old
Gradio makes it post the whole config to a Hugging Face service. Each test runs the real adapter
and gradio_client against hand-driven servers on loopback; the "other host" is 127.0.0.2 (or .3),
which records what reaches it and must receive nothing.
"""

from __future__ import annotations

import threading

import gradio_client.utils
import pytest

from qwen_space_adapter import APIChangedError, Qwen_Qwen_2_5M, config_cache
from qwen_space_adapter import _gc_internals as gci
from qwen_space_adapter.options import parse_options
from tests.fakespace import fake_space, page_config

CANARY = "hf_CanaryToken7f3a9c2e5b1d"
SAY = [{"role": "user", "content": "Where does my token go?"}]


async def drain(**kwargs: object) -> None:
    async for _ in Qwen_Qwen_2_5M.create_async_generator("qwen-2.5-1m", SAY, max_retries=0, **kwargs):
        pass


@pytest.fixture(autouse=True)
def fresh_cache():
    config_cache.forget_spaces()
    yield
    config_cache.forget_spaces()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "prefix",
    ["http://{other}/gradio_api", "https://{other}/gradio_api", "http://{other}"],
    ids=["absolute", "https", "bare-host"],
)
async def test_a_config_pointing_elsewhere_is_refused_and_the_other_host_gets_nothing(prefix):
    with fake_space("127.0.0.1") as space, fake_space("127.0.0.2") as other:
        other_host = other.url.split("//", 1)[1]
        space.serve_page(page_config(api_prefix=prefix.format(other=other_host)))
        with pytest.raises(APIChangedError) as info:
            await drain(space=space.url, hf_token=CANARY, timeout=20)
        assert "127.0.0.2" in str(info.value)
        assert CANARY not in str(info.value)
        assert other.seen == []
        assert space.paths() and set(space.paths()) == {"/config"}


@pytest.mark.anyio
async def test_another_port_on_the_same_host_is_another_origin():
    with fake_space("127.0.0.1") as space, fake_space("127.0.0.1") as other:
        space.serve_page(page_config(api_prefix=f"{other.url}/gradio_api"))
        with pytest.raises(APIChangedError, match=str(other.server_address[1])):
            await drain(space=space.url, hf_token=CANARY, timeout=20)
        assert other.seen == []


def test_every_url_the_adapter_derives_is_checked():
    src = "http://127.0.0.1:7860/"
    assert gci.check_same_origin(src, "http://127.0.0.1:7860/gradio_api/upload")
    assert gci.check_same_origin(src, "ws://127.0.0.1:7860/queue/join")
    assert gci.check_same_origin("https://me-dup.hf.space/", "https://me-dup.hf.space:443/x")
    for elsewhere in (
        "http://127.0.0.2:7860/x",
        "https://127.0.0.1:7860/x",
        "http://127.0.0.1:7861/x",
        "http://localhost:7860/x",
        "http://127.0.0.1:7860@127.0.0.2/x",
    ):
        with pytest.raises(APIChangedError):
            gci.check_same_origin(src, elsewhere)


@pytest.mark.anyio
async def test_an_old_gradio_page_is_refused_before_its_config_goes_to_the_api_fetcher(monkeypatch):
    with fake_space("127.0.0.1") as space, fake_space("127.0.0.3") as fetcher:
        # Where gradio_client would post the config: pointed at a loopback recorder, so that a
        # broken adapter sends nothing off this machine either.
        monkeypatch.setattr(gradio_client.utils, "SPACE_FETCHER_URL", f"{fetcher.url}/api")
        space.serve_page(page_config(version="3.36.1", protocol="sse"))
        with pytest.raises(APIChangedError, match=r"Gradio 3\.36\.1") as info:
            await drain(space=space.url, hf_token=CANARY, timeout=20)
        assert "4.0" in str(info.value)
        assert fetcher.seen == []
        assert set(space.paths()) == {"/config"}


def test_a_page_without_a_version_is_refused_too(monkeypatch):
    with fake_space("127.0.0.1") as space, fake_space("127.0.0.3") as fetcher:
        monkeypatch.setattr(gradio_client.utils, "SPACE_FETCHER_URL", f"{fetcher.url}/api")
        config = page_config()
        del config["version"]
        space.serve_page(config)
        target = parse_options(None, {"space": space.url}).target
        with pytest.raises(APIChangedError, match="unknown version"):
            config_cache._fetch_info(target, connect_timeout=10)
        assert fetcher.seen == []


def test_the_config_fetching_client_opens_no_heartbeat(mocker):
    with fake_space("127.0.0.1") as space:
        space.serve_page(page_config(connect_heartbeat=True))
        targets = []
        start = threading.Thread.start

        def record(thread: threading.Thread) -> None:
            targets.append(getattr(thread, "_target", None))  # a thread drops it once it ran
            start(thread)

        mocker.patch.object(threading.Thread, "start", autospec=True, side_effect=record)
        target = parse_options(None, {"space": space.url}).target
        info = config_cache._fetch_info(target, connect_timeout=10)
        assert targets, "the recorder saw the client's threads start"
        assert gradio_client.Client._stream_heartbeat not in targets
        assert info.config["connect_heartbeat"] is False  # nor will any client built from it
        assert not any("heartbeat" in p for p in space.paths())
        assert space.paths() == ["/config", "/info"]


def test_no_host_but_the_spaces_is_looked_up_when_its_page_is_read(monkeypatch):
    """huggingface_hub 2.x fetches a list of AI agents from `$HF_ENDPOINT` the first time a
    process builds Hub headers, as gradio_client does for every client: a turn against a local
    Space must resolve no other host (here: a fresh process's registry, with no cached copy)."""
    registry = pytest.importorskip("huggingface_hub.utils._detect_agent")
    import socket

    import huggingface_hub.constants

    monkeypatch.setattr(registry, "_registry", None)
    monkeypatch.setattr(huggingface_hub.constants, "AGENT_HARNESSES_PATH", "/nonexistent/agent-harnesses.json")
    hosts: list[str] = []
    resolve = socket.getaddrinfo

    def recorded(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        hosts.append(str(host))
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recorded)
    with fake_space("127.0.0.1") as space:
        space.serve_page(page_config())
        target = parse_options(None, {"space": space.url}).target
        config_cache._fetch_info(target, connect_timeout=10)
    assert hosts and set(hosts) == {"127.0.0.1"}, hosts
