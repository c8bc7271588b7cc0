"""The replica's model, shared by both apps: pure logic, no server."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from qwen_space_adapter import space_text
from qwen_space_adapter.replica import model

REPLICA = Path(model.__file__).parent


def _plan(text: str, history: list[tuple[str, str]] | None = None) -> model.Plan:
    return model.plan(model.Request(history=history or [], user_text=text), token_delay=0.01, prefill_base=0.5)


def test_the_strings_are_defined_once_and_load_by_path() -> None:
    assert model.THINKING is space_text.THINKING and model.SUMMARY_MARKER is space_text.SUMMARY_MARKER
    # Inside the replica's environment model.py is a top-level module, loaded by path: it must
    # still find space_text.py, without the adapter's package or its dependencies.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import model; "
        "print(repr(model.THINKING), repr(model.SUMMARY_MARKER)); "
        "print('qwen_space_adapter' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code, str(REPLICA)], capture_output=True, text=True, cwd="/", check=True
    ).stdout.splitlines()
    assert out == [f"{space_text.THINKING!r} {space_text.SUMMARY_MARKER!r}", "False"]


def test_steps_think_then_stream_then_summarise() -> None:
    p = _plan("hello there")
    steps = list(model.steps(p))
    assert steps[0] == model.Step(text=model.THINKING)
    assert steps[1].delay == pytest.approx(0.5, abs=1e-3) and steps[1].token  # the prefill comes before the first token
    texts = [s.text for s in steps[1:-1]]
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))
    assert steps[-1].text == texts[-1] + p.summary and not steps[-1].token
    assert model.answer_text(p) == texts[-1]


def test_faults_break_where_a_real_model_breaks() -> None:
    p = _plan("x")
    half = len(p.tokens) // 2
    before = list(model.steps(p, "error-before-first-token"))
    assert [s.error is not None for s in before] == [False, True] and "first token" in str(before[1].error)
    mid = list(model.steps(p, "error-mid-stream"))
    assert sum(s.token for s in mid) == half and "mid-stream" in str(mid[-1].error)
    assert list(model.steps(p, "die-mid-stream"))[-1].die
    stall = list(model.steps(p, "stall", 7.0))
    assert stall[half + 1].delay == 7.0 + p.token_delay
    assert list(model.steps(p, "slow-first-token", 3.0))[1].delay == 3.0


def test_knobs_and_the_tool_switch() -> None:
    p = _plan("go [[tokens=12]] [[delay=0.2]] [[tool]]")
    assert len(p.tokens) == 12 and p.token_delay == 0.2 and p.tool
    assert "[[" not in model.answer_text(p)
    assert not _plan("plain").tool


def test_request_from_a_real_ui_history(tmp_path: Path) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("The pass key is 4242.")
    history = [
        {"role": "user", "content": [{"text": "first [[tool]]"}], "name": "user"},
        {
            "role": "assistant",
            "content": "",
            "name": "tools",
            "function_call": {"name": "read_history", "arguments": "{}"},
        },
        {"role": "function", "content": "0 earlier turn(s)", "name": "read_history"},
        {"role": "assistant", "content": "answer one", "name": "Qwen"},
        {"role": "user", "content": [{"text": "read this"}, {"file": str(doc)}]},
    ]
    req = model.request_from_history(history)
    assert req.history == [("first [[tool]]", "answer one")]  # tool messages are not turns
    assert req.user_text == "read this" and req.files == [("doc.txt", "The pass key is 4242.")]
    assert "The pass key is 4242." in model.compose_answer(req)
    assert 'your first message was: "first"' in model.compose_answer(req)
    follow_up = [*history, {"role": "assistant", "content": "read it"}, {"role": "user", "content": "and?"}]
    later = model.request_from_history(follow_up)
    assert later.files == [] and later.earlier_files == [("doc.txt", "The pass key is 4242.")]
    assert (
        'I still have "doc.txt" from an earlier message (21 characters). The pass key is 4242.'
        in model.compose_answer(later)
    )


def test_request_from_message_objects() -> None:
    class Item:  # Qwen-Agent's ContentItem: attributes, not keys
        def __init__(self, text: str | None = None, file: str | None = None) -> None:
            self.text, self.file = text, file

    history = [{"role": "user", "content": [Item(text="hi"), Item(file="file:///nonexistent/x.txt")]}]
    req = model.request_from_history(history)
    assert req.user_text == "hi" and req.files[0][0] == "x.txt"
    assert req.files[0][1].startswith("<unreadable:")


def test_space_text_imports_only_the_standard_library() -> None:
    """The replica loads it by path in its own environment, where nothing of the adapter's is installed."""
    source = Path(space_text.__file__).read_text()
    imported = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    names = {line.split()[1].split(".")[0] for line in imported}
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, imported
