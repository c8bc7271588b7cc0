"""The `qwen-space` CLI as a user runs it: a subprocess, pipes, a pseudo-terminal, Ctrl-C."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from cli_session import CLI, PtySession, interrupt, started


def run(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, timeout=timeout)


def test_one_shot_prints_just_the_answer(qwen_replica):
    r = run("chat", "--space", qwen_replica.url, "Привет! Как дела?")
    assert r.returncode == 0, r.stderr
    assert r.stdout == 'You said: "Привет! Как дела?". This is the first turn of our conversation.\n'
    assert "Traceback" not in r.stderr


def test_prompt_from_stdin_with_system_and_file(qwen_replica, tmp_path):
    doc = tmp_path / "keys.txt"
    doc.write_text("The pass key is 4242.")
    r = run(
        "chat",
        "--space",
        qwen_replica.url,
        "--system",
        "Be brief.",
        "--file",
        str(doc),
        stdin="What is the pass key?\n",
    )
    assert r.returncode == 0, r.stderr
    assert 'You said: "What is the pass key?"' in r.stdout
    assert 'system prompt: "Be brief."' in r.stdout and "The pass key is 4242." in r.stdout


def test_json_prints_one_object_per_event(qwen_replica):
    r = run("chat", "--json", "--space", qwen_replica.url, "json please")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "conversation" and kinds[-2:] == ["done", "conversation"]
    assert "reasoning" in kinds and "summary" in kinds and "delta" in kinds
    deltas = "".join(e["text"] for e in events if e["type"] == "delta")
    assert deltas == events[-2]["text"] == 'You said: "json please". This is the first turn of our conversation.'
    first, final = events[0]["conversation"], events[-1]["conversation"]
    assert len(first["session_hash"]) == 12 and first["chatbot"] == []
    assert final["session_hash"] == first["session_hash"] and final["message_count"] == 1
    assert "json please" in json.dumps(final["chatbot"]), "the final conversation holds the Space's chatbot"
    queue = [e for e in events if e["type"] == "queue"]
    assert queue and all(e["position"] >= 1 for e in queue), "queue positions count from 1, as for people"


def test_json_reports_a_space_error_as_an_event(qwen_replica):
    r = run("chat", "--json", "--space", qwen_replica.url, "x [[fault:error-mid-stream]] [[tokens=10]]")
    assert r.returncode == 1
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["type"] for e in events][-2:] == ["error", "conversation"]
    error = events[-2]
    assert error["error"] == "SpaceAppError" and "Replica fault" in error["message"]
    assert error["retryable"] is False
    assert events[-1]["conversation"]["message_count"] == 1, "the Space kept the message: continue from here"


def test_human_output_shows_queue_positions_from_1(qwen_replica):
    r = run("chat", "--space", qwen_replica.url, "where am I in the queue?")
    assert r.returncode == 0, r.stderr
    # The ETA follows once the Space has timed a few answers: "[in queue: position 1 of 1, about 1 s left]".
    assert re.search(r"\[in queue: position 1 of 1(, about \d+ s left)?\]", r.stderr), r.stderr
    assert "position 0" not in r.stderr


def test_version_and_model_help():
    from qwen_space_adapter import __version__

    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"qwen-space {__version__}"
    r = run("chat", "--help")
    assert "--model MODEL" in r.stdout and "qwen-2.5-1m-demo" in r.stdout


def test_replica_and_space_together_are_refused():
    r = run("chat", "--replica", "--space", "http://127.0.0.1:9", "hello")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "qwen-space: error: --replica starts a local Space of its own; do not also give --space."
    )


def test_errors_are_one_line_with_a_status(tmp_path):
    r = run("chat", "--space", "http://127.0.0.1:9", "hello")
    assert r.returncode == 1
    assert r.stderr.strip().startswith("qwen-space: error: Could not connect")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run("chat", "--space", "http://127.0.0.1:9", "--file", str(tmp_path / "missing.txt"), "hello")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_interactive_keeps_the_conversation_and_clear_resets_it(qwen_replica):
    with PtySession("chat", "--space", qwen_replica.url) as term:
        term.expect("you> ")
        term.send("My name is Ada.\n")
        term.expect("you> ")
        term.send("What is my name?\n")
        second = term.expect("you> ")
        assert 'your first message was: "My name is Ada."' in second
        term.send("/clear\n")
        term.expect("you> ")
        term.send("Hello again.\n")
        third = term.expect("you> ")
        assert "first turn of our conversation" in third and "Ada" not in third.split("Hello again.")[-1]
        term.send("/exit\n")
        assert term.wait() == 0


def test_ctrl_c_cancels_the_answer_on_the_space(qwen_replica):
    before = qwen_replica.wait_idle(15)["cancelled"]
    with started([*CLI, "chat", "--space", qwen_replica.url, "long [[tokens=3000]] [[delay=0.01]]"]) as proc:
        assert proc.stdout is not None and proc.stdout.read(5) == "You s"  # the answer is streaming
        code, _, stderr = interrupt(proc, timeout=15)
    assert code == 130, stderr
    assert "interrupted; the answer was cancelled on the Space." in stderr, stderr
    stats = qwen_replica.wait_idle(15)
    assert stats["active"] == 0 and stats["cancelled"] == before + 1


@pytest.mark.parametrize("args", [["--help"], ["chat", "--help"], ["replica", "--help"]])
def test_help(args):
    r = run(*args)
    assert r.returncode == 0 and "usage:" in r.stdout
