"""The page model, read from the configs of every Space UI the adapter supports (no server).

The configs in tests/fixtures/pages/ were fetched from running replicas: the hand-made one and
Qwen-Agent's unmodified `WebUI` in its Gradio 4 (0.0.11) and Gradio 5 (0.0.34) releases, with
one agent, two agents, and two agents with @-mentions; and on Gradio 6.31, the gradio6 flavor
(Gradio's own multimodal `gr.ChatInterface`) and the Blocks chat of `tests/apps/gradio6_blocks.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from qwen_space_adapter.deltas import DeltaTracker, answer_text
from qwen_space_adapter.errors import APIChangedError
from qwen_space_adapter.events import Reasoning, TextRewritten
from qwen_space_adapter.page import CANCELLED, FAILED, OK, Page, Step, as_wire

PAGES = Path(__file__).parent / "fixtures" / "pages"


def config(name: str) -> dict:
    return json.loads((PAGES / f"{name}.json").read_text())


# (fixture, Gradio, input type, fn indices of the submit chain, the answer step's fn index)
LAYOUTS = [
    ("hand-gradio4", "4.44.1", "modelscopemultimodalinput", [1, 2], 2),
    ("qwen-agent-0.0.11-1agent", "4.44.0", "modelscopemultimodalinput", [0, 1, 2], 1),
    ("qwen-agent-0.0.11-2agents", "4.44.0", "modelscopemultimodalinput", [1, 2, 3], 2),
    ("qwen-agent-0.0.11-2agents-mention", "4.44.0", "modelscopemultimodalinput", [1, 2, 3, 4], 3),
    ("qwen-agent-0.0.34-1agent", "5.23.1", "modelscopelegacymultimodalinput", [0, 1, 2], 1),
    ("qwen-agent-0.0.34-2agents", "5.23.1", "modelscopelegacymultimodalinput", [1, 2, 3], 2),
    # clear+save the textbox, append the message, (.success: swap the buttons), the answer,
    # copy the chatbot into the history state, (.then: restore the buttons), re-enable, save
    # Gradio 6 dispatches a step's `.success` listeners (14) before its `.then` ones (1).
    ("gradio6-chatinterface", "6.31.0", "multimodaltextbox", [0, 14, 1, 2, 3, 16, 4, 5], 2),
]


@pytest.mark.parametrize(("name", "version", "input_type", "chain", "answer"), LAYOUTS)
def test_each_layout_runs_its_submit_chain_to_the_answer(name, version, input_type, chain, answer):
    page = Page.from_config(config(name))
    assert page.version == version and page.input_type == input_type
    assert [s.fn_index for s in page.chain] == chain
    assert page.answer_step.fn_index == answer
    assert page.chatbot_type.endswith("chatbot") and page.multimodal
    assert page.chain[0].outputs[0] == page.input_id  # the submit step clears the input


def test_the_hand_replica_runs_add_text_unqueued_as_the_wire_evidence_shows():
    add_text, predict = Page.from_config(config("hand-gradio4")).chain
    assert not add_text.queued and predict.queued and predict.generator


def test_qwen_agent_runs_add_text_unqueued_and_re_enables_the_input_after():
    page = Page.from_config(config("qwen-agent-0.0.11-2agents"))
    add_text, agent_run, flushed = page.chain
    assert not add_text.queued and agent_run.queued and agent_run.generator
    assert flushed.inputs == () and flushed.outputs == (page.input_id,)


def test_gradio_6_chat_interface_takes_its_history_from_the_chatbot_the_client_sends():
    page = Page.from_config(config("gradio6-chatinterface"))
    steps = {s.fn_index: s for s in page.chain}
    assert [s.fn_index for s in page.chain if s.queued] == [2, 4], "the rest run unqueued, as the page runs them"
    assert steps[14].only_on_success and not steps[16].only_on_success
    answer, sync = steps[2], steps[3]
    assert page.chatbot_id not in answer.inputs, "the answer reads ChatInterface's history state"
    assert sync.inputs == (page.chatbot_id,) and page.types(sync.outputs) == ("state", "state")
    assert page.args(sync, {**page.initial_values(), page.chatbot_id: ["held"]}) == [["held"]]
    assert page.user_value("hi", ["f"]) == {"text": "hi", "files": ["f"]}
    assert page.initial_values()[page.input_id] == {"text": "", "files": []}
    assert page.messages_format, "Gradio 6 has no chatbot `type` prop: messages only"


def test_a_gradio_6_blocks_chat_runs_its_chain_with_the_chatbot_as_history():
    page = Page.from_config(config("gradio6-blocks"))
    assert page.version == "6.31.0" and page.input_type == "multimodaltextbox" and page.multimodal
    add, bot, enable = page.chain
    assert page.answer_step is bot and bot.generator and bot.inputs == (page.chatbot_id,)
    assert add.outputs == (page.chatbot_id, page.input_id) and enable.outputs == (page.input_id,)
    values = page.initial_values()
    values[page.input_id] = page.user_value("hi", [])
    page.apply(
        add,
        values,
        [
            [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            {"__type__": "update", "value": None, "interactive": False},
        ],
    )
    assert values[page.input_id] is None and page.args(bot, values) == [values[page.chatbot_id]]


def test_inputs_the_adapter_does_not_fill_get_what_the_page_sends():
    page = Page.from_config(config("qwen-agent-0.0.34-1agent"))
    values = page.initial_values()
    values[page.input_id] = page.user_value("hi", [])
    values[page.chatbot_id] = []
    add_text = page.chain[0]
    # input, audio (empty, as a page without a recording sends it), chatbot; the state is left out
    assert page.types(add_text.inputs) == (
        "modelscopelegacymultimodalinput",
        "audio",
        "modelscopelegacychatbot",
        "state",
    )
    assert page.args(add_text, values) == [{"text": "hi", "files": []}, None, []]


def test_the_mention_layout_passes_the_agent_selector_along():
    page = Page.from_config(config("qwen-agent-0.0.11-2agents-mention"))
    values = page.initial_values()
    selector = page.chain[1].outputs[1]
    assert page.components[selector].type == "dropdown" and values[selector] == 0
    page.apply(page.chain[1], values, [[["@Helper hi", None]], 1])
    assert values[selector] == 1
    assert page.args(page.answer_step, values)[-1] == 1


def test_outputs_honour_gradio_update_dicts():
    page = Page.from_config(config("qwen-agent-0.0.11-1agent"))
    values = page.initial_values()
    values[page.input_id] = {"text": "hi", "files": []}
    add_text, _, flushed = page.chain
    page.apply(add_text, values, [{"__type__": "update", "interactive": False, "value": None}, [["hi", None]], None])
    assert values[page.input_id] is None and values[page.chatbot_id] == [["hi", None]]
    page.apply(flushed, values, [{"__type__": "update", "interactive": True}])
    assert values[page.input_id] is None  # an update without a value keeps the value


def test_indices_that_shift_are_followed():
    moved = config("hand-gradio4")
    deps = moved["dependencies"]
    extra = copy.deepcopy(deps[0])  # a new button registered before the chat events
    for i, dep in enumerate(deps):
        dep["id"] = i + 1
        if dep.get("trigger_after") is not None:
            dep["trigger_after"] += 1
    extra["id"] = 0
    moved["dependencies"] = [extra, *deps]
    assert [s.fn_index for s in Page.from_config(moved).chain] == [2, 3]


def test_a_page_without_a_chat_is_refused_with_what_was_found():
    changed = config("hand-gradio4")
    for c in changed["components"]:
        if c["type"] == "modelscopechatbot":
            c["type"] = "dataframe"
    with pytest.raises(APIChangedError) as info:
        Page.from_config(changed)
    assert "fn 1: (modelscopemultimodalinput, dataframe, state)" in str(info.value)


def test_an_old_protocol_is_refused():
    with pytest.raises(APIChangedError, match="'ws' protocol"):
        Page.from_config(dict(config("hand-gradio4"), protocol="ws", version="3.50.0"))


def _gradio_chat(chatbot_type: str = "tuples", generator: bool = True) -> dict:
    """A plain Gradio chat: textbox submit -> user step (unqueued) -> bot step (streams)."""
    return {
        "version": "5.0.0",
        "protocol": "sse_v3",
        "app_id": 7,
        "components": [
            {"id": 1, "type": "chatbot", "props": {"value": [], "type": chatbot_type}},
            {"id": 2, "type": "textbox", "props": {"value": ""}},
        ],
        "dependencies": [
            {
                "id": 0,
                "targets": [[2, "submit"]],
                "inputs": [2, 1],
                "outputs": [2, 1],
                "backend_fn": True,
                "queue": False,
                "types": {"generator": False},
                "trigger_after": None,
            },
            {
                "id": 1,
                "targets": [[None, "then"]],
                "inputs": [1],
                "outputs": [1],
                "backend_fn": True,
                "queue": True,
                "types": {"generator": generator},
                "trigger_after": 0,
            },
        ],
    }


def test_gradios_own_chatbot_and_textbox():
    page = Page.from_config(_gradio_chat("messages"))
    assert page.input_type == "textbox" and not page.multimodal and page.messages_format
    assert [s.fn_index for s in page.chain] == [0, 1] and page.answer == 1
    assert page.user_value("hi", []) == "hi"
    assert Page.from_config(_gradio_chat(generator=False)).answer == 1  # no flags: the last writer


def test_load_events_that_set_values_are_found():
    cfg = _gradio_chat()
    cfg["components"].append({"id": 3, "type": "dropdown", "props": {"value": None}})
    cfg["dependencies"].append(
        {
            "id": 2,
            "targets": [[0, "load"]],
            "inputs": [],
            "outputs": [3],
            "backend_fn": True,
            "queue": False,
            "types": {"generator": False},
        }
    )
    cfg["dependencies"].append(
        {"id": 3, "targets": [[0, "load"]], "inputs": [], "outputs": [], "backend_fn": False}
    )  # `demo.load(None)`: nothing to run
    page = Page.from_config(cfg)
    assert [s.fn_index for s in page.load_steps] == [2]
    values = page.initial_values()
    page.apply(page.load_steps[0], values, ["model-b"])
    assert values[3] == "model-b"


def test_a_js_only_step_in_the_chain_is_passed_through():
    cfg = _gradio_chat()
    cfg["dependencies"][1]["trigger_after"] = 5
    cfg["dependencies"].append(
        {"id": 5, "targets": [[None, "then"]], "inputs": [], "outputs": [], "backend_fn": False, "trigger_after": 0}
    )
    assert [s.fn_index for s in Page.from_config(cfg).chain] == [0, 1]


def test_processed_results_go_back_to_wire_order():
    assert as_wire(("a", "b"), (False, True, False)) == ["a", None, "b"]
    assert as_wire(["x"], (False, True)) == [["x"], None]  # one kept output comes bare


# --- the answer's text ------------------------------------------------------------------------


def _msg(text):
    return {"id": None, "text": text, "flushing": None, "avatar": "", "files": []}


@pytest.mark.parametrize(
    ("chatbot", "expected"),
    [
        ([], None),
        ([[_msg("hi"), None]], None),
        ([[_msg("hi"), [_msg("Hello")]]], "Hello"),  # the hand-made replica: one bot message
        ([[_msg("hi"), [_msg("Hello"), None]]], "Hello"),  # two agents, the first answers
        ([[_msg("hi"), [None, "From Helper"]]], "From Helper"),  # the second answers
        ([[_msg("hi"), [None, None]]], None),  # slots made, nothing said yet
        (
            [[_msg("old"), ["Old answer", None]], [_msg("new"), ["Tool call", None]], [None, [None, "Answer"]]],
            "Tool call\n\nAnswer",
        ),  # an answer in two parts, this turn only
        ([["hi", "Hello"]], "Hello"),  # Gradio tuples
        ([["hi", "Hello"], ["again", "Second"]], "Second"),  # tuples: this turn's pair only
        ([["hi", "Hello"], ["again", None]], None),  # tuples: this turn not answered yet
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a1"},
                {"role": "assistant", "content": "a2"},
            ],
            "a1\n\na2",
        ),  # Gradio messages
    ],
)
def test_answer_text_reads_this_turns_bot_side(chatbot, expected):
    assert answer_text(chatbot) == expected


@pytest.mark.parametrize(
    "bad",
    [{"not": "a list"}, [["only one"]], [[_msg("hi"), [42]]], ["hi", "Hello"]],  # last: a bare pair
)
def test_answer_text_refuses_unknown_shapes(bad):
    with pytest.raises(APIChangedError):
        answer_text(bad)


def _stream(snapshots: list[str]) -> tuple[str, list]:
    tracker = DeltaTracker()
    items = []
    for i, snap in enumerate(snapshots):
        items += tracker.feed(snap, final=i == len(snapshots) - 1)
    return "".join(x for x in items if isinstance(x, str)), [x for x in items if not isinstance(x, str)]


def test_trailing_whitespace_trimmed_by_the_ui_is_not_a_rewrite():
    # Qwen-Agent rstrip()s every update: "Hello " arrives as "Hello", then "Hello world".
    text, events = _stream(["Hello ", "Hello", "Hello world\n", "Hello world"])
    assert text == "Hello world" and events == []


def test_a_real_rewrite_is_still_reported():
    _, events = _stream(["Hello world", "Goodbye"])
    assert any(isinstance(e, TextRewritten) and e.text == "Goodbye" for e in events)


def test_the_placeholder_of_a_later_part_is_a_status():
    snaps = ["Qwen is thinking...", "Tool call", "Tool call\n\nQwen is thinking...", "Tool call\n\nAnswer"]
    text, events = _stream(snaps)
    assert text == "Tool call\n\nAnswer"
    assert [type(e) for e in events] == [Reasoning, Reasoning]


def test_which_chained_steps_run_follows_the_gradio_generations_frontend():
    """Gradio 4/5 run `.then` steps after a failure (not `.success` ones) and everything after a
    success or a cancel; Gradio 6 runs only `.failure` steps after a failure, `.then` and
    `.failure` after a cancel, `.success` and `.then` after a success."""
    then, success, failure = (
        Step(9, (), (), parent=1),
        Step(8, (), (), only_on_success=True, parent=1),
        Step(7, (), (), only_on_failure=True, parent=1),
    )
    for version, expected in {
        "4.44.0": {OK: (True, True, True), FAILED: (True, False, True), CANCELLED: (True, True, True)},
        "6.31.0": {OK: (True, True, False), FAILED: (False, False, True), CANCELLED: (True, False, True)},
    }.items():
        page = Page.from_config(config("gradio6-chatinterface"))
        page = dataclasses.replace(page, version=version)
        for outcome, runs in expected.items():
            got = tuple(page.runs(step, {1: outcome}) for step in (then, success, failure))
            assert got == runs, (version, outcome, got)
        assert not page.runs(then, {}), "a step whose parent did not run never runs"


def test_the_walk_decides_each_step_once_the_steps_before_it_ended():
    """`Page.walk` is the one chain walk of turns and the recorder: lazy, so an outcome recorded
    between two steps decides the next (Gradio 6: a `.success` step only after a success)."""
    page = Page.from_config(config("gradio6-chatinterface"))
    assert page.before_answer == page.chain[: page.answer] and page.after_answer == page.chain[page.answer + 1 :]

    def walked(fail: int | None) -> list[int]:
        outcomes: dict[int, str] = {}
        ran = []
        for step in page.walk(page.chain, outcomes):
            ran.append(step.fn_index)
            outcomes[step.fn_index] = FAILED if step.fn_index == fail else OK
        return ran

    everything = walked(None)
    assert everything == [s.fn_index for s in page.chain if page.runs(s, {p.fn_index: OK for p in page.chain})]
    answer = page.answer_step.fn_index
    after_failure = walked(answer)
    assert after_failure[: after_failure.index(answer) + 1] == everything[: everything.index(answer) + 1]
    later = after_failure[after_failure.index(answer) + 1 :]
    assert set(later) < set(everything[everything.index(answer) + 1 :]), "a failure skips its .success steps"
    assert all(
        not page.runs(s, {answer: FAILED}) or s.fn_index in later for s in page.after_answer if s.parent == answer
    )
