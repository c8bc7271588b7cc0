"""The interactive `qwen-space chat` behaves like a REPL, on a real pseudo-terminal.

Ctrl-C during an answer cancels it on the Space and comes back to `you>` with the conversation
kept; Ctrl-C at the prompt only clears the line; a Space error is one line on stderr and the
session goes on; the status line counts the seconds; `--file` is uploaded with the first
message only. Every step waits for what the terminal shows, never for time to pass.
"""

from __future__ import annotations

import pytest
from cli_session import PtySession

PROMPT = "you> "
LONG = "[[tokens=3000]] [[delay=0.01]]"


def requests_of(replica, marker: str) -> list[dict]:
    return [r for r in replica.wait_idle(15)["requests"] if marker in r["user_text"]]


def test_ctrl_c_cancels_the_answer_and_keeps_the_conversation(qwen_replica):
    before = qwen_replica.wait_idle(15)["cancelled"]
    with PtySession("chat", "--space", qwen_replica.url) as term:
        term.expect(PROMPT)
        term.send("My name is Ada.\n")
        term.expect(PROMPT)
        term.send(f"Tell me a long story {LONG}\n")
        term.expect('You said: "Tell me a long story')  # streaming
        term.ctrl_c()
        shown = term.expect(PROMPT)
        assert "(answer cancelled)" in shown
        stats = qwen_replica.wait_idle(15)
        assert stats["active"] == 0 and stats["cancelled"] == before + 1
        term.send("What is my name?\n")
        third = term.expect(PROMPT)
        assert 'your first message was: "My name is Ada."' in third
        assert "This is turn 3" in third, "the cancelled turn is part of the Space's history"
        term.ctrl_d()
        assert term.wait() == 0


def test_ctrl_c_at_the_prompt_clears_the_line_and_sends_nothing(qwen_replica):
    with PtySession("chat", "--space", qwen_replica.url) as term:
        term.expect(PROMPT)
        term.send("half a lin")
        term.expect("half a lin")  # echoed: the terminal holds the unfinished line
        term.ctrl_c()
        shown = term.expect(PROMPT)
        term.ctrl_c()  # on an empty prompt too, the moment it is shown (input() could miss this one)
        shown += term.expect(PROMPT)
        assert "cancel" not in shown.lower() and "interrupted" not in shown
        term.send("whole line\n")
        answer = term.expect(PROMPT)
        assert 'You said: "whole line". This is the first turn' in answer, "the cleared text was not sent"
        term.send("/exit\n")
        assert term.wait() == 0
    assert not requests_of(qwen_replica, "half a lin")


def test_a_space_error_mid_answer_is_one_line_on_stderr_and_the_session_goes_on(qwen_replica):
    with PtySession("chat", "--space", qwen_replica.url) as term:
        term.expect(PROMPT)
        term.send("Remember PLUM.\n")
        term.expect(PROMPT)
        term.send("break [[fault:error-mid-stream]] [[tokens=20]]\n")
        shown = term.expect(PROMPT)
        assert "\nqwen-space: error: The Space's app raised an error: Replica fault" in shown.replace("\r", "")
        partial = shown.split("qwen-space: error:")[0]
        assert 'You said: "break' in partial, "the partial answer stays, the error starts its own line"
        term.send("And now?\n")
        after = term.expect(PROMPT)
        assert 'your first message was: "Remember PLUM."' in after
        term.send("/exit\n")
        assert term.wait() == 0


def test_the_status_line_counts_the_seconds_while_the_space_thinks(qwen_replica):
    with PtySession("chat", "--space", qwen_replica.url) as term:
        term.expect(PROMPT)
        term.send("slow [[fault:slow-first-token=60]]\n")
        term.expect("[Qwen is thinking... 0:00]")
        seconds = [0]
        while seconds[-1] < 2:  # redrawn each second while nothing else happens: it does not look hung
            seconds.append(int(term.expect_re(r"\[Qwen is thinking\.\.\. 0:(\d\d)\]").group(1)))
        assert seconds == sorted(seconds), f"the clock counts up: {seconds}"
        term.ctrl_c()
        term.expect("cancelling the answer on the Space")
        assert "(answer cancelled)" in term.expect(PROMPT)
        term.send("/exit\n")
        assert term.wait() == 0


@pytest.mark.parametrize("ui", ["hand", "qwen-agent"])
def test_a_file_is_uploaded_with_the_first_message_only(qwen_replica, qwen_replica_factory, tmp_path, ui):
    """On the hand-made UI and on Qwen-Agent's real one: turn 2 uploads nothing, in the same session."""
    replica = qwen_replica if ui == "hand" else qwen_replica_factory(ui=ui)
    doc = tmp_path / "keys.txt"
    doc.write_text("The pass key is 71432.")
    with PtySession("chat", "--space", replica.url, "--file", str(doc)) as term:
        term.expect(PROMPT)
        term.send("attach-once: what is the pass key?\n")
        assert "The pass key is 71432." in term.expect(PROMPT)
        term.send("attach-once: and again?\n")
        term.expect(PROMPT)
        term.send("/clear\n")  # a new conversation: the file goes with its first message again
        term.expect(PROMPT)
        term.send("attach-once: fresh start\n")
        term.expect(PROMPT)
        term.send("/exit\n")
        assert term.wait() == 0
    files = [(r["user_text"], r["files"]) for r in requests_of(replica, "attach-once")]
    assert files == [
        ("attach-once: what is the pass key?", ["keys.txt"]),
        ("attach-once: and again?", []),
        ("attach-once: fresh start", ["keys.txt"]),
    ]
    follow_up = requests_of(replica, "and again")[0]
    assert follow_up["history_turns"] == 1, "the follow-up is answered in the session that holds the file"
