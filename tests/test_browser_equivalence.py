"""The adapter runs the Space's page as the page's own browser does: the browser is the judge.

For every replica flavor, headless Chromium plays a person's session on the page (type, Enter, the
upload button, a follow-up or an @-mention, an answer that fails mid-stream, a turn after it) and
the adapter plays the same session through its public API, each through its own recording proxy
in front of the same replica. The two wire recordings, normalised only where two clients
legitimately differ (`tests/browser/compare.py`, `ACCEPTED`), must be equal: the same steps in the
same order per turn, on the same routes, with the same `fn_index`, `data`, `trigger_id`,
`event_data`, uploads and outputs. A failure prints the diff of the two recordings.

Adding a flavor is one `Case` line. `QWEN_BROWSER_DUMP=DIR` writes each flavor's recordings to
`DIR/<id>.json`; `python -m tests.browser.dump --ui ...` does the same for one flavor outside pytest.
No flavor is expected to differ: every difference the judge found (issue 18) is fixed in the
engine. What the page itself cannot play (Gradio 6 after a failed answer) is named in `page_limits`.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.browser.compare import diff, kinds, summary
from tests.browser.fixtures import chromium  # noqa: F401  (the module's browser fixture)
from tests.browser.run import Case, Result, run_case
from tests.browser.scenario import DOCUMENT_NAME, DOCUMENT_TEXT, turns

# What the page itself cannot do in the scenario, named once: the judge compares the turns the
# page played, and the turns it could not are the adapter's alone (an accepted difference).
G6_STUCK = (
    "after a failed answer the Gradio 6 page keeps its input disabled and the Stop button shown: "
    "a person cannot ask the next turn (Gradio 6's frontend runs only `.failure` steps after an "
    "error, and ChatInterface re-enables its input in a `.then` step)"
)

CASES = [
    Case("hand", {"ui": "hand"}),
    Case("qwen-agent-0.0.11", {"ui": "qwen-agent"}),
    Case("qwen-agent-0.0.11-2-agents-mention", {"ui": "qwen-agent", "agents": 2, "mention": True}),
    Case("qwen-agent-0.0.34", {"ui": "qwen-agent==0.0.34"}),
    Case("gradio6", {"ui": "gradio6"}, page_limits=(G6_STUCK,)),
]


def _available(case: Case) -> str | None:
    """Why a flavor cannot be started from this checkout (not there yet), or None."""
    from qwen_space_adapter.errors import ReplicaError
    from qwen_space_adapter.replica.flavors import flavor

    try:
        flavor(case.settings["ui"])
    except ReplicaError as e:
        return f"replica flavor {case.settings['ui']!r} is not in this checkout yet: {e}"
    return None


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def equivalence(
    request: pytest.FixtureRequest,
    chromium: Any,  # noqa: F811
    qwen_shared_replica: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Case, Result]:
    """Both clients' recordings of one flavor, played once and read by every test below."""
    case: Case = request.param
    reason = _available(case)
    if reason:
        pytest.skip(reason)
    replica = qwen_shared_replica(**case.settings)
    result = run_case(chromium, str(replica.url), case.mention, tmp_path_factory.mktemp(case.id))
    folder = os.environ.get("QWEN_BROWSER_DUMP")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{case.id}.json").write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False))
    return case, result


def test_the_browser_played_the_session(equivalence: tuple[Case, Result], request: pytest.FixtureRequest) -> None:
    """The judge itself works: every turn of the browser's recording ran the page's chain, the
    document went up with its bytes, name and type, the failed answer failed and the next turn was
    answered. A driver that never submitted (or waited on the wrong thing) fails here, not silently."""
    case, result = equivalence
    if case.page_limits:
        request.applymarker(
            pytest.mark.xfail(strict=False, reason="the page cannot play the scenario: " + "; ".join(case.page_limits))
        )
    if result.retried:
        warnings.warn(
            f"{case.id}: the page's script crashed and the browser's run was played again: {result.retried}",
            stacklevel=1,
        )
    unfinished = [o.unfinished for o in result.browser_outcomes if o.unfinished]
    assert not unfinished, unfinished[0]
    scenario = turns(case.mention)
    by_turn = {t["turn"]: t["entries"] for t in result.browser}
    for turn in scenario:
        steps = [e for e in by_turn.get(turn.label, []) if "fn_index" in e]
        assert steps, f"the browser ran no step in turn {turn.label!r}"
        assert any(turn.text in json.dumps(e["data"], ensure_ascii=False) for e in steps), turn.label
        failed = [e for e in steps if "error" in e]
        assert bool(failed) == turn.fails, f"turn {turn.label!r}: failed steps {failed}"
    uploads = [e for e in by_turn[scenario[1].label] if e["route"] == "upload"]
    assert [(p["filename"], p["bytes"]) for u in uploads for p in u["parts"]] == [(DOCUMENT_NAME, DOCUMENT_TEXT)]
    assert "4217" in result.browser_outcomes[1].text  # the answer read the uploaded document
    assert "4217" in result.adapter_outcomes[1].text, "the adapter's answer did not read the document"
    assert result.adapter_outcomes[3].error and not result.adapter_outcomes[4].error


