"""The integration-test harness: checks pass on a good target and fail on a broken one.

A conformance check is only worth running if it can fail. So every check is run twice here:
against the replica as it is (pass), and against a broken variant of exactly the piece it
claims to watch (fail): a Space whose API changed, a Space that does not stream, a faulty
replica, or an adapter with one piece broken by monkeypatching. Record and replay are proven
by recording the replica, replaying the recording, and recording the replay again.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from qwen_space_adapter import clients, ending, provider, turn
from qwen_space_adapter.conversation import generate_session_hash
from qwen_space_adapter.deltas import DeltaTracker
from qwen_space_adapter.errors import InvalidRequestError, ReplicaError
from qwen_space_adapter.events import Reasoning, Summary
from qwen_space_adapter.harness import CHECK_NAMES, record_transcript, run_suite, save_transcript
from qwen_space_adapter.harness.checks import FAIL, PASS, SKIP
from qwen_space_adapter.harness.metrics import percentile
from qwen_space_adapter.harness.report import to_junit
from qwen_space_adapter.messages import Message
from qwen_space_adapter.provider import Qwen_Qwen_2_5M
from qwen_space_adapter.replica import replay

FIXTURE = Path(__file__).parent / "fixtures" / "replica_transcript.json"


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qwen_space_adapter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _status(url: str, name: str, **kwargs: Any) -> tuple[str, str]:
    result = run_suite(url, [name], **kwargs).results[0]
    return result.status, result.detail


# --- the suite passes, and reports ---------------------------------------------------------


def test_check_replica_passes_every_check_and_writes_reports(tmp_path: Path) -> None:
    out_json, out_xml = tmp_path / "report.json", tmp_path / "report.xml"
    proc = _cli("check", "replica", "--samples", "1", "--json", str(out_json), "--junit", str(out_xml))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in CHECK_NAMES:
        assert any(line.split()[:2] == [name, "PASS"] for line in proc.stdout.splitlines()), proc.stdout
    assert "PASSED: 10 passed, 0 failed" in proc.stdout
    assert "time_to_first_token" in proc.stdout and "p99" in proc.stdout

    report = json.loads(out_json.read_text())
    assert report["format"] == "qwen-space-check" and report["passed"] is True and report["replica"]
    assert [c["name"] for c in report["checks"]] == list(CHECK_NAMES)
    assert {c["status"] for c in report["checks"]} == {PASS}
    assert report["space"]["chain"] == [1, 2] and report["space"]["answer"] == 2
    for key in ("queue_wait", "time_to_first_token", "inter_token_gap", "tokens_per_second"):
        dist = report["metrics"][key]
        assert dist["n"] > 0 and dist["p50"] <= dist["p90"] <= dist["p99"]

    root = ET.parse(out_xml).getroot()
    suite = root.find("testsuite")
    assert root.tag == "testsuites" and suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("10", "0", "0")
    assert [c.get("name") for c in suite.iter("testcase")] == list(CHECK_NAMES)
    assert all(float(c.get("time", "x")) >= 0 for c in suite.iter("testcase"))
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["replica"] == "true" and float(props["time_to_first_token.p50_s"]) > 0


def test_unreachable_target_fails_the_api_check_and_exits_nonzero(tmp_path: Path) -> None:
    out_json, out_xml = tmp_path / "r.json", tmp_path / "r.xml"
    proc = _cli("check", "http://127.0.0.1:9", "--json", str(out_json), "--junit", str(out_xml))
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "cannot reach http://127.0.0.1:9" in proc.stdout
    report = json.loads(out_json.read_text())
    assert report["passed"] is False
    assert report["checks"][0]["status"] == FAIL
    assert {c["status"] for c in report["checks"][1:]} == {SKIP}
    suite = ET.parse(out_xml).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("skipped") == "9"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["api"].find("failure") is not None
    assert cases["stream"].find("skipped") is not None


def test_unknown_check_name_is_a_usage_error() -> None:
    assert _cli("check", "replica", "--checks", "api,nonsense").returncode == 2


def test_junit_stays_valid_xml_with_control_characters(qwen_replica: Any) -> None:
    result = run_suite(qwen_replica.url, ["bad-input"])
    result.results[0].detail = "odd \x00\x1b text <&>"
    result.results[0].status = FAIL
    text = ET.tostring(to_junit(result).getroot(), encoding="unicode")
    assert ET.fromstring(text).find("testsuite/testcase/failure") is not None


def test_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0], 90) == 3.0


# --- every check catches what it claims to catch -------------------------------------------


class _Config(BaseHTTPRequestHandler):
    """A 'Space' whose API changed: a Gradio app without the add_text -> predict pair."""

    config: ClassVar[dict[str, Any]] = {
        "version": "5.9.1",
        "protocol": "sse_v3",
        "components": [{"id": 1, "type": "chatbot"}, {"id": 2, "type": "textbox"}],
        "dependencies": [{"id": 0, "inputs": [2], "outputs": [1], "trigger_after": None}],
    }

    def do_GET(self) -> None:
        body = json.dumps(self.config).encode() if self.path.startswith("/config") else b"{}"
        self.send_response(200 if self.path.startswith("/config") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def changed_space() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Config)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_api_check_fails_when_the_space_changed(qwen_replica: Any, changed_space: str) -> None:
    assert _status(qwen_replica.url, "api")[0] == PASS
    status, detail = _status(changed_space, "api")
    assert status == FAIL and "no input whose submit leads to a chatbot" in detail


class _LossyTracker(DeltaTracker):
    """An adapter bug: the third delta of an answer gets lost."""

    def feed(self, snapshot: str | None, *, final: bool = False) -> list[Any]:
        items = super().feed(snapshot, final=final)
        self.count = getattr(self, "count", 0)
        kept = []
        for item in items:
            if isinstance(item, str):
                self.count += 1
                if self.count == 3:
                    continue
            kept.append(item)
        return kept


def _forgetful_open_client(real: Any) -> Any:
    """An adapter bug: every turn goes to a fresh session, so the Space forgets the history."""
    return lambda info, session_hash, *a: real(info, generate_session_hash(), *a)


def _lenient_validate(real: Any) -> Any:
    """An adapter bug: invalid messages are patched up and sent instead of refused."""

    def validate(messages: Any) -> list[Message]:
        try:
            return list(real(messages))
        except InvalidRequestError:
            return [Message("user", "hi")]

    return validate


def _no_cancel(client: Any, jobs: list[Any]) -> None:
    """An adapter bug: leaving a stream early neither cancels the job nor ends its stream."""
    clients.close_client(client, wait=False)


BROKEN: dict[str, Any] = {
    "concat": lambda mp: mp.setattr(turn, "DeltaTracker", _LossyTracker),
    "events": lambda mp: mp.setattr(
        turn, "DeltaTracker", lambda: DeltaTracker(placeholder="(none)", marker="\n<nothing>")
    ),
    "context": lambda mp: mp.setattr(turn.clients, "open_client", _forgetful_open_client(turn.clients.open_client)),
    "system": lambda mp: mp.setattr(
        provider,
        "build_prompt",
        lambda msgs, new_from=0, real=provider.build_prompt: real(
            [m for m in msgs if m.role != "system"], new_from=new_from
        ),
    ),
    "attachment": lambda mp: mp.setattr(
        provider,
        "parse_options",
        lambda *a, real=provider.parse_options, **k: dataclasses.replace(real(*a, **k), files=()),
    ),
    "cancel": lambda mp: mp.setattr(ending, "end_client", _no_cancel),
    "bad-input": lambda mp: mp.setattr(provider, "validate_messages", _lenient_validate(provider.validate_messages)),
}


@pytest.mark.parametrize("check", sorted(BROKEN))
def test_check_fails_when_its_adapter_piece_is_broken(
    check: str, qwen_replica: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, detail = _status(qwen_replica.url, check)
    assert status == PASS, detail  # the control: the same check passes with the adapter intact
    BROKEN[check](monkeypatch)
    status, detail = _status(qwen_replica.url, check)
    assert status == FAIL, detail


def test_checks_fail_against_a_faulty_replica(qwen_replica_factory: Any) -> None:
    faulty = qwen_replica_factory(fault="error-mid-stream")
    result = run_suite(faulty.url, samples=1, timeout=30)
    statuses = {r.name: r.status for r in result.results}
    answering = {"stream", "concat", "events", "context", "system", "attachment", "timing"}
    assert {statuses[n] for n in answering} == {FAIL}, statuses
    assert "failed mid-stream" in next(r.detail for r in result.results if r.name == "stream")
    assert statuses["api"] == statuses["bad-input"] == PASS  # the API itself is intact
    assert not result.passed


def _one_jump(transcript: dict[str, Any]) -> dict[str, Any]:
    """The same answers, sent in one update after the placeholder: a Space that stopped streaming."""
    out = copy.deepcopy(transcript)
    for t in out["turns"]:
        gen = [u for u in t["updates"] if u["kind"] == "generating"]
        t["updates"] = [u for u in t["updates"] if u["kind"] != "generating" or u in (gen[0], gen[-1])]
    return out


def test_stream_and_timing_checks_fail_when_the_space_stops_streaming(
    qwen_replica_factory: Any, tmp_path: Path
) -> None:
    path = save_transcript(_one_jump(json.loads(FIXTURE.read_text())), tmp_path / "one-jump.json")
    jumpy = qwen_replica_factory(replay=str(path), replay_speed=10.0)
    result = run_suite(jumpy.url, ["stream", "concat", "timing"], samples=1)
    statuses = {r.name: r.status for r in result.results}
    assert statuses == {"stream": FAIL, "concat": PASS, "timing": FAIL}, result.results
    assert "1 delta(s)" in result.results[0].detail


# --- record and replay ---------------------------------------------------------------------


def test_shipped_fixture_is_a_valid_replayable_transcript() -> None:
    player = replay.load(str(FIXTURE))
    assert [t["prompt"] for t in player.turns][:2] == [
        "Remember the word PLUM. Reply with one short sentence.",
        "What word did I ask you to remember?",
    ]
    for index, t in enumerate(player.turns):
        generating = [u for u in t["updates"] if u["kind"] == "generating"]
        steps, fast = player.schedule(index, 1.0), player.schedule(index, 4.0)
        assert [s.bot for s in steps] == [u["bot"] for u in generating]
        assert steps[0].delay == 0 and replay.text_of(steps[0].bot) == "Qwen is thinking..."
        gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(generating)]
        assert [s.delay for s in steps[1:]] == pytest.approx(gaps)
        assert [s.delay for s in fast] == pytest.approx([s.delay / 4 for s in steps])
    with pytest.raises(replay.ReplayExhausted, match="records 3 turn"):
        player.turn(len(player.turns))  # a longer session is an error, never a silent wrap-around
    with pytest.raises(replay.TranscriptError):
        replay.validate({"format": "something else"})
    data = json.loads(FIXTURE.read_text())
    assert data["version"] == 1 and replay.validate(data) is data  # files recorded before version 2 still read
    with pytest.raises(replay.TranscriptError, match="reads versions 1, 2"):
        replay.validate({**data, "version": 3})


def test_replay_raises_a_recorded_error_with_the_recorded_message() -> None:
    data = json.loads(FIXTURE.read_text())
    updates = data["turns"][0]["updates"]
    cut = next(i for i, u in enumerate(updates) if u["kind"] == "generating") + 3
    error = {"t": updates[cut]["t"], "kind": "error", "error": "'Replica fault: failed.'"}
    data["turns"][0]["updates"] = [*updates[:cut], error]
    steps = replay.Replayer(data).schedule(0)
    assert [s.error for s in steps] == [None, None, None, "Replica fault: failed."]  # Gradio 4 repr()s it
    assert replay.error_message("plain message") == "plain message"


def _expected_items(turn_record: dict[str, Any]) -> list[Any]:
    """What the adapter yields for a turn when every recorded update arrives on its own."""
    tracker, items = DeltaTracker(), []
    for u in turn_record["updates"]:
        if u["kind"] in ("generating", "completed"):
            items += tracker.feed(replay.text_of(u["bot"]), final=u["kind"] == "completed")
    return items


def _is_coalescing_of(actual: list[str], expected: list[str]) -> bool:
    """`actual` is `expected` with runs of consecutive deltas joined (updates that arrived together)."""
    i = 0
    for delta in actual:
        joined = ""
        while i < len(expected) and len(joined) < len(delta):
            joined += expected[i]
            i += 1
        if joined != delta:
            return False
    return i == len(expected)


async def _adapter_turns(url: str, prompts: list[str]) -> list[list[Any]]:
    conv, messages, turns = None, [], []
    for prompt in prompts:
        messages.append({"role": "user", "content": prompt})
        items: list[Any] = []
        async for item in Qwen_Qwen_2_5M.create_async_generator(
            "qwen-2.5-1m", messages, space=url, return_conversation=True, conversation=conv
        ):
            if isinstance(item, str | Reasoning | Summary):
                items.append(item)
            elif hasattr(item, "session_hash"):
                conv = item
        messages.append({"role": "assistant", "content": "".join(i for i in items if isinstance(i, str))})
        turns.append(items)
    return turns


def test_replay_of_a_recording_reproduces_it(qwen_replica: Any, qwen_replica_factory: Any, tmp_path: Path) -> None:
    original = record_transcript(qwen_replica.url)
    prompts = [t["prompt"] for t in original["turns"]]
    assert len(prompts) == 3 and "PLUM" in original["turns"][1]["updates"][-1]["text"]
    path = save_transcript(original, tmp_path / "transcript.json")
    replayed = qwen_replica_factory(replay=str(path), replay_speed=1.0)

    # The replay sends the same updates (recorded again, update by update, nothing merged).
    again = record_transcript(replayed.url, prompts)
    for a, b in zip(original["turns"], again["turns"], strict=True):
        bots = [[u["bot"] for u in t["updates"] if u["kind"] in ("generating", "completed")] for t in (a, b)]
        assert bots[0] == bots[1]

    # The adapter gets the same delta sequence, up to updates it merged because they arrived together.
    adapter = anyio.run(_adapter_turns, replayed.url, prompts)
    for record, items in zip(original["turns"], adapter, strict=True):
        expected = _expected_items(record)
        assert [i for i in items if not isinstance(i, str)] == [i for i in expected if not isinstance(i, str)]
        actual_deltas = [i for i in items if isinstance(i, str)]
        expected_deltas = [i for i in expected if isinstance(i, str)]
        assert "".join(actual_deltas) == "".join(expected_deltas)
        assert _is_coalescing_of(actual_deltas, expected_deltas), (actual_deltas, expected_deltas)
    assert replayed.wait_idle()["completed"] == 2 * len(prompts)


def test_record_command_writes_a_transcript(qwen_replica: Any, tmp_path: Path) -> None:
    out = tmp_path / "rec.json"
    proc = _cli("record", qwen_replica.url, "--out", str(out), "--prompt", "Hello there", "--prompt", "Again")
    assert proc.returncode == 0, proc.stderr
    data = replay.validate(json.loads(out.read_text()))
    assert data["version"] == 2 and data["space"]["answer"] in data["space"]["chain"]
    assert all("before_answer_seconds" in t for t in data["turns"])
    assert [t["prompt"] for t in data["turns"]] == ["Hello there", "Again"]
    kinds = [u["kind"] for u in data["turns"][0]["updates"]]
    assert kinds.count("generating") > 3 and kinds[-1] == "completed"
    assert _cli("record", qwen_replica.url, "--out", str(out), "--file", "/nonexistent.txt").returncode == 2


def test_replica_refuses_a_bad_transcript_at_start(tmp_path: Path) -> None:
    from qwen_space_adapter.replica import Replica

    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "qwen-space-transcript", "version": 1, "turns": []}')
    replica = Replica(replay=str(bad))
    try:
        with pytest.raises(ReplicaError, match="turns"):
            replica.start(timeout=60)
    finally:
        replica.close()


# --- the pytest plugin runs the checks, and skips quickly when the target is away ----------


def _pytest(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            "qwen_space_adapter.harness",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    return proc, time.monotonic() - start


def test_plugin_runs_the_conformance_checks(qwen_replica: Any, tmp_path: Path) -> None:
    proc, _ = _pytest(f"--qwen-space={qwen_replica.url}", f"--junitxml={tmp_path / 'j.xml'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(CHECK_NAMES)} passed" in proc.stdout
    props = [p.get("name") for p in ET.parse(tmp_path / "j.xml").getroot().iter("property")]
    assert "detail" in props


def test_plugin_fails_fast_when_a_named_target_is_unreachable(tmp_path: Path) -> None:
    # A target named on the command line that cannot be reached is an error, not a skip: a
    # typo in CI must not look green (the skip stays for runs that name no target).
    proc, seconds = _pytest("--qwen-space=http://127.0.0.1:9", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{len(CHECK_NAMES)} errors" in proc.stdout
    said = "--qwen-space=http://127.0.0.1:9 was given but cannot be used: cannot reach http://127.0.0.1:9"
    assert said in proc.stdout
    # A bound, not a synchronisation: the whole run (interpreter start included) ends quickly
    # because the probe of a refused port fails at once instead of waiting for a timeout.
    assert seconds < 30, f"failing took {seconds:.1f} s"
