"""Ctrl-C always ends a one-shot `qwen-space chat` at once, in every phase of a turn, and cancels
the job on the Space; a second Ctrl-C ends it even while the first one's cancel is stuck.

No test depends on luck: each phase is held by the replica (a gate in add_text, a busy replica
with concurrency 1, a long "thinking", a long answer) and SIGINT is sent once the CLI's `--json`
output or the replica shows that the turn is in that phase. Failures print the CLI's stderr.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_session import JsonSession

GATED_APP = str(Path(__file__).with_name("apps") / "gated_add_text.py")
LONG = "[[tokens=3000]] [[delay=0.01]]"  # 30 s of answer: an exit before that is a cancel
EXIT_WITHIN = 15.0  # seconds; the adapter bounds a cancel's cleanup at 10 s


def interrupted(session: JsonSession) -> None:
    """SIGINT, then: exit status 130 in time, a `cancelled` event and the final conversation."""
    session.sigint()
    code = session.wait(EXIT_WITHIN)
    kinds = [e["type"] for e in session.events]
    assert code == 130, session.fail(f"exit status {code}")
    assert kinds[-2:] == ["cancelled", "conversation"], session.fail("no cancelled event, then the conversation")
    assert "interrupted" in session.stderr


@pytest.mark.parametrize(
    ("phase", "prompt", "event", "count"),
    [
        ("thinking", "think [[fault:slow-first-token=60]]", "reasoning", 1),
        ("right after the first delta", f"first {LONG}", "delta", 1),
        ("streaming", f"stream {LONG}", "delta", 40),
    ],
)
def test_ctrl_c_cancels_the_answer_in_each_phase(qwen_replica, phase, prompt, event, count):
    before = qwen_replica.wait_idle(15)["cancelled"]
    with JsonSession("--space", qwen_replica.url, prompt) as cli:
        cli.wait_for(event, count)
        interrupted(cli)
        stats = qwen_replica.wait_idle(15)
        assert stats["active"] == 0 and stats["cancelled"] == before + 1, cli.fail(f"{phase}: {stats}")


def test_ctrl_c_while_queued_removes_the_job_from_the_queue(qwen_replica_factory):
    replica = qwen_replica_factory(concurrency_limit=1)
    with JsonSession("--space", replica.url, "blocker [[fault:slow-first-token=60]]") as blocker:
        blocker.wait_for("reasoning")  # the only slot is taken from here on
        with JsonSession("--space", replica.url, f"queued {LONG}") as cli:
            cli.wait_for("queue")
            stats = replica.stats()
            assert stats["active"] == 1 and stats["started"] == 1, cli.fail(f"not queued: {stats}")
            interrupted(cli)
        interrupted(blocker)
    # The queue is first in, first out: had the cancelled job stayed queued, it would run before this.
    with JsonSession("--space", replica.url, "after") as later:
        later.wait_for("done")
        assert later.wait(EXIT_WITHIN) == 0
    stats = replica.wait_idle(15)
    started = [r["user_text"] for r in stats["requests"]]
    assert started == ["blocker [[fault:slow-first-token=60]]", "after"], "the cancelled queued job still ran"
    assert stats["cancelled"] == 1 and stats["active"] == 0


def test_ctrl_c_during_add_text_never_reaches_predict(qwen_replica_factory):
    replica = qwen_replica_factory(app=GATED_APP)
    with JsonSession("--space", replica.url, f"gated {LONG}") as cli:
        cli.wait_for("conversation")
        assert httpx.get(f"{replica.url}/gate/entered", params={"timeout": 30}, timeout=40).json()["entered"], cli.fail(
            "add_text never reached the gate"
        )
        cli.sigint()
        httpx.post(f"{replica.url}/gate/release", timeout=10)  # add_text may now finish on the Space
        code = cli.wait(EXIT_WITHIN)
        assert code == 130, cli.fail(f"exit status {code}")
    stats = replica.wait_idle(15)
    assert stats["started"] == 0, f"predict ran although the turn was cancelled in add_text: {stats}"


def test_a_second_ctrl_c_exits_while_the_first_cancel_is_stuck(qwen_replica_factory):
    replica = qwen_replica_factory(app=GATED_APP)
    httpx.post(f"{replica.url}/gate/hold-cancel", timeout=10)  # the Space will not answer /cancel
    try:
        with JsonSession("--space", replica.url, "stuck [[fault:slow-first-token=60]]") as cli:
            cli.wait_for("conversation")
            assert httpx.get(f"{replica.url}/gate/entered", params={"timeout": 30}, timeout=40).json()["entered"]
            httpx.post(f"{replica.url}/gate/release", timeout=10)  # add_text ends; predict starts thinking
            assert _generating(replica), cli.fail("predict never started")
            cli.sigint()
            held = httpx.get(f"{replica.url}/gate/cancel-held", params={"timeout": 30}, timeout=40).json()["held"]
            assert held and cli.proc.poll() is None, cli.fail("the first Ctrl-C's cancel was not stuck")
            cli.sigint()
            code = cli.wait(5)  # the held /cancel would keep a waiting CLI for 5 s (its HTTP timeout) or more
            assert code == 130, cli.fail(f"exit status {code}")
            assert "interrupted" in cli.stderr
    finally:
        httpx.post(f"{replica.url}/gate/release", timeout=10)
        httpx.post(f"{replica.url}/gate/release-cancel", timeout=10)


def _generating(replica: Any, within: float = 30.0) -> bool:
    """Whether the replica's model started a generation within `within` seconds (a bound on a
    state the replica reports, polled)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if replica.stats()["active"]:
            return True
        time.sleep(0.05)
    return False
