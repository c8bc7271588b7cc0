"""The one error table (failures.py): each row, and what no row explains."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError, TooManyRequestsError

from qwen_space_adapter import (
    AdapterBugError,
    APIChangedError,
    InvalidRequestError,
    QueueFullError,
    RateLimitedError,
    SpaceAppError,
    SpaceUnavailableError,
    StreamInterruptedError,
)
from qwen_space_adapter.failures import ROWS, app_error, is_config_mismatch, translate

URL = "https://x.hf.space"


def response(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", URL))


@pytest.mark.parametrize(
    ("raised", "expected", "words"),
    [
        (httpx.ConnectError("refused"), SpaceUnavailableError, "Could not connect"),
        (httpx.ReadTimeout("slow"), SpaceUnavailableError, "did not answer in time"),
        (httpx.RemoteProtocolError("eof"), SpaceUnavailableError, "connection"),
        (
            httpx.HTTPStatusError("x", request=response(503).request, response=response(503)),
            SpaceUnavailableError,
            "sleeping, paused, building",
        ),
        (
            httpx.HTTPStatusError("x", request=response(429).request, response=response(429)),
            RateLimitedError,
            "rate limiting",
        ),
        (
            httpx.HTTPStatusError("x", request=response(401).request, response=response(401)),
            SpaceUnavailableError,
            "hf_token",
        ),
        (
            httpx.HTTPStatusError("x", request=response(403).request, response=response(403)),
            SpaceUnavailableError,
            "private or gated",
        ),
        (
            httpx.HTTPStatusError("x", request=response(404).request, response=response(404)),
            APIChangedError,
            "re-reads its config",
        ),
        (ValueError(f"Could not fetch config for {URL}"), SpaceUnavailableError, "not serving"),
        (ValueError(f"Could not get Gradio config from: {URL}"), SpaceUnavailableError, "not with a Gradio app"),
        (httpx.UnsupportedProtocol("a://"), InvalidRequestError, "check space=, proxy="),
        (UnicodeEncodeError("latin-1", "\u20ac", 0, 1, "x"), InvalidRequestError, "cannot carry"),
        (httpx.ProxyError("socks"), SpaceUnavailableError, "proxy"),
        (IndexError("list index out of range"), APIChangedError, "no longer has the step"),
    ],
)
def test_connect_errors(raised, expected, words):
    err = translate(raised, URL)
    assert type(err) is expected and words in str(err)


def test_what_no_row_explains_is_named_as_a_bug_not_an_api_change():
    err = translate(ValueError("something odd"), URL)
    assert type(err) is AdapterBugError and "bug in the adapter" in str(err) and "ValueError" in str(err)
    assert type(translate(KeyError("dependencies"), URL)) is AdapterBugError


def test_retryable_only_where_a_retry_can_help():
    def status(code):
        return httpx.HTTPStatusError("x", request=response(code).request, response=response(code))

    assert not translate(status(401), URL).retryable
    assert translate(ValueError(f"Could not fetch config for {URL}"), URL).retryable
    assert not translate(httpx.ProxyError("socks"), URL).retryable
    assert not translate(httpx.UnsupportedProtocol("a://"), URL).retryable


def test_config_mismatches_are_told_apart():
    assert is_config_mismatch(translate(IndexError("list index out of range"), URL))
    assert is_config_mismatch(app_error("'Expected 3 inputs, got 2'"))
    assert not is_config_mismatch(app_error("'The model failed.'"))
    assert not is_config_mismatch(translate(httpx.ConnectError("refused"), URL))


def test_every_row_is_reachable():
    # Each row must be the first match for at least one of the cases above or below.
    cases = [
        SpaceAppError("x"),
        httpx.UnsupportedProtocol("a://"),
        httpx.ConnectError("refused"),
        httpx.ProxyError("p"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("eof"),
        httpx.WriteError("w"),
        QueueError("full"),
        TooManyRequestsError("slow down"),
        httpx.HTTPStatusError("x", request=response(401).request, response=response(401)),
        httpx.HTTPStatusError("x", request=response(404).request, response=response(404)),
        httpx.HTTPStatusError("x", request=response(503).request, response=response(503)),
        ValueError(f"Could not get Gradio config from: {URL}"),
        AppError("boom"),
        IndexError("list index out of range"),
        __import__("ssl").SSLError("bad cert"),
        concurrent.futures.CancelledError(),
    ]
    from gradio_client.exceptions import ValidationError

    cases.append(ValidationError("bad input"))
    hit = set()
    for exc in cases:
        text = str(exc)
        for row in ROWS:
            if row.match(exc, text, __import__("qwen_space_adapter.failures", fromlist=["_status"])._status(exc, text)):
                hit.add(row.name)
                break
    assert {row.name for row in ROWS} - hit == set()


@pytest.mark.parametrize(
    ("raised", "expected", "words"),
    [
        (QueueError("Queue is full! Please try again."), QueueFullError, "is full"),
        (TooManyRequestsError("slow down"), RateLimitedError, "rate limiting"),
        (AppError("boom"), SpaceAppError, "boom"),
        (AppError("You have exceeded your GPU quota (60s left)."), RateLimitedError, "GPU quota"),
        (concurrent.futures.CancelledError(), StreamInterruptedError, "ended before the answer"),
        (ValueError("Server stopped."), StreamInterruptedError, "ended before the answer"),
        (httpx.ConnectError("refused"), SpaceUnavailableError, "Could not connect"),
    ],
)
def test_job_errors(raised, expected, words):
    err = translate(raised, URL)
    assert type(err) is expected and words in str(err)


def test_app_error_takes_off_gradio_4s_repr_quotes():
    assert app_error("'It broke.'").space_message == "It broke."
    assert app_error('"it\'s"').space_message == "it's"
    assert app_error("'unbalanced").space_message == "'unbalanced"


def test_app_error_without_a_message_says_what_to_do():
    err = app_error(None)
    assert isinstance(err, SpaceAppError) and "Retry" in str(err) and err.space_message is None


class _Runtime:
    def __init__(self, stage: str) -> None:
        self.stage = stage


@pytest.mark.parametrize(
    ("stage", "words", "retryable"),
    [
        ("SLEEPING", "is sleeping", True),
        ("PAUSED", "paused by its owner", False),
        ("BUILDING", "is building", True),
        ("APP_STARTING", "is starting", True),
        ("RUNTIME_ERROR", "is broken (RUNTIME_ERROR)", False),
    ],
)
def test_a_space_that_does_not_serve_says_why(mocker, monkeypatch, stage, words, retryable):
    from qwen_space_adapter import config_cache
    from qwen_space_adapter.target import SpaceTarget

    monkeypatch.delenv("HF_ENDPOINT", raising=False)  # the Hub itself: the token may go there
    hub = mocker.patch("huggingface_hub.HfApi.get_space_runtime", return_value=_Runtime(stage))
    target = SpaceTarget(url="http://127.0.0.1:9", token="hf_x", space_id="owner/space")
    with pytest.raises(SpaceUnavailableError) as info:
        config_cache._fetch_info(target)
    assert words in str(info.value) and info.value.retryable is retryable
    hub.assert_called_once_with("owner/space", token="hf_x")


def test_the_hub_is_not_asked_for_a_plain_url(mocker):
    from qwen_space_adapter import config_cache
    from qwen_space_adapter.target import SpaceTarget

    hub = mocker.patch("huggingface_hub.get_space_runtime")
    with pytest.raises(SpaceUnavailableError, match="Could not connect"):
        config_cache._fetch_info(SpaceTarget(url="http://127.0.0.1:9"))
    assert hub.call_count == 0


def test_space_ids_are_kept_for_the_hub():
    from qwen_space_adapter.options import parse_options

    assert parse_options(None, {"space": "me/dup"}).target.space_id == "me/dup"
    assert parse_options(None, {}).target.space_id in ("Qwen/Qwen2.5-1M-Demo", None)
    assert parse_options(None, {"space": "http://127.0.0.1:9"}).target.space_id is None


def test_the_hub_is_not_asked_around_a_proxy(mocker):
    from qwen_space_adapter import failures
    from qwen_space_adapter.target import SpaceTarget

    hub = mocker.patch("huggingface_hub.get_space_runtime", return_value=_Runtime("SLEEPING"))
    target = SpaceTarget(url="http://127.0.0.1:9", space_id="owner/space", proxy="http://127.0.0.1:9")
    assert failures.stage_error(target) is None
    assert hub.call_count == 0
