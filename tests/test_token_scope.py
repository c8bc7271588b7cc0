"""The Hugging Face token stays home.

The environment's token (`$HF_TOKEN`, or the saved login) goes only to Hugging Face over https;
an explicit `hf_token=` goes where the caller says, but never in clear text to another machine;
and a token never shows in logs, outputs, reprs or errors, even at DEBUG level.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from qwen_space_adapter import InvalidRequestError, JsonConversation, Qwen_Qwen_2_5M, QwenSpaceError
from qwen_space_adapter.options import parse_options

CANARY = "hf_CanaryToken7f3a9c2e5b1d"
SAVED = "hf_SavedLoginToken0a1b2c3d4e"
SAY = [{"role": "user", "content": "Is my token safe?"}]


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("Qwen/Qwen2.5-1M-Demo", True),
        ("https://me-dup.hf.space", True),
        ("https://huggingface.co/spaces/me/dup", True),
        ("http://me-dup.hf.space", False),  # clear text
        ("http://127.0.0.1:7860", False),  # a local server is not Hugging Face
        ("https://example.org", False),
        ("https://hf.space.example.org", False),
        ("https://huggingface.co.example.org", False),
        ("https://example.org/x.hf.space", False),
    ],
)
def test_the_environment_token_goes_only_to_hugging_face_over_https(monkeypatch, url, sent):
    monkeypatch.setenv("HF_TOKEN", f"  {CANARY}\n")
    target = parse_options(None, {"space": url}).target
    assert target.token == (CANARY if sent else None)
    assert target.client_kwargs()["token"] == (CANARY if sent else False)


def test_an_explicit_token_goes_where_the_caller_says_but_not_in_clear_text(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    for url in ("https://example.org", "http://127.0.0.1:7860", "http://localhost:7860", "http://[::1]:7860"):
        assert parse_options(None, {"space": url, "hf_token": CANARY}).target.token == CANARY
    for url in ("http://example.org", "http://10.0.0.2:7860", "http://me-dup.hf.space"):
        with pytest.raises(InvalidRequestError, match="clear text") as info:
            parse_options(None, {"space": url, "hf_token": CANARY})
        assert CANARY not in str(info.value)


def test_tokens_are_stripped_and_bad_ones_refused_without_showing_them(monkeypatch):
    assert parse_options(None, {"space": "me/dup", "hf_token": f"\t{CANARY}\r\n"}).target.token == CANARY
    for bad in (f"{CANARY[:8]} {CANARY[8:]}", f"{CANARY}\x00", f"{CANARY}\u00e9", f"{CANARY}\u2028x"):
        with pytest.raises(InvalidRequestError) as info:
            parse_options(None, {"space": "me/dup", "hf_token": bad})
        assert CANARY[:8] not in str(info.value) and CANARY[8:] not in str(info.value)
    monkeypatch.setenv("HF_TOKEN", f"{CANARY}\nsecond-line")
    with pytest.raises(InvalidRequestError, match="HF_TOKEN has whitespace inside"):
        parse_options(None, {"space": "me/dup"})


class Recorder(http.server.BaseHTTPRequestHandler):
    """Records every request's headers and answers 404: a local server that is not Hugging Face."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: ClassVar[list[dict[str, str]]] = []
    handler = type("Handler", (Recorder,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def auth_headers(seen: list[dict[str, str]]) -> list[str]:
    return [v for headers in seen for k, v in headers.items() if "authorization" in k]


async def drain(**kwargs) -> None:
    async for _ in Qwen_Qwen_2_5M.create_async_generator("qwen-2.5-1m", SAY, max_retries=0, **kwargs):
        pass


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_local_server_gets_neither_the_env_token_nor_the_saved_login(recorder, monkeypatch, tmp_path):
    url, seen = recorder
    monkeypatch.setenv("HF_TOKEN", CANARY)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    (tmp_path / "token").write_text(SAVED)  # what `huggingface-cli login` saves
    with pytest.raises(QwenSpaceError):
        await drain(space=url)
    assert seen, "the call reached the local server"
    assert auth_headers(seen) == []
    assert not any(CANARY in v or SAVED in v for headers in seen for v in headers.values())


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_explicit_token_reaches_a_loopback_server_stripped(recorder, monkeypatch):
    url, seen = recorder
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(QwenSpaceError) as info:
        await drain(space=url, hf_token=f"{CANARY}\n")
    assert seen and set(auth_headers(seen)) == {f"Bearer {CANARY}"}
    assert CANARY not in str(info.value) and CANARY not in repr(info.value)


LOGGERS = ("httpx", "httpcore", "gradio_client", "qwen_space_adapter", "huggingface_hub", "")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_canary_token_never_shows_in_debug_logs_outputs_or_reprs(qwen_replica, caplog, capfd):
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)
    texts: list[str] = []
    items = []
    stream = Qwen_Qwen_2_5M.create_async_generator(
        "qwen-2.5-1m", SAY, space=qwen_replica.url, hf_token=f"{CANARY}\n", return_conversation=True
    )
    async for item in stream:
        items.append(item)
    answer = "".join(i for i in items if isinstance(i, str))
    assert answer.startswith('You said: "Is my token safe?"')
    conv = next(i for i in items if isinstance(i, JsonConversation))
    texts += [repr(i) for i in items] + [json.dumps(conv.get_dict())]
    opts = parse_options(None, {"space": qwen_replica.url, "hf_token": CANARY})
    texts += [repr(opts), str(opts), repr(opts.target)]
    # A failure on the way must not show it either.
    with pytest.raises(QwenSpaceError) as info:
        async for _ in Qwen_Qwen_2_5M.create_async_generator(
            "qwen-2.5-1m",
            [{"role": "user", "content": "[[fault:error-mid-stream]] go"}],
            space=qwen_replica.url,
            hf_token=CANARY,
            max_retries=0,
        ):
            pass
    texts += [str(info.value), repr(info.value), str(info.value.__cause__), str(info.value.__context__)]
    out, err = capfd.readouterr()
    texts += [caplog.text, out, err]
    assert any("HTTP Request" in r.getMessage() for r in caplog.records), "httpx DEBUG/INFO logs were captured"
    assert any(r.name.startswith("httpcore") for r in caplog.records), "httpcore DEBUG logs were captured"
    for text in texts:
        assert CANARY not in text and CANARY[3:15] not in text


# Issue 19, item 5: the saved login is honoured for Hugging Face over https, and nowhere else.
@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("me/dup", True),
        ("https://me-dup.hf.space", True),
        ("http://me-dup.hf.space", False),
        ("http://127.0.0.1:7860", False),
        ("http://localhost:7860", False),
        ("https://example.org", False),
    ],
)
def test_the_saved_login_goes_to_hugging_face_over_https_only_and_stripped(monkeypatch, tmp_path, url, sent):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
    monkeypatch.delenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    (tmp_path / "token").write_text(f"{SAVED}\n")  # as `huggingface-cli login` leaves it
    target = parse_options(None, {"space": url}).target
    assert target.token == (SAVED if sent else None)
    assert target.client_kwargs()["token"] == (SAVED if sent else False)


