"""`qwen-space load`: each figure shows what it claims, against real replicas; never absolute times.

Why these tests: a load generator that mislabels where time goes (queue vs prefill vs decode),
drops failures, or loses its report on Ctrl-C gives confident wrong answers. So each test makes
the replica produce one known effect (a concurrency limit, a fault share, a slow first token)
and checks that the effect lands in the figure meant for it, by relations and ratios only.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_session import interrupt, started

from qwen_space_adapter.errors import InvalidRequestError
from qwen_space_adapter.harness import load as load_mod
from qwen_space_adapter.harness.load import (
    SLO,
    LoadConfig,
    Prompt,
    Shape,
    check_courtesy,
    load_async,
    load_prompts,
    poisson_gaps,
    run_load,
)
from qwen_space_adapter.harness.load.report import read_png_data, to_dict

ROOT = Path(__file__).resolve().parents[1]


def cli_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("HF_TOKEN", None)
    return env


def prompts(*texts: str) -> list[Prompt]:
    return [Prompt(t) for t in texts]


def median(values: list[Any]) -> float:
    return statistics.median(v for v in values if v is not None)


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    return path


# ---------------------------------------------------------------------------------------------
# Against replicas


def test_concurrency_limit_shows_as_queue_wait_growing_with_users(qwen_replica_factory: Any) -> None:
    # Why no wall-clock ratio: on a loaded machine every figure stretches. What cannot stretch is
    # the order of events and what the Space said: with one slot, answers are served one by one,
    # the Space reports a queue, and the harness must put each request's wait where the Space did.
    replica = qwen_replica_factory(concurrency_limit=1)
    texts = [f"[[tokens=30]] [[delay=0.01]] request-{i}" for i in range(4)]
    config = LoadConfig(replica.url, Shape(users=1, requests=4), prompts(*texts))
    result = run_load(config, [1, 4])
    one, four = result.levels
    assert [lv.level for lv in result.levels] == [1, 4] and result.sweep == "users"
    assert all(r.status == "ok" for lv in result.levels for r in lv.records)
    served = replica.wait_idle(15)
    assert served["completed"] == 8 and served["active"] == 0, served
    # The replica's own stamps: the slot served one generation at a time (level 4 ran last).
    runs = sorted(served["requests"][-4:], key=lambda r: r["began"])
    assert all(later["began"] >= earlier["ended"] for earlier, later in itertools.pairwise(runs)), runs
    # The Space's queue said so: someone was behind someone else, and the harness kept it.
    assert any((r.max_position or 0) >= 1 for r in four.records)
    assert sum(r.queue_events for r in four.records) > sum(r.queue_events for r in one.records)

    # Each request's wait ends when the Space starts it: the order in which the harness saw the
    # waits end (submission + queue wait) is the order in which the replica began the answers.
    def tag(text: str) -> str:
        return next(t for t in texts if t in text)

    seen = [texts[r.index % 4] for r in sorted(four.records, key=lambda r: r.submitted + (r.queue_wait or 0))]
    assert seen == [tag(r["user_text"]) for r in runs], (seen, runs)
    # With one user nobody waits behind anybody: the Space never reported a position past the head.
    assert all((r.max_position or 0) == 0 for r in one.records)


def test_fault_share_shows_as_classed_errors(qwen_replica_url: str) -> None:
    texts = (
        "fine [[tokens=8]]",
        "[[fault:error-before-first-token]]",
        "also fine [[tokens=8]]",
        "[[fault:error-mid-stream]] [[tokens=10]]",
    )
    config = LoadConfig(qwen_replica_url, Shape(users=2, requests=8), prompts(*texts))
    level = run_load(config).levels[0]
    s = level.summary()
    assert (s["requests"], s["ok"], s["failed"], s["interrupted_requests"]) == (8, 4, 4, 0)
    assert s["errors"] == {"SpaceAppError": 4}
    assert s["error_rate"] == pytest.approx(0.5)
    by_prompt: dict[str, list[Any]] = {}
    for r in level.records:
        by_prompt.setdefault(texts[r.index % len(texts)], []).append(r)
    for r in by_prompt["[[fault:error-before-first-token]]"]:
        assert r.status == "error" and r.ttft is None and r.deltas == 0 and "first token" in (r.message or "")
    for r in by_prompt["[[fault:error-mid-stream]] [[tokens=10]]"]:
        assert r.status == "error" and r.deltas > 0 and r.e2e is None  # partial answers are still failures
    # Failures are counted, never part of the latency figures, and fail the goodput.
    assert level.metrics()["e2e"].n == 4
    assert s["goodput"]["share"] == pytest.approx(0.5)


def test_slow_first_token_shows_as_thinking_and_ttft(qwen_replica_url: str) -> None:
    slow, fast = "[[fault:slow-first-token=1.0]] [[tokens=5]]", "[[tokens=5]]"
    config = LoadConfig(qwen_replica_url, Shape(users=2, requests=6), prompts(slow, fast))
    level = run_load(config).levels[0]
    assert all(r.status == "ok" for r in level.records)
    for r in level.records:  # the figures nest: e2e >= TTFT >= queue wait, thinking within TTFT
        assert r.e2e is not None and r.ttft is not None and r.queue_wait is not None and r.thinking is not None
        assert r.e2e >= r.ttft >= r.queue_wait >= 0
        assert 0 <= r.thinking <= r.ttft
    slow_r = [r for r in level.records if r.index % 2 == 0]
    fast_r = [r for r in level.records if r.index % 2 == 1]
    assert median([r.ttft for r in slow_r]) > median([r.ttft for r in fast_r])
    assert median([r.thinking for r in slow_r]) > 3 * median([r.thinking for r in fast_r])
    # The delay is the model's thinking, not the queue's.
    for r in slow_r:
        thinking, wait, ttft = r.thinking or 0.0, r.queue_wait or 0.0, r.ttft or 0.0
        assert thinking > wait and thinking > 0.5 * ttft


def test_open_loop_ramp_and_turns(qwen_replica_url: str) -> None:
    # Open loop: exactly the requests asked for, submitted in Poisson order.
    config = LoadConfig(qwen_replica_url, Shape(rate=20, requests=5), prompts("[[tokens=3]]"))
    level = run_load(config).levels[0]
    assert len(level.records) == 5 and all(r.status == "ok" for r in level.records)
    assert [r.conversation for r in level.records] == list(range(5))
    # Duration: no request starts after it; the ones running then finish.
    config = LoadConfig(qwen_replica_url, Shape(users=2, duration=0.5), prompts("[[tokens=3]]"))
    level = run_load(config).levels[0]
    assert level.records and all(r.submitted < 0.5 and r.status == "ok" for r in level.records)
    assert level.seconds >= max(r.submitted + (r.end or 0) for r in level.records)
    # Ramp: user u starts at u / ramp, so in user order, and never before its time (a lower bound: a
    # loaded machine can only make a start later); turns: the second turn continues the session.
    config = LoadConfig(qwen_replica_url, Shape(users=3, ramp=10, turns=2), prompts("[[tokens=40]]"), keep_text=True)
    level = run_load(config).levels[0]
    assert len(level.records) == 6 and all(r.status == "ok" for r in level.records)
    firsts = {r.user: r.submitted for r in level.records if r.turn == 0}
    assert sorted(firsts, key=firsts.__getitem__) == [0, 1, 2], firsts
    assert all(firsts[u] >= u / 10 - 0.001 for u in range(3)), firsts  # 1 ms: the timer's own rounding
    for r in level.records:
        assert ("turn 2 of our conversation" in (r.text or "")) == (r.turn == 1)


def test_sweep_writes_png_and_json_that_match(qwen_replica_url: str, tmp_path: Path) -> None:
    jsonl = write_jsonl(tmp_path / "p.jsonl", ["[[tokens=6]]", "[[tokens=12]]"])
    out = {k: tmp_path / f"r.{k}" for k in ("json", "csv", "png")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qwen_space_adapter",
            "load",
            qwen_replica_url,
            "--sweep",
            "1,3",
            "--requests",
            "3",
            "--prompts",
            str(jsonl),
            "--quiet",
            "--json",
            str(out["json"]),
            "--csv",
            str(out["csv"]),
            "--png",
            str(out["png"]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=cli_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out["json"].read_text())
    assert report["format"] == "qwen-space-load" and report["sweep"] == "users"
    assert [lv["level"] for lv in report["levels"]] == [1, 3]
    assert [lv["requests"] for lv in report["levels"]] == [3, 3]
    # The picture carries the numbers it draws, and they are the JSON's.
    assert read_png_data(out["png"]) == report["plot"]
    plot = report["plot"]
    assert plot["levels"] == [1, 3]
    for i, lv in enumerate(report["levels"]):
        for fig in ("queue_wait", "ttft", "e2e"):
            for q in ("p50", "p90", "p99"):
                assert plot["series"][f"{fig} {q}"][i] == lv["metrics"][fig][q]
        assert plot["series"]["requests_per_s"][i] == lv["throughput"]["requests_per_s"]
    rows = list(csv.DictReader(out["csv"].open()))
    assert [float(r["level"]) for r in rows] == [1.0] * 3 + [3.0] * 3
    assert [r["status"] for r in rows] == ["ok"] * 6
    assert "| users | requests |" in proc.stdout  # the sweep table


def test_ctrl_c_stops_cleanly_and_writes_the_partial_report(qwen_replica_url: str, tmp_path: Path) -> None:
    # User 0 gets short answers (they complete), user 1 a 30 s one (in flight at Ctrl-C).
    jsonl = write_jsonl(tmp_path / "p.jsonl", ["[[tokens=3]]", "[[tokens=3000]] [[delay=0.01]]"])
    report_path, csv_path = tmp_path / "partial.json", tmp_path / "partial.csv"
    args = [
        sys.executable,
        "-m",
        "qwen_space_adapter",
        "load",
        qwen_replica_url,
        "--users",
        "2",
        "--duration",
        "120",
        "--prompts",
        str(jsonl),
        "--progress",
        "0.1",
        "--json",
        str(report_path),
        "--csv",
        str(csv_path),
    ]
    seen: list[str] = []
    with started(args, cwd=ROOT, env=cli_env()) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:  # a progress line every 0.1 s: wait for the state, not for a time
            seen.append(line)
            if "done" in line:
                fields = line.split()
                done, flying = int(fields[fields.index("done") + 1]), int(fields[fields.index("flight") + 1])
                if done >= 2 and flying >= 1:
                    break
            assert len(seen) < 3000, "".join(seen[-20:])
        else:
            pytest.fail("the load ended before it could be interrupted:\n" + "".join(seen[-20:]))
        code, stdout, stderr = interrupt(proc)
    assert code == 130, stderr[-3000:]
    assert "INTERRUPTED" in stdout
    report = json.loads(report_path.read_text())
    assert report["interrupted"] is True
    level = report["levels"][0]
    statuses = [r["status"] for r in level["records"]]
    assert statuses.count("ok") >= 2 and statuses.count("interrupted") >= 1 and "error" not in statuses
    assert level["interrupted"] is True and level["ok"] == statuses.count("ok")
    assert len(list(csv.DictReader(csv_path.open()))) == len(statuses)


# ---------------------------------------------------------------------------------------------
# Pure logic: shapes, SLOs, prompts, courtesy


class NeverSend:
    """A provider that fails the test if anything is sent."""

    @classmethod
    def create_async_generator(cls, *a: Any, **k: Any) -> Any:
        raise AssertionError("a refused load sent a request")


def test_shapes_and_slo_are_checked() -> None:
    assert Shape(users=3, turns=2).check().requests == 6
    assert Shape(rate=2).check().duration == load_mod.DEFAULT_OPEN_DURATION
    for bad in (Shape(), Shape(users=2, rate=1), Shape(users=0), Shape(rate=1, ramp=2), Shape(users=1, turns=0)):
        with pytest.raises(InvalidRequestError):
            bad.check()
    slo = SLO.parse("ttft=2, e2e=10")
    assert slo.limits == (("ttft", 2.0), ("e2e", 10.0)) and str(slo) == "ttft=2,e2e=10"
    for bad_slo in ("tpot=1", "ttft=fast", ""):
        with pytest.raises(InvalidRequestError):
            SLO.parse(bad_slo)


def test_poisson_arrivals_have_the_asked_rate() -> None:
    gen = poisson_gaps(4.0, seed=7)
    gaps = [next(gen) for _ in range(4000)]
    assert 0.95 / 4 < statistics.mean(gaps) < 1.05 / 4
    assert statistics.stdev(gaps) == pytest.approx(statistics.mean(gaps), rel=0.1)  # exponential: sd = mean
    again = poisson_gaps(4.0, seed=7)
    assert [next(again) for _ in range(5)] == gaps[:5]


def test_prompts_file(tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_text("The pass key is 1234.\n")
    good = tmp_path / "p.jsonl"
    good.write_text('{"prompt": "a"}\n\n{"prompt": "b", "files": ["doc.txt"]}\n')
    assert load_prompts(good) == [Prompt("a"), Prompt("b", (str(tmp_path / "doc.txt"),))]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"text": "b"}\n')
    with pytest.raises(InvalidRequestError, match=r"bad.jsonl:2"):
        load_prompts(bad)


def test_courtesy_refuses_heavy_load_on_a_shared_space(mocker: Any) -> None:
    said: list[str] = []
    remote = "https://someone-somespace.hf.space"
    heavy = LoadConfig(remote, Shape(users=3), prompts("hi"), provider=NeverSend)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="--i-own-this-space"):
        run_load(heavy)
    with pytest.raises(InvalidRequestError, match="open loop"):
        check_courtesy(LoadConfig(remote, Shape(rate=1), prompts("hi")), say=said.append)
    with pytest.raises(InvalidRequestError):  # a sweep counts its largest level
        check_courtesy(LoadConfig(remote, Shape(users=1), prompts("hi")), [1, 2, 4], say=said.append)
    assert not said
    # Two users are fine, and what will be sent is printed first.
    check_courtesy(LoadConfig(remote, Shape(users=2), prompts("hello there")), say=said.append)
    assert "hello there" in said[-1] and remote in said[-1]
    # Owning it lifts the limit; a local target never had one.
    check_courtesy(LoadConfig(remote, Shape(users=50), prompts("hi"), i_own_this_space=True), say=said.append)
    check_courtesy(LoadConfig("http://127.0.0.1:7860", Shape(rate=100), prompts("hi")), say=said.append)
    # With a token, the claim is checked: an account that does not own the Space is refused.
    mocker.patch.object(load_mod.courtesy, "ownership", return_value=(False, "the token's account a does not own b/c"))
    claim = LoadConfig(remote, Shape(users=5), prompts("hi"), target="b/c", token="hf_x", i_own_this_space=True)
    with pytest.raises(InvalidRequestError, match="does not own"):
        check_courtesy(claim, say=said.append)
    assert "does not own b/c" in said[-1] and "hf_x" not in " ".join(said)


def test_cli_refuses_before_sending(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qwen_space_adapter", "load", "https://someone-somespace.hf.space", "--users", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=cli_env(),
    )
    assert proc.returncode == 2 and "--i-own-this-space" in proc.stderr, proc.stderr
    assert "will send" not in proc.stderr and not proc.stdout


def test_ownership_check_fails_soft(mocker: Any) -> None:
    hub = pytest.importorskip("huggingface_hub")
    mocker.patch.object(hub.HfApi, "whoami", side_effect=OSError("offline"))
    owned, why = load_mod.ownership("a/b", "hf_secret")
    assert owned is None and "not checked" in why and "hf_secret" not in why
    mocker.patch.object(hub.HfApi, "whoami", return_value={"name": "me", "orgs": [{"name": "team"}]})
    mocker.patch.object(hub.HfApi, "space_info", side_effect=OSError("offline"))
    assert load_mod.ownership("team/space", "t")[0] is True
    assert load_mod.ownership("other/space", "t")[0] is False


def test_report_dict_counts_every_request_under_trio(qwen_replica_url: str) -> None:
    import functools

    import anyio

    config = LoadConfig(qwen_replica_url, Shape(users=1, requests=2), prompts("[[tokens=4]]"))
    report = to_dict(anyio.run(functools.partial(load_async, config), backend="trio"))
    level = report["levels"][0]
    assert level["requests"] == len(level["records"]) == 2
    assert set(level["metrics"]) == {"queue_wait", "thinking", "ttft", "gap", "e2e", "deltas", "chars"}
    assert level["metrics"]["deltas"]["n"] == 2 and level["throughput"]["chars_per_s"] > 0


# --- issue 19, item 4: a prompt set uploads only its own folder's files, and shows every one ----


@pytest.fixture
def prompt_set(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "sub").mkdir()
    (folder / "doc.txt").write_text("inside")
    (folder / "sub" / "deep.txt").write_text("deeper inside")
    secret = tmp_path / "secret.txt"  # next to the prompt set, not in it
    secret.write_text("the private key")
    (folder / "link.txt").symlink_to(secret)
    return {"folder": folder, "secret": secret}


def _jsonl(folder: Path, files: list[str]) -> Path:
    path = folder / "p.jsonl"
    path.write_text(json.dumps({"prompt": "read this", "files": files}) + "\n")
    return path


@pytest.mark.parametrize("escape", ["../secret.txt", "sub/../../secret.txt", "link.txt", "ABSOLUTE"])
def test_prompt_files_outside_the_set_are_refused_unless_allowed(prompt_set: dict[str, Path], escape: str) -> None:
    given = str(prompt_set["secret"]) if escape == "ABSOLUTE" else escape
    path = _jsonl(prompt_set["folder"], ["doc.txt", given])
    with pytest.raises(InvalidRequestError, match="outside the prompt set's folder") as caught:
        load_prompts(path)
    assert "--allow-files-outside-prompts-dir" in str(caught.value) and "p.jsonl:1" in str(caught.value)
    loaded = load_prompts(path, allow_outside=True)
    assert Path(loaded[0].files[1]).resolve() == prompt_set["secret"].resolve()


def test_prompt_files_inside_the_set_are_accepted(prompt_set: dict[str, Path]) -> None:
    folder = prompt_set["folder"]
    path = _jsonl(folder, ["doc.txt", "sub/deep.txt", str(folder / "doc.txt"), "./sub/../doc.txt"])
    assert len(load_prompts(path)[0].files) == 4


def test_the_plan_lists_every_file_with_its_path(prompt_set: dict[str, Path]) -> None:
    folder = prompt_set["folder"]
    many = [Prompt(f"prompt {i}") for i in range(5)] + [
        Prompt("late", (str(folder / "sub" / "deep.txt"),)),  # past the three prompts shown
        Prompt("link", (str(folder / "link.txt"),)),
        Prompt("again", (str(folder / "sub" / "deep.txt"),)),
    ]
    said: list[str] = []
    check_courtesy(LoadConfig("https://someone-somespace.hf.space", Shape(users=1), many), say=said.append)
    plan = said[-1]
    assert "Files it will upload (2):" in plan
    assert f"{(folder / 'sub' / 'deep.txt').resolve()} (13 bytes)" in plan
    assert f"{prompt_set['secret'].resolve()} (15 bytes)" in plan  # the symlink's real target, not its name
    assert "Files it will upload: none." in load_mod.describe_plan(
        LoadConfig("https://someone-somespace.hf.space", Shape(users=1), prompts("hi"))
    )


def test_cli_refuses_a_prompt_set_that_reaches_outside(prompt_set: dict[str, Path]) -> None:
    path = _jsonl(prompt_set["folder"], ["../secret.txt"])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qwen_space_adapter",
            "load",
            "https://someone-somespace.hf.space",
            "--prompts",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=cli_env(),
    )
    assert proc.returncode == 2 and "--allow-files-outside-prompts-dir" in proc.stderr, proc.stderr
    assert "will send" not in proc.stderr and not proc.stdout