def test_the_adapter_runs_the_page_as_its_browser_does(equivalence: tuple[Case, Result]) -> None:
    """Both recordings, normalised, are equal; else the readable diff and the differences, per turn."""
    case, result = equivalence
    browser, adapter = result.browser, result.adapter
    if case.page_limits:  # the turns the page could not play are the adapter's alone
        played = {t["turn"] for t in browser}
        adapter = [t for t in adapter if t["turn"] in played]
        assert len(adapter) < len(result.adapter), "the page played every turn: drop its page_limits"
    differences, the_diff = summary(browser, adapter), diff(browser, adapter)
    assert not differences and not the_diff, (
        "the adapter's wire differs from the page's browser; by kind:\n  "
        + "\n  ".join(kinds(differences))
        + "\n\nevery difference:\n  "
        + "\n  ".join(differences)
        + "\n\nnormalised recordings, browser vs adapter:\n"
        + the_diff
    )


def _exchange(
    turn: str | None,
    method: str,
    path: str,
    body: Any = None,
    response: Any = None,
    sse: list[Any] | None = None,
    query: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    return {
        "turn": turn,
        "method": method,
        "path": path,
        "query": query or {},
        "json": body,
        "parts": None,
        "status": 200,
        "response_json": response,
        "sse": sse or [],
    }


def _client(session: str, port: int, upload: str, *, trigger: bool = True, page: bool = True) -> list[dict[str, Any]]:
    """A small synthetic recording of one turn with an upload, as either client could make it."""
    ids = {"trigger_id": 5, "event_data": None} if trigger else {}
    file = {"path": upload, "url": f"http://127.0.0.1:{port}/file={upload}", "orig_name": "minutes.txt"}
    xs = (
        [_exchange(None, "GET", "/"), _exchange(None, "GET", f"/heartbeat/{session}")]
        if page
        else [_exchange(None, "GET", "/config"), _exchange("t", "GET", "/app_id")]
    )
    xs += [
        {
            **_exchange("t", "POST", "/upload", response=[upload]),
            "parts": [{"name": "files", "filename": "minutes.txt", "content_type": "text/plain", "bytes": "4217"}],
        },
        _exchange(
            "t",
            "POST",
            "/run/predict",
            {"fn_index": 0, "data": [{"files": [file], "text": "hi"}, [], ["x"]], "session_hash": session, **ids},
            {"data": [None, [["hi", None]], None], "duration": port / 1000},
        ),
        _exchange(
            "t",
            "POST",
            "/queue/join",
            {"fn_index": 1, "data": [[["hi", None]], None], "session_hash": session, **ids},
            {"event_id": f"e{port}"},
        ),
        _exchange(
            "t",
            "GET",
            "/queue/data",
            query={"session_hash": [session]},
            sse=[
                {
                    "msg": "process_completed",
                    "event_id": f"e{port}",
                    "success": True,
                    "output": {"data": [[["hi", f"file {upload}"]], None], "duration": port},
                }
            ],
        ),
    ]
    return xs


CONFIG = {
    "components": [{"id": 1, "type": "textbox"}, {"id": 2, "type": "chatbot"}, {"id": 3, "type": "state"}],
    "dependencies": [{"inputs": [1, 2, 3], "outputs": [1, 2, 3]}, {"inputs": [2, 3], "outputs": [2, 3]}],
}


def test_the_comparison_normalises_only_what_two_clients_legitimately_differ_in() -> None:
    """Sessions, ports, upload paths, event ids, timings, State slots and the page's own requests
    are normalised; a missing `trigger_id` or a step run elsewhere is not. Fast: no browser."""
    from tests.browser.compare import Normaliser, diff, summary

    norm = Normaliser(CONFIG)
    browser = norm.steps(_client("aaaa1111", 40001, "/tmp/gradio/" + "a" * 40 + "/minutes.txt"))
    adapter = norm.steps(_client("bbbb2222", 40002, "/tmp/gradio/" + "b" * 40 + "/minutes.txt", page=False))
    assert diff(browser, adapter) == "" and summary(browser, adapter) == []

    bare = norm.steps(_client("bbbb2222", 40002, "/tmp/x/minutes.txt", trigger=False, page=False))
    found = summary(browser, bare)
    assert any('trigger_id: browser 5 != adapter "<absent>"' in f for f in found), found
    assert '- "trigger_id": 5' in diff(browser, bare)  # the readable diff shows it too

    queued = _client("bbbb2222", 40002, "/tmp/x/minutes.txt", page=False)
    queued[3]["path"] = "/queue/join"  # the unqueued step sent to the queue
    found = summary(browser, norm.steps(queued))
    assert any(
        "browser ran [upload, run/predict fn 0, queue/join fn 1]; adapter ran [upload, queue/join fn 0" in f
        for f in found
    ), found


def test_a_change_listener_and_the_steps_sent_with_it_are_compared_in_either_order() -> None:
    """The page sends a step's chained steps and the change events its outputs fired at once:
    under load either reaches the server first. Nothing else moves. Fast: no browser."""
    from tests.browser.compare import Normaliser

    config = {
        "components": [{"id": 1, "type": "textbox"}, {"id": 2, "type": "chatbot"}, {"id": 9, "type": "dropdown"}],
        "dependencies": [
            {"targets": [[9, "change"]], "inputs": [9], "outputs": [1]},  # fn 0 listens to 9
            {"targets": [[1, "submit"]], "inputs": [1, 2], "outputs": [1, 2]},
            {"trigger_after": 1, "inputs": [2], "outputs": [2, 9]},  # fn 2 outputs 9
            {"trigger_after": 2, "inputs": [2], "outputs": [2]},  # fn 3 is chained after it
            {"trigger_after": 3, "inputs": [], "outputs": [1]},
        ],
    }
    norm = Normaliser(config)

    def entries(*steps: tuple[str, int]) -> list[dict[str, Any]]:
        return [{"route": route, "fn_index": fn} for route, fn in steps]

    predict, join = "run/predict", "queue/join"
    browser = entries((predict, 1), (join, 2), (predict, 0), (join, 3), (join, 4))
    adapter = entries((predict, 1), (join, 2), (join, 3), (predict, 0), (join, 4))
    assert norm._siblings_sorted(browser) == norm._siblings_sorted(adapter)
    before_its_trigger = entries((predict, 1), (predict, 0), (join, 2), (join, 3), (join, 4))
    assert norm._siblings_sorted(before_its_trigger) != norm._siblings_sorted(browser)
    after_the_next_step = entries((predict, 1), (join, 2), (join, 3), (join, 4), (predict, 0))
    assert norm._siblings_sorted(after_the_next_step) != norm._siblings_sorted(browser)


def test_a_chained_step_recorded_after_the_drivers_next_mark_belongs_to_its_turn() -> None:
    """The driver moves on when the page is usable and nothing is in flight, which can fall just
    before the fetch of the last `.then` step: that step is the end of its turn, not the start of
    the next (a turn starts with a person's action). A step that already ran is not moved."""
    from tests.browser.compare import Normaliser

    config = {
        "components": [{"id": 1, "type": "textbox"}, {"id": 2, "type": "chatbot"}],
        "dependencies": [
            {"targets": [[1, "submit"]], "inputs": [1], "outputs": [1]},
            {"trigger_after": 0, "inputs": [2], "outputs": [2]},
            {"trigger_after": 1, "inputs": [], "outputs": [1]},  # fn 2: the chain's last step
        ],
    }
    norm = Normaliser(config)

    def step(turn: str, fn: int) -> dict[str, Any]:
        return _exchange(turn, "POST", "/run/predict", {"fn_index": fn, "data": []}, {"data": []})

    def order(recording: list[dict[str, Any]]) -> list[list[Any]]:
        return [[e.get("fn_index") for e in t["entries"]] for t in norm.steps(recording)]

    late = [step("1", 0), step("1", 1), step("2", 2), step("2", 0), step("2", 1), step("2", 2)]
    assert order(late) == [[0, 1, 2], [0, 1, 2]]
    twice = [step("1", 0), step("1", 1), step("1", 2), step("2", 2), step("2", 0)]
    assert order(twice) == [[0, 1, 2], [2, 0]], "a step that ran already starts the next turn: a difference"


def test_a_step_one_client_got_as_a_stale_diff_compares_by_what_is_sent_next() -> None:
    """Gradio 4 and 5 answer an unqueued generator step that drew a stale id() with a diff: chance,
    and the server's answer, not the client's request. Its outputs compare as equal; a different
    request still differs. Fast: no browser."""
    from tests.browser.compare import Normaliser

    norm = Normaliser(CONFIG)
    upload = "/tmp/gradio/" + "a" * 40 + "/minutes.txt"
    browser = norm.steps(_client("aaaa1111", 40001, upload))
    stale = _client("bbbb2222", 40002, upload.replace("a", "b"), page=False)
    stale[3]["response_json"] = {"data": [[], [["append", [0, 1], "!"]], None]}
    assert summary(browser, norm.steps(stale)) == [] and diff(browser, norm.steps(stale)) == ""

    stale[4]["json"]["data"] = [[["hi", "!"]], None]  # the next step sent what the diff was misread as
    assert any("data[0]" in f for f in summary(browser, norm.steps(stale)))