def test_the_environment_token_wins_over_the_saved_login_and_a_token_path_is_read(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HOME", raising=False)
    (tmp_path / "elsewhere").write_text(f"\t{SAVED}\r\n")
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert parse_options(None, {"space": "me/dup"}).target.token == SAVED
    monkeypatch.setenv("HF_TOKEN", f"{CANARY}\n")
    assert parse_options(None, {"space": "me/dup"}).target.token == CANARY
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    assert parse_options(None, {"space": "me/dup"}).target.token is None


def test_a_token_given_to_a_target_directly_is_stripped():
    from qwen_space_adapter.target import SpaceTarget

    assert SpaceTarget(url="https://me-dup.hf.space", token=f"{CANARY}\n").token == CANARY
    assert SpaceTarget(url="https://me-dup.hf.space", token="\n").token is None


# Issue 19, item 2: the Hub lookup after a failure sends the token only to Hugging Face over https.
@pytest.fixture
def mirror() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A Hub mirror on another loopback address that says every Space is sleeping."""
    from tests.fakespace import fake_space

    with fake_space("127.0.0.2") as hub:
        runtime = {"stage": "SLEEPING", "hardware": {"current": None, "requested": None}}
        hub.serve_json("/api/spaces/me/dup/runtime", runtime)
        yield hub.url, hub.seen


def _stage_error(monkeypatch, endpoint: str, tmp_path, **kwargs: str):
    import huggingface_hub.constants

    from qwen_space_adapter import failures

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    # huggingface_hub read $HF_ENDPOINT at import: point its default there too, so that even an
    # adapter that fell back on it would ask the loopback mirror, never the real Hub.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setenv("HF_TOKEN", CANARY)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    (tmp_path / "token").write_text(f"{SAVED}\n")
    target = parse_options(None, {"space": "me/dup", **kwargs}).target
    assert target.token  # the Space itself (on *.hf.space over https) would get one
    return failures.stage_error(target)


def test_a_hub_mirror_gets_no_token_and_the_message_names_it(monkeypatch, mirror, tmp_path):
    url, seen = mirror
    err = _stage_error(monkeypatch, url, tmp_path, hf_token=CANARY)
    assert err is not None and err.retryable
    assert "127.0.0.2" in str(err) and "huggingface.co" not in str(err)
    assert [r["path"] for r in seen] == ["/api/spaces/me/dup/runtime"]
    assert auth_headers([r["headers"] for r in seen]) == []
    assert not any(CANARY in v or SAVED in v for r in seen for v in r["headers"].values())


def test_a_mirror_the_caller_trusts_gets_the_token(monkeypatch, mirror, tmp_path):
    url, seen = mirror
    monkeypatch.setenv("QWEN_SPACE_HUB_TOKEN", "1")
    assert _stage_error(monkeypatch, url, tmp_path) is not None
    assert set(auth_headers([r["headers"] for r in seen])) == {f"Bearer {CANARY}"}


def test_the_hub_token_rule():
    from qwen_space_adapter.target import hub_token

    assert hub_token(CANARY, "https://huggingface.co") == CANARY
    for endpoint in ("http://huggingface.co", "https://hf-mirror.com", "http://127.0.0.2:8000"):
        assert hub_token(CANARY, endpoint) is None


def test_an_opted_in_mirror_still_gets_no_token_in_clear_text_to_another_machine(monkeypatch):
    from qwen_space_adapter.target import hub_token

    monkeypatch.setenv("QWEN_SPACE_HUB_TOKEN", "1")
    assert hub_token(CANARY, "https://hf-mirror.com") == CANARY
    assert hub_token(CANARY, "http://127.0.0.2:8000") == CANARY
    assert hub_token(CANARY, "http://hf-mirror.com") is None
