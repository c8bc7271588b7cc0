"""The serve sub-package's tables and pieces, without a server: request checks, the error table,
the chunk encoder, the session store, the bind rule. Fast; the whole runs in tests/test_serve.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from qwen_space_adapter import errors as E
from qwen_space_adapter.events import QueueStatus, Reasoning, Summary, TextRewritten
from qwen_space_adapter.serve.chunks import DONE, ChunkEncoder, completion, queue_line
from qwen_space_adapter.serve.errors import RULES, ApiError, api_error
from qwen_space_adapter.serve.request import Message, parse_body, parse_request
from qwen_space_adapter.serve.store import SessionStore, history_key


def body(**kw: object) -> dict[str, object]:
    return {"model": "qwen-2.5-1m", "messages": [{"role": "user", "content": "hi"}], **kw}


def file_msg(file: dict[str, object]) -> list[dict[str, object]]:
    return [{"role": "user", "content": [{"type": "file", "file": file}]}]


def data_url(text: bytes, mime: str = "text/plain") -> str:
    return f"data:{mime};base64," + base64.b64encode(text).decode()


# --- request ------------------------------------------------------------------------------------


def test_request_text_parts_files_and_roles() -> None:
    req = parse_request(
        body(
            messages=[
                {"role": "developer", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "a"},
                        {"type": "text", "text": "b"},
                        {"type": "file", "file": {"filename": "../../etc/n.txt", "file_data": data_url(b"doc")}},
                    ],
                },
            ],
            stream=True,
            stream_options={"include_usage": True},
            temperature=0.3,
            max_tokens=5,
            future_field=1,
        )
    )
    assert req.messages[0] == Message("system", "Be brief.")
    assert req.messages[1].content == "a\nb"
    assert req.messages[1].files[0].filename == "n.txt" and req.messages[1].files[0].data == b"doc"
    assert req.stream and req.include_usage
    assert set(req.ignored) == {"temperature", "max_tokens", "future_field"}


@pytest.mark.parametrize(
    ("change", "param", "words"),
    [
        ({"model": None}, "model", "model is required"),
        ({"messages": []}, "messages", "non-empty"),
        ({"n": 3}, "n", "n > 1"),
        ({"n": 0}, "n", "positive"),
        ({"tools": [{"type": "function"}]}, "tools", "tools"),
        ({"functions": [{"name": "f"}]}, "functions", "functions"),
        ({"tool_choice": "auto"}, "tool_choice", "tool_choice"),
        ({"stream": "yes"}, "stream", "true or false"),
        ({"modalities": ["text", "audio"]}, "modalities", "modalities"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "tool"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "wizard"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "messages[0].role", "must be the user's"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "string or a list"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content[0]",
            "image",
        ),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "messages[0].content[0]", "audio"),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_data": "notaurl"}}]}]},
            "messages[0].content[0].file.file_data",
            "data URL",
        ),
        (
            {"messages": file_msg({"file_data": "data:text/plain;base64,!!"})},
            "messages[0].content[0].file.file_data",
            "base64",
        ),
        (
            {"messages": file_msg({"file_data": data_url(b"x", "image/png")})},
            "messages[0].content[0].file",
            "image/png",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]},
            "messages[0].content[0].file.file_id",
            "file ids",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "content": [{"type": "file", "file": {"file_data": data_url(b"x")}}]},
                    {"role": "user", "content": "q"},
                ]
            },
            "messages[0].content",
            "only user messages",
        ),
    ],
)
def test_request_refusals_name_the_field(change: dict[str, object], param: str, words: str) -> None:
    with pytest.raises(ApiError) as e:
        parse_request(body(**change))
    assert e.value.status == 400 and e.value.param == param and words in e.value.message


def test_request_body_must_be_json_object() -> None:
    for raw in (b"{", b"[]", b"\xff"):
        with pytest.raises(ApiError) as e:
            parse_body(raw)
        assert e.value.status == 400
    assert parse_body(json.dumps(body()).encode()).model == "qwen-2.5-1m"


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (E.InvalidRequestError("bad"), 400, "invalid_request"),
        (E.ModelNotSupportedError("nope"), 404, "model_not_found"),
        (E.QueueFullError("full"), 429, "queue_full"),
        (E.RateLimitedError("slow down"), 429, "rate_limited"),
        (E.SpaceUnavailableError("down"), 503, "space_unavailable"),
        (E.ReplicaError("no replica"), 503, "space_unavailable"),
        (E.StreamInterruptedError("cut"), 502, "stream_interrupted"),
        (E.SpaceTimeoutError("late", phase="first token"), 504, "timeout"),
        (E.SpaceAppError("boom", space_message="x"), 502, "space_error"),
        (E.APIChangedError("changed"), 502, "space_api_changed"),
        (E.SpaceRestartedError("restarted"), 502, "space_restarted"),
        (E.AdapterBugError("bug"), 500, "adapter_bug"),
    ],
)
def test_error_table(error: Exception, status: int, code: str) -> None:
    api = api_error(error)
    assert (api.status, api.code) == (status, code)
    assert set(api.body()["error"]) == {"message", "type", "param", "code"}
    assert str(error) in api.message


def test_every_adapter_error_has_a_rule_and_unknown_errors_keep_their_text() -> None:
    kinds = {k for k, _ in RULES}
    assert {getattr(E, name) for name in E.__all__} <= kinds
    api = api_error(RuntimeError("hf_secret_in_here"))
    assert api.status == 500 and "hf_secret" not in api.message and "RuntimeError" in api.message


def test_retry_after_when_known() -> None:
    error = E.RateLimitedError("wait")
    error.retry_after = 12.4  # type: ignore[attr-defined]
    assert api_error(error).headers() == [(b"retry-after", b"12")]
    assert api_error(E.QueueFullError("full")).headers() == []


# --- chunks -------------------------------------------------------------------------------------


def frame(data: bytes) -> dict[str, object]:
    assert data.startswith(b"data: ") and data.endswith(b"\n\n")
    return json.loads(data[6:])


def test_chunk_encoder_frames() -> None:
    enc = ChunkEncoder("m")
    role = frame(enc.role())
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # type: ignore[index]
    text = frame(enc.content('quote " and \n newline é'))
    assert text["choices"][0]["delta"] == {"content": 'quote " and \n newline é'}  # type: ignore[index]
    assert text["id"] == role["id"] and text["object"] == "chat.completion.chunk" and text["model"] == "m"
    queue = frame(enc.event(QueueStatus(position=0, queue_size=3, eta=4.0)) or b"")
    line = queue["choices"][0]["delta"]["reasoning_content"]  # type: ignore[index]
    assert line == "Waiting in the Space's queue: position 1 of 3, about 4 s left.\n"
    assert queue["qwen"] == {"queue": {"position": 1, "queue_size": 3, "eta": 4.0}}
    assert enc.event(QueueStatus(position=0, queue_size=3, eta=4.0)) is None  # repeated: once is enough
    thinking = frame(enc.event(Reasoning(status="Qwen is thinking...")) or b"")
    assert thinking["choices"][0]["delta"]["reasoning_content"] == "Qwen is thinking...\n"  # type: ignore[index]
    summary = frame(enc.event(Summary("\n<summary>x")) or b"")
    assert summary["choices"][0]["delta"] == {} and summary["qwen"] == {"summary": "\n<summary>x"}  # type: ignore[index]
    rewrite = frame(enc.event(TextRewritten(text="new", previous="old")) or b"")
    assert rewrite["qwen"] == {"rewrite": {"text": "new", "previous": "old"}}
    assert enc.event("not an event") is None
    assert frame(enc.finish())["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    usage = frame(enc.usage(40, 8))
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    assert DONE == b"data: [DONE]\n\n"
    assert frame(ChunkEncoder.error({"error": {"message": "m"}})) == {"error": {"message": "m"}}


def test_queue_line_and_completion() -> None:
    assert queue_line(QueueStatus(position=None, queue_size=None, eta=None)) == "Waiting in the Space's queue.\n"
    body = completion("m", "answer", reasoning="Qwen is thinking...\n", qwen={"summary": "s"}, prompt_chars=4)
    assert body["choices"][0]["message"]["content"] == "answer"
    assert body["choices"][0]["message"]["reasoning_content"] == "Qwen is thinking...\n"
    assert body["qwen"] == {"summary": "s"} and body["object"] == "chat.completion"


# --- store --------------------------------------------------------------------------------------


def test_history_key_is_exact() -> None:
    a = [Message("user", "hi"), Message("assistant", "hello")]
    assert history_key(a) == history_key(list(a))
    assert history_key(a) != history_key([Message("user", "hi"), Message("assistant", "hello ")])
    assert history_key(a) != history_key([Message("system", "hi"), Message("assistant", "hello")])
    assert history_key(a[:1]) != history_key(a)


def test_store_claim_takes_out_and_bound_drops_the_oldest(tmp_path: Path) -> None:
    store = SessionStore(max_entries=3)
    for i in range(5):
        store.put(f"k{i}", {"session_hash": f"s{i}"})
    assert len(store) == 3
    assert store.claim("k0") is None and store.claim("k1") is None
    assert store.claim("k4") == {"session_hash": "s4"}
    assert store.claim("k4") is None  # claimed once: a concurrent second request starts its own session
    db = str(tmp_path / "s.sqlite")
    disk = SessionStore(db)
    disk.put("k", {"session_hash": "abc", "chatbot": [["q", "a"]]})
    disk.close()
    again = SessionStore(db)
    assert again.claim("k") == {"session_hash": "abc", "chatbot": [["q", "a"]]}
    again.close()


def test_bind_rule() -> None:
    pytest.importorskip("uvicorn")
    from qwen_space_adapter.serve.server import check_bind, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.5.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.com")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "key")
    with pytest.raises(E.InvalidRequestError, match="--api-key"):
        check_bind("0.0.0.0", None)
