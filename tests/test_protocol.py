"""The Gradio message protocol of one job, without a server: a first answer that is a diff
against a stream the Space never ended (Gradio 4 and 5 key diff streams by a generator's id()).

The cases are the ones the Space's stack produces (`tests/apps/stale_streams.py` makes them
certain on a real server; `test_stop_anywhere.py` drives it): the diff is read against what this
process saw last of such a stream, or against the values the page holds, or refused by name;
a diff is never kept as a value.
"""

from __future__ import annotations

from typing import Any

import pytest

from qwen_space_adapter import StreamInterruptedError, protocol

pytestmark = pytest.mark.anyio

URL = "http://127.0.0.1:9"
SENT = [["hi", "hello"]]  # the chatbot the page sent to the step
RESULT = ["", [["hi", "hello"], ["next", None]]]  # the step's real outputs: (textbox, chatbot)
DIFF = [[], [["add", [1], ["next", None]]]]  # RESULT as a diff against the page's values
OLD = ["", [["hi", None]]]  # the result of the same step one turn before
DIFF_FROM_OLD = [[], [["replace", [0, 1], "hello"], ["add", [1], ["next", None]]]]


def _extends(outputs: list[Any]) -> bool:
    chatbot = outputs[1]
    return isinstance(chatbot, list) and [p[0] for p in chatbot[: len(SENT)]] == [p[0] for p in SENT]


def _kept(outputs: list[Any]) -> bool:
    return _extends(outputs) and outputs[1][: len(SENT) - 1] == SENT[:-1]


def follower(bases: list[list[Any]] | None = None, guess: bool = True) -> protocol.JobFollower:
    return protocol.JobFollower(
        URL, True, (False, False), bases, accept=_extends, guess=(["hi", SENT], _kept) if guess else None
    )


async def answer(f: protocol.JobFollower, *msgs: dict[str, Any]) -> list[Any]:
    f.on_register(protocol.PLAIN_EVENT)
    for msg in msgs:
        f.sink(protocol.PLAIN_EVENT, msg)
    events = [e async for e in f.events()]
    assert isinstance(events[-1], protocol.Completed)
    return events[-1].data


def completed(data: list[Any]) -> dict[str, Any]:
    return {"msg": "process_completed", "success": True, "output": {"data": data}}


async def test_a_diff_against_a_result_this_process_kept_is_read_against_it():
    assert await answer(follower([OLD]), completed(DIFF_FROM_OLD)) == RESULT


async def test_a_diff_against_the_pages_values_is_read_against_them():
    # a conversation continued by another process: nothing kept, the page's values fit. An
    # output the diff leaves unchanged keeps the page's value (the stale one is not known).
    assert await answer(follower([]), completed(DIFF)) == ["hi", RESULT[1]]


async def test_a_diff_that_fits_no_base_is_refused_by_name_not_kept():
    shifted = [[], [["add", [0], ["next", None]]]]  # against an older value: it shifts "hi"
    with pytest.raises(StreamInterruptedError, match=protocol.STALE_STREAM):
        await answer(follower([]), completed(shifted))


async def test_unchanged_outputs_are_the_kept_result_not_empty_values():
    # the stale stream already held this very result: Gradio sends [] ("unchanged") for each
    assert await answer(follower([RESULT]), completed([[], []])) == RESULT
    with pytest.raises(StreamInterruptedError, match=protocol.STALE_STREAM):
        await answer(follower([]), completed([[], []]))  # the page's values say nothing new


async def test_empty_outputs_of_a_step_sent_no_chatbot_are_values():
    assert await answer(follower([RESULT], guess=False), completed([[], []])) == [[], []]


async def test_a_streams_first_update_against_an_unknown_stream_waits_for_the_full_result():
    f = follower([], guess=False)
    generating = {"msg": "process_generating", "output": {"data": [[], [["append", [0, 1], "!"]]]}}
    assert await answer(f, generating, completed(RESULT)) == RESULT
    assert f.lost
