"""Record what a Space sends, update by update, with timing: the input of an offline replay.

Why not record through the adapter: the adapter coalesces updates that arrive together and
turns snapshots into deltas, so its output is already an interpretation. The recorder drives the
Space with gradio_client itself (the submit chain of its page, walked as the adapter walks it:
`page.Page.walk`) and stamps every
raw server message the moment the client's reader thread receives it (the tap of
`_gc_internals`), so nothing is merged, dropped or delayed by a polling quantum. Diffs are
applied as they come, and each update is stored as the bot side of the chatbot's last pair.

The transcript format is documented in `qwen_space_adapter.harness`.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _gc_internals as gci
from ..clients import close_client, upload
from ..conversation import generate_session_hash
from ..deltas import apply_diff
from ..failures import translate
from ..page import OK, Page, Step, as_wire
from ..replica import replay
from ..target import SpaceTarget

# One conversation that exercises what the adapter cares about: a first turn, then turns that
# need the session's history. Plausible for the real model and for the replica alike.
DEFAULT_PROMPTS: tuple[str, ...] = (
    "Remember the word PLUM. Reply with one short sentence.",
    "What word did I ask you to remember?",
    "Thank you! Now count from one to ten in words.",
)


@dataclass
class _Event:
    """Raw messages of one job, in arrival order, stamped with `time.monotonic()`."""

    messages: list[tuple[float, dict[str, Any]]]


class _Recorder:
    """The tap's sink: called on gradio_client's reader thread, so it only appends under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        self.registered: list[str] = []

    def sink(self, event_id: str, msg: Any) -> None:
        if msg.get("msg") == gci.READER_ENDED:  # the client's own mark, not a server message
            return
        now = time.monotonic()
        with self.lock:
            self.events.setdefault(event_id, []).append((now, copy.deepcopy(msg)))

    def on_register(self, event_id: str) -> None:
        with self.lock:
            if event_id not in self.registered:
                self.registered.append(event_id)

    def take(self, event_id: str) -> list[tuple[float, dict[str, Any]]]:
        with self.lock:
            return list(self.events.get(event_id, []))


def _bot(chatbot: Any) -> Any:
    """The bot side of the chatbot's last [user, bot] pair, as the Space sent it."""
    if isinstance(chatbot, list) and chatbot and isinstance(chatbot[-1], list | tuple):
        return copy.deepcopy(chatbot[-1][1])
    return None


def updates_from_messages(
    messages: list[tuple[float, dict[str, Any]]], start: float, diffs: bool, position: int = 0
) -> tuple[list[dict[str, Any]], Any]:
    """Turn raw answer-step messages into transcript updates; also return the final chatbot.

    `position` is the chatbot's place among the step's outputs.
    """
    updates: list[dict[str, Any]] = []
    current: Any = None
    for stamp, msg in messages:
        t = round(max(stamp - start, 0.0), 6)
        kind = msg.get("msg")
        if kind == "estimation":
            updates.append(
                {
                    "t": t,
                    "kind": "queue",
                    "rank": msg.get("rank"),
                    "queue_size": msg.get("queue_size"),
                    "eta": msg.get("rank_eta"),
                }
            )
        elif kind == "process_starts":
            updates.append({"t": t, "kind": "started"})
        elif kind == "process_generating":
            data = (msg.get("output") or {}).get("data") or []
            value = data[position] if position < len(data) else None
            current = value if current is None or not diffs else apply_diff(current, value or [])
            updates.append({"t": t, "kind": "generating", "bot": _bot(current), "text": replay.text_of(_bot(current))})
        elif kind == "process_completed":
            output = msg.get("output") or {}
            if not msg.get("success", True) or "error" in output:
                updates.append({"t": t, "kind": "error", "error": output.get("error")})
            else:
                data = output.get("data") or []
                current = data[position] if position < len(data) else current
                updates.append(
                    {"t": t, "kind": "completed", "bot": _bot(current), "text": replay.text_of(_bot(current))}
                )
        else:
            updates.append({"t": t, "kind": "other", "msg": kind})
    return updates, current


def _run_step(client: Any, page: Page, step: Step, values: dict[int, Any], timeout: float) -> None:
    """Run a step that is not the answer, as the page does, and keep its outputs."""
    result = client.submit(*page.args(step, values), fn_index=step.fn_index).result(timeout=timeout)
    page.apply(step, values, as_wire(result, page.skipped_outputs(step)))


