"""The checked options of a call: attachments read once, limits with maxima, conversations filled in.

Pure logic: nothing here opens a socket.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from qwen_space_adapter import InvalidRequestError, JsonConversation
from qwen_space_adapter.conversation import check_conversation
from qwen_space_adapter.options import (
    DEFAULT_CONNECT_TIMEOUT,
    KNOWN_OPTIONS,
    MAX_FILE_BYTES,
    MAX_RETRIES,
    MAX_SECONDS,
    Attachment,
    check_file,
    parse_options,
)

URL = "http://127.0.0.1:9"


def test_an_attachment_holds_the_bytes_that_were_checked(tmp_path):
    doc = tmp_path / "notes.md"
    doc.write_text("# Title\nThe pass key is 4242.\n", encoding="utf-8")
    att = check_file(doc)
    assert isinstance(att, Attachment)
    assert att.path == doc and att.name == "notes.md"
    assert att.data == doc.read_bytes() and att.size == len(att.data)
    assert att.mime_type == "text/plain"
    assert os.fspath(att) == str(doc) and str(att) == str(doc)
    with pytest.raises(dataclasses.FrozenInstanceError):
        att.data = b"other"  # type: ignore[misc]


def test_a_file_swapped_after_the_call_is_not_what_gets_uploaded(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("checked text")
    opts = parse_options(None, {"space": URL, "files": [doc]})
    doc.write_bytes(b"\x00\x01binary now")  # swapped between the call and the upload
    doc.unlink()  # ...or deleted
    (att,) = opts.files
    assert att.data == b"checked text" and att.size == 12


def test_a_big_attachment_stays_out_of_reprs(tmp_path):
    doc = tmp_path / "big.txt"
    doc.write_text("word " * 100_000)
    opts = parse_options(None, {"space": URL, "files": str(doc)})
    assert len(repr(opts)) < 1000 and "word word" not in repr(opts)


def test_attachment_limit_counts_the_bytes_read(tmp_path):
    doc = tmp_path / "limit.txt"
    doc.write_bytes(b"a" * MAX_FILE_BYTES)
    assert check_file(doc).size == MAX_FILE_BYTES  # exactly the limit is fine
    doc.write_bytes(b"a" * (MAX_FILE_BYTES + 1))
    with pytest.raises(InvalidRequestError, match="limit"):
        check_file(doc)


def test_a_utf8_character_across_the_old_64k_boundary_is_fine(tmp_path):
    doc = tmp_path / "utf8.txt"
    doc.write_bytes(b"a" * 65535 + "é".encode() + b"z")
    assert check_file(doc).data.decode("utf-8").endswith("éz")
    doc.write_bytes(b"a" * 100_000 + b"\xff")  # a bad byte far past the first 64 KiB
    with pytest.raises(InvalidRequestError, match=r"not UTF-8 text \(byte 100,000\)"):
        check_file(doc)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InvalidRequestError, match="not a regular file"):
        check_file(fifo)


def test_connect_timeout_is_an_option_with_a_default():
    assert parse_options(None, {"space": URL}).connect_timeout == DEFAULT_CONNECT_TIMEOUT == 30.0
    assert parse_options(None, {"space": URL, "connect_timeout": 2}).connect_timeout == 2.0
    assert "connect_timeout" in KNOWN_OPTIONS
    with pytest.raises(InvalidRequestError, match="connect_timeout") as info:
        parse_options(None, {"space": URL, "conect_timeout": 2})
    assert "Known: " in str(info.value) and "connect_timeout" in str(info.value).split("Known: ")[1]


@pytest.mark.parametrize("name", ["timeout", "first_token_timeout", "idle_timeout", "connect_timeout"])
def test_every_timeout_has_a_maximum(name):
    assert getattr(parse_options(None, {"space": URL, name: MAX_SECONDS}), name) == MAX_SECONDS
    for value in (MAX_SECONDS + 1, float("inf"), 10**400, 10**5000):
        with pytest.raises(InvalidRequestError, match=f"{name} must be at most 86400") as info:
            parse_options(None, {"space": URL, name: value})
        assert len(str(info.value)) < 200  # 10**400 is not printed in full


def test_retries_and_backoff_have_maxima():
    assert parse_options(None, {"space": URL, "max_retries": MAX_RETRIES}).max_retries == MAX_RETRIES
    assert parse_options(None, {"space": URL, "retry_backoff": 60}).retry_backoff == 60.0
    for kwargs in (
        {"max_retries": MAX_RETRIES + 1},
        {"max_retries": 10**400},
        {"max_retries": 1.5},
        {"retry_backoff": 61},
        {"retry_backoff": None},
        {"retry_backoff": 0},
    ):
        with pytest.raises(InvalidRequestError, match=next(iter(kwargs))):
            parse_options(None, {"space": URL, **kwargs})


def test_none_still_means_no_limit_for_the_answer_timeouts():
    opts = parse_options(None, {"space": URL, "timeout": None, "first_token_timeout": None, "idle_timeout": None})
    assert (opts.timeout, opts.first_token_timeout, opts.idle_timeout) == (None, None, None)


def test_a_conversation_dict_without_chatbot_is_an_empty_one():
    conv = check_conversation({"session_hash": "abcdef123456"}, URL)
    assert conv is not None
    assert conv.chatbot == [] and conv.message_count == 0
    conv = check_conversation({"session_hash": "abcdef123456", "chatbot": None, "message_count": None})
    assert conv is not None and conv.chatbot == [] and conv.message_count == 0
    bare = JsonConversation(session_hash="abcdef123456")
    assert check_conversation(bare) is bare and bare.chatbot == [] and bare.message_count == 0


def test_a_conversation_matches_its_space_by_url_or_id():
    conv = {"session_hash": "abcdef123456", "space": "https://qwen-qwen2-5-1m-demo.hf.space"}
    assert check_conversation(conv, "https://qwen-qwen2-5-1m-demo.hf.space") is not None
    by_id = {"session_hash": "abcdef123456", "space": "Qwen/Qwen2.5-1M-Demo"}
    assert check_conversation(by_id, "https://qwen-qwen2-5-1m-demo.hf.space") is not None
    with pytest.raises(InvalidRequestError, match="belongs to the Space at"):
        check_conversation(conv, "http://127.0.0.1:7860")
    with pytest.raises(InvalidRequestError, match=r"conversation\.space must be the URL"):
        check_conversation({"session_hash": "abcdef123456", "space": 5}, URL)
