"""The `qwen-space` CLI as a user runs it: a subprocess, pipes, a pseudo-terminal, Ctrl-C."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

CLI = [sys.executable, "-m", "qwen_space_adapter"]


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
    r = run("chat", "--space", qwen_replica.url, "--system", "Be brief.", "--file", str(doc),
            stdin="What is the pass key?\n")
    assert r.returncode == 0, r.stderr
    assert 'You said: "What is the pass key?"' in r.stdout
    assert 'system prompt: "Be brief."' in r.stdout and "The pass key is 4242." in r.stdout


def test_json_prints_one_object_per_event(qwen_replica):
    r = run("chat", "--json", "--space", qwen_replica.url, "json please")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "conversation" and kinds[-1] == "done"
    assert "reasoning" in kinds and "summary" in kinds and "delta" in kinds
    deltas = "".join(e["text"] for e in events if e["type"] == "delta")
    assert deltas == events[-1]["text"] == 'You said: "json please". This is the first turn of our conversation.'
    assert len(events[0]["conversation"]["session_hash"]) == 12


def test_errors_are_one_line_with_a_status(tmp_path):
    r = run("chat", "--space", "http://127.0.0.1:9", "hello")
    assert r.returncode == 1
    assert r.stderr.strip().startswith("qwen-space: error: Could not connect")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run("chat", "--space", "http://127.0.0.1:9", "--file", str(tmp_path / "missing.txt"), "hello")
    assert r.returncode == 2 and "does not exist" in r.stderr


def _read_until(fd: int, needle: str, timeout: float = 30) -> str:
    buf = ""
    deadline = time.monotonic() + timeout
    while needle not in buf:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"timed out waiting for {needle!r}; got {buf!r}")
        try:
            chunk = os.read(fd, 4096).decode(errors="replace")
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
    return buf


def test_interactive_keeps_the_conversation_and_clear_resets_it(qwen_replica):
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI on a terminal
        os.execv(sys.executable, [*CLI, "chat", "--space", qwen_replica.url])
    try:
        _read_until(fd, "you> ")
        os.write(fd, b"My name is Ada.\n")
        _read_until(fd, "you> ")
        os.write(fd, b"What is my name?\n")
        second = _read_until(fd, "you> ")
        assert 'your first message was: "My name is Ada."' in second
        os.write(fd, b"/clear\n")
        _read_until(fd, "you> ")
        os.write(fd, b"Hello again.\n")
        third = _read_until(fd, "you> ")
        assert "first turn of our conversation" in third and "Ada" not in third.split("Hello again.")[-1]
        os.write(fd, b"/exit\n")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_ctrl_c_cancels_the_answer_on_the_space(qwen_replica):
    before = qwen_replica.stats()["cancelled"]
    proc = subprocess.Popen(
        [*CLI, "chat", "--space", qwen_replica.url, "long [[tokens=3000]] [[delay=0.01]]"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.read(5) == "You s"  # the answer is streaming
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        assert "interrupted" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stats = qwen_replica.wait_idle(15)
    assert stats["active"] == 0 and stats["cancelled"] == before + 1


@pytest.mark.parametrize("args", [["--help"], ["chat", "--help"], ["replica", "--help"]])
def test_help(args):
    r = run(*args)
    assert r.returncode == 0 and "usage:" in r.stdout