def _poll_job(job: Any, start: float, timeout: float) -> list[tuple[float, dict[str, Any]]]:
    """Fallback when gradio_client's internals cannot be tapped: poll the public outputs.

    Values come whole (gradio_client applied the diffs), stamped up to 5 ms late.
    """
    out: list[tuple[float, dict[str, Any]]] = []
    seen = 0
    while not job.done():
        outputs = job.outputs()
        for value in outputs[seen:]:
            out.append((time.monotonic(), {"msg": "process_generating", "output": {"data": [value]}}))
        seen = len(outputs)
        if time.monotonic() - start > timeout:
            job.cancel()
            out.append(
                (
                    time.monotonic(),
                    {
                        "msg": "process_completed",
                        "success": False,
                        "output": {"error": f"no result within {timeout} s"},
                    },
                )
            )
            return out
        time.sleep(0.005)
    for value in job.outputs()[seen:]:
        out.append((time.monotonic(), {"msg": "process_generating", "output": {"data": [value]}}))
    exc = job.exception()
    if exc is not None:
        out.append((time.monotonic(), {"msg": "process_completed", "success": False, "output": {"error": str(exc)}}))
    else:
        out.append((time.monotonic(), {"msg": "process_completed", "output": {"data": [job.result()]}}))
    return out


def record_transcript(
    url: str,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    *,
    files: Sequence[str | Path] = (),
    timeout: float = 600.0,
    token: str | None = None,
) -> dict[str, Any]:
    """Send `prompts` as one conversation (one session) and return the transcript dict.

    `files` are attached to the first prompt. A turn that fails is recorded (as an `error`
    update) and ends the recording, since later turns would answer a different history.
    """
    import qwen_space_adapter

    target = SpaceTarget(url=url.rstrip("/"), token=token)
    recorder = _Recorder()
    try:
        client = gci.AdapterClient(target.url, **target.client_kwargs())
    except Exception as exc:
        raise translate(exc, target.url) from None
    try:
        page = Page.from_config(client.config)
        answer = page.answer_step
        position = answer.outputs.index(page.chatbot_id)
        session_hash = generate_session_hash()
        client.session_hash = session_hash
        tapped = gci.tap_supported()
        if tapped:
            gci.tap(client, recorder.sink, recorder.on_register)
        diffs = page.protocol != "sse_v1"
        values = page.initial_values()
        if values.get(page.chatbot_id) is None:
            values[page.chatbot_id] = []
        turns: list[dict[str, Any]] = []
        for index, prompt in enumerate(prompts):
            attach = (
                [upload(client, Path(p).name, Path(p).read_bytes(), "text/plain") for p in files] if index == 0 else []
            )
            values[page.input_id] = page.user_value(prompt, attach)
            t0 = time.monotonic()
            outcomes: dict[int, str] = {}
            # A new session's page runs its load steps first, then the submit's steps.
            for step in page.walk((*(page.load_steps if index == 0 else ()), *page.before_answer), outcomes):
                _run_step(client, page, step, values, timeout)
                outcomes[step.fn_index] = OK
            add_seconds = time.monotonic() - t0
            start = time.monotonic()
            job = client.submit(*page.args(answer, values), fn_index=answer.fn_index)
            failed: str | None = None
            if tapped:
                try:
                    job.result(timeout=timeout)
                except Exception as exc:  # recorded below from the raw messages, or from here
                    failed = str(exc) or type(exc).__name__
                event_id = recorder.registered[-1] if recorder.registered else ""
                messages = recorder.take(event_id)
            else:
                messages = _poll_job(job, start, timeout)
            updates, final = updates_from_messages(messages, start, diffs and tapped, position)
            failed = failed or next((str(u["error"]) for u in updates if u["kind"] == "error"), None)
            if failed and not any(u["kind"] == "error" for u in updates):
                updates.append({"t": round(time.monotonic() - start, 6), "kind": "error", "error": failed})
            turns.append(
                {
                    "index": index,
                    "prompt": prompt,
                    "files": [Path(p).name for p in files] if index == 0 else [],
                    "before_answer_seconds": round(add_seconds, 6),
                    "updates": updates,
                }
            )
            if failed or final is None:
                break
            values[page.chatbot_id] = final
            outcomes[answer.fn_index] = OK
            for step in page.walk(page.after_answer, outcomes):
                _run_step(client, page, step, values, timeout)
                outcomes[step.fn_index] = OK
    finally:
        close_client(client)
    transcript = {
        "format": replay.FORMAT,
        "version": replay.VERSION,
        "recorded_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "target": target.url,
        "space": page.describe(),
        "recorder": {
            "qwen_space_adapter": getattr(qwen_space_adapter, "__version__", "?"),
            "gradio_client": gci.GC_VERSION,
            "tapped": tapped,
        },
        "session_hash": session_hash,
        "turns": turns,
    }
    return replay.validate(transcript)


def save_transcript(transcript: dict[str, Any], path: str | Path) -> Path:
    """Write a transcript as indented UTF-8 JSON (diff-friendly when kept as a fixture)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(transcript, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def recorded_failure(transcript: dict[str, Any]) -> str | None:
    """The first recorded error, if a turn failed (the CLI reports it and exits non-zero)."""
    for turn in transcript["turns"]:
        for u in turn["updates"]:
            if u["kind"] == "error":
                return f"turn {turn['index']}: {u.get('error')}"
    return None


__all__ = [
    "DEFAULT_PROMPTS",
    "record_transcript",
    "recorded_failure",
    "save_transcript",
    "updates_from_messages",
]
