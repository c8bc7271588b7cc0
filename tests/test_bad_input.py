"""Bad input is refused at the call, before any request; secrets never show; TLS stays on."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import pytest

from qwen_space_adapter import (
    InvalidRequestError,
    JsonConversation,
    ModelNotSupportedError,
    Qwen_Qwen_2_5M,
    QwenSpaceError,
    SpaceUnavailableError,
    ending,
    workers,
)
from qwen_space_adapter.messages import MAX_PROMPT_CHARS
from qwen_space_adapter.options import MAX_FILE_BYTES, parse_options

OK = [{"role": "user", "content": "hi"}]
URL = "http://127.0.0.1:9"


@pytest.fixture
def files(tmp_path):
    text = tmp_path / "doc.txt"
    text.write_text("hello")
    binary = tmp_path / "img.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 au lait, d\xe9j\xe0 vu".encode("latin-1") * 10)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)
    return {
        "text": text,
        "binary": binary,
        "latin": latin,
        "empty": empty,
        "huge": huge,
        "dir": tmp_path,
        "missing": tmp_path / "nope.txt",
    }


def bad_calls(f):
    """(name, kwargs for create_async_generator, error type, words the message must contain)."""
    return [
        ("messages not a list", {"messages": "hi"}, InvalidRequestError, "list of"),
        ("messages None", {"messages": None}, InvalidRequestError, "list of"),
        ("empty messages", {"messages": []}, InvalidRequestError, "empty"),
        ("message not a dict", {"messages": ["hi"]}, InvalidRequestError, "messages[0]"),
        ("unknown role", {"messages": [{"role": "bot", "content": "x"}]}, InvalidRequestError, "role 'bot'"),
        ("missing role", {"messages": [{"content": "x"}]}, InvalidRequestError, "role None"),
        ("missing content", {"messages": [{"role": "user"}]}, InvalidRequestError, "no 'content'"),
        ("content a number", {"messages": [{"role": "user", "content": 5}]}, InvalidRequestError, "content"),
        (
            "content part an image",
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            InvalidRequestError,
            "content[0]",
        ),
        (
            "no user message",
            {"messages": [{"role": "system", "content": "be nice"}]},
            InvalidRequestError,
            "last message",
        ),
        (
            "last message from assistant",
            {"messages": [*OK, {"role": "assistant", "content": "hey"}]},
            InvalidRequestError,
            "messages[1]",
        ),
        ("empty user message", {"messages": [{"role": "user", "content": "  "}]}, InvalidRequestError, "empty"),
        (
            "huge prompt",
            {"messages": [{"role": "user", "content": "x" * (MAX_PROMPT_CHARS + 1)}]},
            InvalidRequestError,
            "4,000,000",
        ),
        ("unknown model", {"model": "gpt-4"}, ModelNotSupportedError, "qwen-2.5-1m"),
        ("missing attachment", {"files": [f["missing"]]}, InvalidRequestError, "does not exist"),
        ("directory attachment", {"files": [f["dir"]]}, InvalidRequestError, "directory"),
        ("binary attachment", {"files": [f["binary"]]}, InvalidRequestError, "binary"),
        ("non-UTF-8 attachment", {"files": [f["latin"]]}, InvalidRequestError, "UTF-8"),
        ("empty attachment", {"files": [f["empty"]]}, InvalidRequestError, "empty"),
        ("attachment over the limit", {"files": [f["huge"]]}, InvalidRequestError, "limit"),
        ("attachment not a path", {"files": [42]}, InvalidRequestError, "file paths"),
        ("files not a list", {"files": 42}, InvalidRequestError, "list of file paths"),
        ("negative timeout", {"timeout": -1}, InvalidRequestError, "timeout"),
        ("zero idle timeout", {"idle_timeout": 0}, InvalidRequestError, "idle_timeout"),
        ("infinite first-token timeout", {"first_token_timeout": float("inf")}, InvalidRequestError, "at most 86400"),
        ("NaN timeout", {"timeout": float("nan")}, InvalidRequestError, "positive"),
        ("astronomic idle timeout", {"idle_timeout": 10**400}, InvalidRequestError, "at most 86400"),
        ("timeout over a day", {"timeout": 86401}, InvalidRequestError, "timeout must be at most"),
        ("timeout as text", {"timeout": "10"}, InvalidRequestError, "number of seconds"),
        ("zero connect timeout", {"connect_timeout": 0}, InvalidRequestError, "connect_timeout"),
        ("no connect timeout", {"connect_timeout": None}, InvalidRequestError, "connect_timeout"),
        ("negative retries", {"max_retries": -1}, InvalidRequestError, "max_retries"),
        ("too many retries", {"max_retries": 11}, InvalidRequestError, "from 0 to 10"),
        ("huge retry backoff", {"retry_backoff": 3600}, InvalidRequestError, "retry_backoff must be at most 60"),
        ("bad space", {"space": "not a space"}, InvalidRequestError, "Space id"),
        ("empty space", {"space": ""}, InvalidRequestError, "space must be"),
        ("space 0", {"space": 0}, InvalidRequestError, "space must be"),
        ("space False", {"space": False}, InvalidRequestError, "space must be"),
        ("space URL without a host", {"space": "http://"}, InvalidRequestError, "the URL has no host"),
        ("space without a scheme", {"space": "127.0.0.1:8765"}, InvalidRequestError, "space='http://127.0.0.1:8765'"),
        ("space with another scheme", {"space": "ftp://example.org"}, InvalidRequestError, "http(s) URL"),
        ("bad proxy", {"proxy": "localhost"}, InvalidRequestError, "proxy"),
        ("proxy without a host", {"proxy": "a://"}, InvalidRequestError, "proxy has the scheme a"),
        ("proxy of another scheme", {"proxy": "ftp://proxy:21"}, InvalidRequestError, "proxy has the scheme"),
        ("http proxy without a host", {"proxy": "http://"}, InvalidRequestError, "proxy has no host"),
        (
            "lone surrogate",
            {"messages": [{"role": "user", "content": "ab\ud800cd"}]},
            InvalidRequestError,
            "messages[0].content has a lone surrogate (U+D800) at character 2",
        ),
        (
            "lone surrogate in a part",
            {"messages": [{"role": "user", "content": ["ok", {"text": "x\udfff"}]}]},
            InvalidRequestError,
            "messages[0].content[1].text has a lone surrogate",
        ),
        ("token with a newline inside", {"hf_token": "hf_abc\ndef"}, InvalidRequestError, "whitespace inside"),
        ("token not ASCII", {"hf_token": "hf_abc\u00e9"}, InvalidRequestError, "cannot be sent in an HTTP header"),
        (
            "token with a control character",
            {"hf_token": "hf_abc\x07"},
            InvalidRequestError,
            "cannot be sent in an HTTP header",
        ),
        (
            "token in clear text to another host",
            {"hf_token": "hf_abc", "space": "http://example.org"},
            InvalidRequestError,
            "clear text over http to example.org",
        ),
        ("verify not a bool", {"verify": "no"}, InvalidRequestError, "verify"),
        ("misspelled option", {"timout": 5}, InvalidRequestError, "timout"),
        ("conversation of the wrong type", {"conversation": 42}, InvalidRequestError, "JsonConversation"),
        (
            "conversation without a session",
            {"conversation": JsonConversation(chatbot=[])},
            InvalidRequestError,
            "session_hash",
        ),
        (
            "conversation with a bad session",
            {"conversation": {"session_hash": "../../etc"}},
            InvalidRequestError,
            "session_hash",
        ),
        (
            "conversation with a bad chatbot",
            {"conversation": {"session_hash": "abcdef123456", "chatbot": "x"}},
            InvalidRequestError,
            "chatbot",
        ),
        (
            "conversation from another Space",
            {"conversation": {"session_hash": "abcdef123456", "space": "https://other.hf.space"}},
            InvalidRequestError,
            "belongs to",
        ),
        ("empty hf_token", {"hf_token": ""}, InvalidRequestError, "hf_token"),
    ]


def test_every_bad_call_is_refused_before_any_request(files, mocker):
    # "Before any request" means before any work that could lead to one: no connection, no name
    # lookup, and no thread started (the adapter runs its blocking requests on threads, so a check
    # made after starting the config fetch would pass a connect-only test by luck of timing).
    cases = bad_calls(files)
    assert len(cases) >= 25 and len({name for name, *_ in cases}) == len(cases)
    # The mocks are process-wide: turns of earlier tests must have ended first (their endings run
    # in the background and make requests of their own).
    assert ending.wait_all(30.0) and _workers_idle(), "an earlier test's turn is still ending"
    connect = mocker.patch.object(socket.socket, "connect", side_effect=AssertionError("network used"))
    lookup = mocker.patch.object(socket, "getaddrinfo", side_effect=AssertionError("name looked up"))
    thread = mocker.patch.object(threading.Thread, "start", side_effect=AssertionError("thread started"))
    for name, kwargs, error, words in cases:
        call = {"model": "qwen-2.5-1m", "messages": OK, "space": URL, **kwargs}
        with pytest.raises(error) as info:
            Qwen_Qwen_2_5M.create_async_generator(**call)
        assert isinstance(info.value, QwenSpaceError) and isinstance(info.value, ValueError), name
        assert words in str(info.value), (name, str(info.value))
    assert (connect.call_count, lookup.call_count, thread.call_count) == (0, 0, 0)


@pytest.fixture
def unreadable(tmp_path):
    """A regular file whose read fails, for any user: root reads a mode-000 file anyway."""
    if os.geteuid() != 0:
        path = tmp_path / "secret.txt"
        path.write_text("x")
        path.chmod(0)
        return path
    mem = "/proc/self/mem"  # a regular file; reading offset 0 (unmapped) fails with EIO
    try:
        with open(mem, "rb") as fh:
            fh.read(1)
    except OSError:
        return mem
    pytest.skip("running as root, and no file on this system refuses reading (/proc/self/mem reads)")


def test_unreadable_attachment_is_refused(unreadable, mocker):
    connect = mocker.patch.object(socket.socket, "connect", side_effect=AssertionError("network used"))
    with pytest.raises(InvalidRequestError, match="cannot be read"):
        Qwen_Qwen_2_5M.create_async_generator("qwen-2.5-1m", OK, space=URL, files=[unreadable])
    assert connect.call_count == 0


def test_socks_proxy_needs_socksio():
    import importlib.util

    if importlib.util.find_spec("socksio") is not None:
        assert parse_options("socks5://127.0.0.1:1080", {"space": URL}).target.proxy == "socks5://127.0.0.1:1080"
    else:
        with pytest.raises(InvalidRequestError, match=r"httpx\[socks\]"):
            parse_options("socks5://127.0.0.1:1080", {"space": URL})


def test_model_aliases_and_default():
    assert Qwen_Qwen_2_5M.get_model("qwen-2.5-1m") == "qwen-2.5-1m-demo"
    assert Qwen_Qwen_2_5M.get_model("") == Qwen_Qwen_2_5M.default_model
    assert Qwen_Qwen_2_5M.get_model("qwen-2.5-1m-demo") == "qwen-2.5-1m-demo"


def test_documented_attributes():
    p = Qwen_Qwen_2_5M
    assert p.label == "Qwen Qwen-2.5M"
    assert p.url == "https://qwen-qwen2-5-1m-demo.hf.space"
    assert p.api_endpoint.startswith(p.url)
    assert p.working and p.supports_stream and p.supports_system_message and p.supports_message_history
    assert p.default_model == "qwen-2.5-1m-demo" and p.model_aliases == {"qwen-2.5-1m": "qwen-2.5-1m-demo"}
    assert p.default_model in p.models


SECRET = "hf_SuperSecretToken1234567890"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_token_never_appears_in_errors_logs_or_reprs(caplog, capsys):
    caplog.set_level(logging.DEBUG)
    opts = parse_options(None, {"space": URL, "hf_token": SECRET})
    assert opts.target.token == SECRET
    assert SECRET not in repr(opts) and SECRET not in str(opts.target)
    with pytest.raises(SpaceUnavailableError) as info:
        async for _ in Qwen_Qwen_2_5M.create_async_generator(
            "qwen-2.5-1m", OK, space=URL, hf_token=SECRET, max_retries=1, retry_backoff=0.01
        ):
            pass
    out = capsys.readouterr()
    texts = [str(info.value), repr(info.value), caplog.text, out.out, out.err]
    assert all(SECRET not in t for t in texts)
    assert all(SECRET[3:15] not in t for t in texts)


def test_tls_verification_stays_on_unless_turned_off():
    import ssl

    on = parse_options(None, {"space": "https://x.hf.space"}).target.client_kwargs()["ssl_verify"]
    assert isinstance(on, ssl.SSLContext)
    assert on.verify_mode == ssl.CERT_REQUIRED and on.check_hostname
    off = parse_options(None, {"space": "https://x.hf.space", "verify": False})
    assert off.target.client_kwargs()["ssl_verify"] is False


def test_space_ids_map_to_their_direct_url(monkeypatch):
    from qwen_space_adapter.target import space_url

    assert space_url("Qwen/Qwen2.5-1M-Demo") == Qwen_Qwen_2_5M.url
    assert space_url("me/my_copy.v2") == "https://me-my-copy-v2.hf.space"
    monkeypatch.setenv("QWEN_SPACE", "me/dup")
    assert parse_options(None, {}).target.url == "https://me-dup.hf.space"
    assert parse_options(None, {"space": "http://127.0.0.1:1/"}).target.url == "http://127.0.0.1:1"


def test_proxy_is_passed_to_every_request():
    kwargs = parse_options("http://proxy.local:3128", {"space": URL}).target.client_kwargs()
    assert kwargs["httpx_kwargs"]["proxy"] == "http://proxy.local:3128"


# --- issue 19, item 12: more bad input, refused at the call as InvalidRequestError -----------

CONV = {"session_hash": "abcdef123456"}


def issue19_bad_calls():
    """(name, kwargs for create_async_generator, words the message must contain)."""
    return [
        ("space with an unclosed IPv6 bracket", {"space": "http://[::1"}, "not a valid URL"),
        ("proxy with an unclosed IPv6 bracket", {"proxy": "http://[::1"}, "proxy is not a valid URL"),
        ("proxy with a password and a bad host", {"proxy": "http://user:s3cret@[::1"}, "proxy is not a valid URL"),
        ("model a list", {"model": ["x"]}, "model must be a model name"),
        ("model a dict", {"model": {"name": "qwen-2.5-1m"}}, "model must be a model name"),
        ("model an empty list", {"model": []}, "model must be a model name"),
        ("model a number", {"model": 3}, "model must be a model name"),
        ("conversation values a list", {"conversation": {**CONV, "values": ["x"]}}, "conversation.values"),
        ("conversation values a string", {"conversation": {**CONV, "values": "x"}}, "conversation.values"),
        (
            "conversation chatbot of strings",
            {"conversation": {**CONV, "chatbot": ["hi", "there"]}},
            "conversation.chatbot[0]",
        ),
        (
            "conversation chatbot of triples",
            {"conversation": {**CONV, "chatbot": [["a", "b", "c"]]}},
            "not a [user, bot] pair",
        ),
        (
            "conversation chatbot mixing pairs and messages",
            {"conversation": {**CONV, "chatbot": [["a", "b"], {"role": "user", "content": "c"}]}},
            "conversation.chatbot[1]",
        ),
        (
            "conversation chatbot messages without a role",
            {"conversation": {**CONV, "chatbot": [{"content": "c"}]}},
            "without a role",
        ),
        ("conversation app_id a list", {"conversation": {**CONV, "app_id": [1]}}, "conversation.app_id"),
        ("conversation app_id a bool", {"conversation": {**CONV, "app_id": True}}, "conversation.app_id"),
        ("conversation model a list", {"conversation": {**CONV, "model": ["x"]}}, "conversation.model"),
        (
            "conversation space an unparseable URL",
            {"conversation": {**CONV, "space": "http://[::1"}},
            "conversation.space",
        ),
        ("conversation with a dunder key", {"conversation": {**CONV, "__class__": "x"}}, "'__class__'"),
        ("conversation with a private key", {"conversation": {**CONV, "_secret": 1}}, "'_secret'"),
        ("conversation replacing a method", {"conversation": {**CONV, "get_dict": 1}}, "'get_dict'"),
        ("conversation with a key that is not a name", {"conversation": {**CONV, 5: 1}}, "attribute names"),
    ]


@pytest.mark.parametrize(("name", "kwargs", "words"), issue19_bad_calls(), ids=[c[0] for c in issue19_bad_calls()])
def test_issue19_bad_calls_are_refused_before_any_socket(mocker, name, kwargs, words):
    connect = mocker.patch.object(socket.socket, "connect", side_effect=AssertionError("network used"))
    created = mocker.spy(socket.socket, "__init__")
    call = {"model": "qwen-2.5-1m", "messages": OK, "space": URL, **kwargs}
    if "conversation" in kwargs and "space" not in kwargs["conversation"]:
        call["space"] = URL
    with pytest.raises(InvalidRequestError) as info:
        Qwen_Qwen_2_5M.create_async_generator(**call)
    assert words in str(info.value), str(info.value)
    assert "s3cret" not in str(info.value)
    assert connect.call_count == 0 and created.call_count == 0


@pytest.mark.parametrize("key", ["__class__", "__dict__", "__init__", "_private", "get_dict", "from_dict", 7])
def test_from_dict_refuses_keys_that_are_not_data(key):
    data = {**CONV, key: {"evil": True}}
    with pytest.raises(InvalidRequestError):
        JsonConversation.from_dict(data)
    with pytest.raises(InvalidRequestError):
        JsonConversation(**{str(key): 1}) if isinstance(key, str) else JsonConversation.from_dict({key: 1})


def test_good_conversations_still_pass():
    from qwen_space_adapter.conversation import check_conversation

    pairs = {
        **CONV,
        "chatbot": [[{"text": "q"}, [{"text": "a"}, None]], [None, "b"]],
        "values": {"3": 1},
        "app_id": 123,
        "model": "qwen-2.5-1m",
    }
    messages = {
        **CONV,
        "chatbot": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "app_id": "abc",
    }
    for data in (pairs, messages):
        conv = check_conversation(data)
        assert conv is not None and conv.chatbot == data["chatbot"]
        assert JsonConversation.from_dict(conv.get_dict()) == conv


def test_chatbot_of_the_other_format_is_refused_for_a_page():
    from qwen_space_adapter.conversation import check_chatbot_format

    check_chatbot_format([["q", "a"]], messages_format=False)
    check_chatbot_format([{"role": "user", "content": "q"}], messages_format=True)
    with pytest.raises(InvalidRequestError, match="role/content messages"):
        check_chatbot_format([["q", "a"]], messages_format=True)
    with pytest.raises(InvalidRequestError, match=r"\[user, bot\] pairs"):
        check_chatbot_format([{"role": "user", "content": "q"}], messages_format=False)


def test_an_adapter_bug_is_not_retryable():
    from qwen_space_adapter import AdapterBugError
    from qwen_space_adapter.failures import translate

    err = translate(AttributeError("'list' object has no attribute 'items'"), URL)
    assert type(err) is AdapterBugError and err.retryable is False
    assert AdapterBugError("x").retryable is False
    assert "Retrying may work" not in str(err)


def _workers_idle(within: float = 30.0) -> bool:
    """Whether the adapter's workers are all idle within `within` seconds (a bound, polled)."""
    deadline = time.monotonic() + within
    while workers.busy() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not workers.busy()
