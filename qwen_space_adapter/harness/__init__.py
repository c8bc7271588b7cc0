"""Integration-test harness: conformance checks, timing, and record/replay of a Space.

The live Space may sleep, change its API, or vanish; the adapter must notice, and tests must
keep running offline. So the harness does three things:

- **check** (`qwen-space check [TARGET]`, `run_suite`): a conformance suite run through the
  adapter's public API against any target (the live Space, a duplicate, a replica), with
  timing percentiles; a terminal table, a JSON report (`--json`) and JUnit XML (`--junit`).
  The same checks run under pytest: `pytest --pyargs qwen_space_adapter.harness --qwen-space=T`.
- **record** (`qwen-space record TARGET --out FILE`, `record_transcript`): drive a scripted
  conversation with gradio_client and save every update the Space sent, with its timing.
- **replay** (`qwen-space replica --replay FILE [--replay-speed X]`): the replica answers with
  the recorded updates, with the recorded spacing (`qwen_space_adapter.replica.replay`).
- **load** (`qwen-space load TARGET`, `run_load` / `load_async`): concurrent users or Poisson
  arrivals through the adapter; queue wait, thinking, TTFT, gaps, e2e percentiles, throughput,
  errors by class and goodput (the package `harness.load`, reports in `harness.load.report`).

Only `record` needs gradio_client (it drives the Space with it): its names here are imported on
first use, so the harness, its check reports, load reports and metrics import without it (reading a
report offline needs no gradio_client).

Transcript format (JSON, UTF-8; version 2)::

    {
      "format": "qwen-space-transcript", "version": 2,
      "recorded_at": "2025-01-31T12:00:00+00:00",       # UTC, ISO 8601
      "target": "https://qwen-qwen2-5-1m-demo.hf.space",  # the URL recorded
      "space": {"gradio_version": "4.44.1", "protocol": "sse_v3", "chain": [1, 2], "answer": 2,
                "input_type": "modelscopemultimodalinput", "chatbot_type": "modelscopechatbot"},
      "recorder": {"qwen_space_adapter": "0.1.0", "gradio_client": "2.7.2", "tapped": true},
      "session_hash": "0123456789ab",                   # one session: the turns share history
      "turns": [{
        "index": 0, "prompt": "Remember the word PLUM. ...", "files": [],  # names of attachments
        "before_answer_seconds": 0.041,                # the steps before the answer step
        "updates": [                                   # every message of the answer step, in order
          {"t": 0.003, "kind": "queue", "rank": 0, "queue_size": 1, "eta": null},
          {"t": 0.004, "kind": "started"},
          {"t": 0.010, "kind": "generating", "bot": [{"text": "Qwen is thinking...", ...}],
           "text": "Qwen is thinking..."},
          ...
          {"t": 0.480, "kind": "completed", "bot": [...], "text": "...\\n<summary>..."}
        ]}]
    }

`t` is seconds since the answer step was submitted, stamped when gradio_client's reader thread
received the message ("tapped": false means it was polled from the public Job API every 5 ms
instead). `bot` is the bot side of the chatbot's last `[user, bot]` pair after applying the
message's diff, exactly as the Space sent it; `text` is its text (several bot messages joined by
a blank line). Other kinds: `error` (`"error"`: the Space's message; the recording stops there)
and `other` (`"msg"`: an unknown message type, kept for inspection). Replay sends the
`generating` updates of turn k for a session's k-th message, the first at once and
each next one after the recorded gap divided by the speed, and raises `error` updates.

JSON report (`--json`): `{"format": "qwen-space-check", "version": 1, "target", "url",
"replica", "started_at", "seconds", "passed", "space": {...as above, from the config},
"environment", "checks": [{"name", "title", "status": pass|fail|skip|error, "seconds",
"detail", "data"}], "metrics": {name: {"unit", "n", "p50", "p90", "p99", "mean", "min", "max",
"meaning"}}}`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .checks import CHECK_NAMES, CHECKS, CheckResult, Suite, SuiteResult, run_suite
from .load import SLO, LoadConfig, LoadResult, Prompt, Shape, load_async, run_load
from .report import render_table, to_dict, to_junit, write_json, write_junit

if TYPE_CHECKING:
    from .record import DEFAULT_PROMPTS, record_transcript, save_transcript

_LAZY = {"DEFAULT_PROMPTS": "record", "record_transcript": "record", "save_transcript": "record"}
"""Names imported on first use, by the module they come from (it imports gradio_client)."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "CHECKS",
    "CHECK_NAMES",
    "DEFAULT_PROMPTS",
    "SLO",
    "CheckResult",
    "LoadConfig",
    "LoadResult",
    "Prompt",
    "Shape",
    "Suite",
    "SuiteResult",
    "load_async",
    "record_transcript",
    "render_table",
    "run_load",
    "run_suite",
    "save_transcript",
    "to_dict",
    "to_junit",
    "write_json",
    "write_junit",
]
