"""Snapshot-to-delta logic: pure functions, checked without any server."""

from __future__ import annotations

import random

import pytest

from qwen_space_adapter.deltas import THINKING, DeltaTracker, apply_diff, bot_text, with_file_meta
from qwen_space_adapter.errors import APIChangedError
from qwen_space_adapter.events import Reasoning, Summary, TextRewritten


def run(snapshots: list[str]) -> list:
    tracker = DeltaTracker()
    items = []
    for i, snap in enumerate(snapshots):
        items += tracker.feed(snap, final=i == len(snapshots) - 1)
    return items


def text(items) -> str:
    return "".join(i for i in items if isinstance(i, str))


def test_thinking_placeholder_is_a_status_reported_once():
    items = run([THINKING, THINKING, "Hello", "Hello world"])
    assert items == [Reasoning(status=THINKING), "Hello", " world"]


def test_text_equal_to_the_placeholder_after_real_text_is_text():
    items = run(["Qwen", THINKING])
    assert items == ["Qwen", " is thinking..."]


def test_summary_block_split_across_updates_never_leaks():
    items = run(
        [
            "The answer",
            "The answer\n",
            "The answer\n<sum",
            "The answer\n<summary>meta",
            "The answer\n<summary>meta</summary>",
        ]
    )
    assert text(items) == "The answer"
    assert items[-1] == Summary(text="<summary>meta</summary>")
    assert not any(isinstance(i, TextRewritten) for i in items)


def test_held_back_newline_is_released_when_it_is_not_a_marker():
    items = run(["a", "a\n", "a\nb"])
    assert items == ["a", "\nb"]


def test_held_back_tail_is_flushed_at_the_end():
    assert text(run(["a\n<", "a\n<"])) == "a\n<"


def test_rewritten_text_is_announced():
    items = run(["Hello wrld", "Hello world!"])
    assert items == ["Hello wrld", TextRewritten(text="Hello world!", previous="Hello wrld")]


def shown_text(items) -> str:
    """What a reader shows after `items`: deltas appended, a TextRewritten replacing the text."""
    shown = ""
    for i in items:
        if isinstance(i, TextRewritten):
            assert i.previous == shown, (i, shown)
            shown = i.text
        elif isinstance(i, str):
            shown += i
    return shown


def test_random_streams_concatenate_to_the_final_text():
    rng = random.Random(7)
    alphabet = "ab \n<>summary"
    for _ in range(500):
        body = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))).replace("\n<summary>", "")
        final = body + ("\n<summary>x" if rng.random() < 0.5 else "")
        cuts = sorted(rng.sample(range(len(final) + 1), min(len(final) + 1, rng.randint(1, 8))))
        snaps = [final[:c] for c in cuts] + [final]
        items = run(snaps)
        assert shown_text(items) == final.split("\n<summary>")[0], snaps
        if "\n<summary>" not in final:  # the snapshots only grow: nothing to take back
            assert not any(isinstance(i, TextRewritten) for i in items), snaps


def test_apply_diff_edits_in_place():
    chatbot = [[{"text": "hi"}, [{"text": "Hel"}]]]
    inner = chatbot[0]
    out = apply_diff(chatbot, [["append", [0, 1, 0, "text"], "lo"]])
    assert out is chatbot and out[0] is inner and out[0][1][0]["text"] == "Hello"
    out = apply_diff(out, [["add", [1], [{"text": "q"}, None]], ["replace", [0, 1, 0, "text"], "X"]])
    assert out == [[{"text": "hi"}, [{"text": "X"}]], [{"text": "q"}, None]]
    out = apply_diff(out, [["delete", [1], None]])
    assert out == [[{"text": "hi"}, [{"text": "X"}]]]
    assert apply_diff("ab", [["append", [], "c"]]) == "abc"
    with pytest.raises(APIChangedError):
        apply_diff(out, [["explode", [0], None]])


@pytest.mark.parametrize(
    ("chatbot", "expected"),
    [
        ([], None),
        ([[{"text": "q"}, None]], None),
        ([[{"text": "q"}, "plain"]], "plain"),
        ([[{"text": "q"}, {"text": "dict"}]], "dict"),
        ([[{"text": "q"}, [{"text": "a"}, {"text": "b"}]]], "a\n\nb"),
        ([["x", "old"], [{"text": "q"}, [{"text": "last"}]]], "last"),
    ],
)
def test_bot_text_reads_the_legacy_chatbot(chatbot, expected):
    assert bot_text(chatbot) == expected


@pytest.mark.parametrize("bad", [{"not": "a list"}, [["only one"]], [[None, 42]], [[None, [{"text": 3}]]]])
def test_bot_text_refuses_unknown_shapes(bad):
    with pytest.raises(APIChangedError, match=r"update qwen_space_adapter|unexpected shape"):
        bot_text(bad)


# --- issue 19: only the Space's trailing block is the summary; an answer taken back is announced ---

SPACE_BLOCK = "\n<summary><details><summary>Generation details</summary>context: 9 chars; tokens: 3</details>"
HTML_ANSWER = (
    "Here is a collapsible part:\n<details>\n<summary>Click to open</summary>\n\nHidden notes.\n</details>\n\n"
    "And the rest of the answer."
)


def feed_all(snapshots: list[str | None]) -> tuple[list, list]:
    """(items yielded before the final snapshot, items of the final snapshot)."""
    tracker = DeltaTracker()
    early = [i for snap in snapshots[:-1] for i in tracker.feed(snap)]
    return early, tracker.feed(snapshots[-1], final=True)


def test_model_html_details_streams_on_and_stays_in_the_answer():
    # Token by token, as the model writes it; the Space appends its block as the replica does.
    snaps = [HTML_ANSWER[:n] for n in range(1, len(HTML_ANSWER) + 1)] + [HTML_ANSWER + SPACE_BLOCK] * 2
    early, last = feed_all(snaps)
    assert text(early + last) == HTML_ANSWER
    assert last[-1] == Summary(text=SPACE_BLOCK[1:])
    assert not any(isinstance(i, TextRewritten) for i in early + last)
    # The stream did not stall at the model's <summary>: the answer's last words came before the end.
    assert "And the rest of the answer" in text(early)


def test_model_html_details_without_a_space_block_is_all_text():
    snaps = [HTML_ANSWER[:n] for n in range(1, len(HTML_ANSWER) + 1)]
    early, last = feed_all(snaps)
    assert text(early + last) == HTML_ANSWER
    assert not any(isinstance(i, Summary | TextRewritten) for i in early + last)


def test_a_bare_marker_of_the_model_is_released_when_a_later_one_follows():
    model = "Line one\n<summary> is a tag name.\nMore."
    snaps = [model[:n] for n in range(1, len(model) + 1)] + [model + SPACE_BLOCK]
    early, last = feed_all(snaps)
    assert text(early + last) == model
    assert last[-1] == Summary(text=SPACE_BLOCK[1:])
    assert not any(isinstance(i, TextRewritten) for i in early + last)


@pytest.mark.parametrize(
    ("snapshots", "answer"),
    [
        (["Hello", "Hello world", None], ""),  # the last update clears the answer
        (["Hello", "Hello world", ""], ""),
        (["Hello", "Hello world", "Hello"], "Hello"),  # the last update shortens it
        (["Hello world\n<summary>x", "Hello"], "Hello"),
    ],
)
def test_an_answer_taken_back_is_announced(snapshots, answer):
    early, last = feed_all(snapshots)
    assert shown_text(early + last) == answer
    assert any(isinstance(i, TextRewritten) and i.text == answer for i in last)


def test_finish_flushes_held_back_text_when_no_final_snapshot_came():
    tracker = DeltaTracker()
    items = tracker.feed("a  ") + tracker.feed("a\n<sum")
    assert text(items) == "a"
    items += tracker.finish()
    assert text(items) == "a\n<sum"
    assert tracker.finish() == [] and tracker.feed("a\n<sum more", final=True) == []


def test_finish_after_a_final_snapshot_adds_nothing():
    tracker = DeltaTracker()
    assert tracker.feed("done\n", final=True) == ["done\n"]
    assert tracker.finish() == []


def test_whitespace_before_the_placeholder_does_not_make_it_text():
    items = run(["", " \n", THINKING, "Hi", "Hi there"])
    assert items == [Reasoning(status=THINKING), "Hi", " there"]


def random_snapshot(rng: random.Random, previous: str) -> str | None:
    """A next snapshot: mostly growth, sometimes a shrink, a rewrite, a clear or a marker."""
    pieces = [
        "a",
        "b",
        " ",
        "\n",
        "\n\n",
        "<",
        ">",
        "<summary>",
        "\n<summary>",
        "<details>",
        "<details open>",
        "</summary>",
        "\n<sum",
        "mary>",
        "x",
    ]
    roll = rng.random()
    if roll < 0.05:
        return None
    if roll < 0.12:
        return previous[: rng.randint(0, len(previous))]
    if roll < 0.16:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
    if roll < 0.2:
        return previous + SPACE_BLOCK
    return previous + "".join(rng.choice(pieces) for _ in range(rng.randint(0, 3)))


@pytest.mark.parametrize("seed", range(4))
def test_invariant_over_random_snapshot_sequences(seed):
    """Joined deltas, rewrites applied, are the final answer; answer + summary is the final snapshot."""
    rng = random.Random(seed)
    for _ in range(1500):
        snaps: list[str | None] = []
        previous = ""
        for _ in range(rng.randint(1, 12)):
            snap = random_snapshot(rng, previous)
            snaps.append(snap)
            previous = snap or ""
        tracker = DeltaTracker()
        items = [i for s in snaps[:-1] for i in tracker.feed(s)]
        if rng.random() < 0.2:  # the answer step ended without a final snapshot
            items += tracker.feed(snaps[-1]) + tracker.finish()
        else:
            items += tracker.feed(snaps[-1], final=True)
        assert tracker.finish() == [], snaps
        final = snaps[-1]
        if final is None:  # taken back: an empty answer once text was shown, else nothing at all
            final = "" if tracker.text_seen else None
        if final is None:
            continue
        answer = shown_text(items)
        assert answer == tracker.emitted, snaps
        summaries = [i.text for i in items if isinstance(i, Summary)]
        assert len(summaries) <= 1, snaps
        assert answer + ("\n" + summaries[0] if summaries else "") == final, snaps


@pytest.mark.parametrize("seed", range(2))
def test_growing_snapshots_never_need_a_rewrite(seed):
    rng = random.Random(100 + seed)
    for _ in range(1500):
        snaps, previous = [], ""
        for _ in range(rng.randint(1, 12)):
            previous = previous + "".join(
                rng.choice(["a", " ", "\n", "<details>", "\n<summary>", "\n<sum", "b>"])
                for _ in range(rng.randint(0, 3))
            )
            snaps.append(previous)
        items = run(snaps)
        assert not any(isinstance(i, TextRewritten) for i in items), snaps
        summary = [i.text for i in items if isinstance(i, Summary)]
        assert text(items) + ("\n" + summary[0] if summary else "") == snaps[-1], snaps


# --- Gradio 6 messages: content is a list of typed parts -------------------------------------

FILE = {
    "path": "/tmp/gradio/ab/doc.txt",
    "url": "http://127.0.0.1:7860/gradio_api/file=/tmp/gradio/ab/doc.txt",
    "size": None,
    "orig_name": "doc.txt",
    "mime_type": "text/plain",
    "is_stream": False,
    "meta": {"_type": "gradio.FileData"},
}


def g6(role: str, *parts: object) -> dict:
    """A Gradio 6 chatbot message as the server sends it."""
    content = [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]
    return {"role": role, "metadata": None, "content": content, "options": None}


def file_part() -> dict:
    return {"type": "file", "file": dict(FILE), "alt_text": None}


@pytest.mark.parametrize(
    ("chatbot", "expected"),
    [
        # gr.ChatInterface (multimodal): one user message with the file and the text
        ([g6("user", file_part(), "hi"), g6("assistant", "Hello")], "Hello"),
        ([g6("user", file_part(), "hi")], None),
        ([g6("user", "hi"), g6("assistant")], None),  # an answer message with no part yet
        # Blocks with gr.MultimodalTextbox: files are user messages of their own
        ([g6("user", file_part()), g6("user", "hi"), g6("assistant", "Hi")], "Hi"),
        # a bot message mixing text and file parts: the file is not text
        (
            [g6("user", "q"), g6("assistant", "One"), g6("assistant", "Two", file_part(), "Three")],
            "One\n\nTwo\n\nThree",
        ),
        ([g6("user", "q"), g6("assistant", file_part())], None),
        ([g6("user", "old"), g6("assistant", "Old"), g6("user", "new"), g6("assistant", "New")], "New"),
        # other typed parts (components, images) are not text either
        ([g6("user", "q"), g6("assistant", {"type": "component", "component": "image", "value": None}, "ok")], "ok"),
        # Gradio 5 messages: string content, and a file or a component as the whole content
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "a"),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": {"path": "/x.png", "alt_text": None}},
                {"role": "assistant", "content": "caption"},
            ],
            "caption",
        ),
        (
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": {"component": "image", "value": {}}}],
            None,
        ),
    ],
)
def test_answer_text_reads_gradio_messages_of_every_generation(chatbot, expected):
    assert bot_text(chatbot) == expected


@pytest.mark.parametrize(
    "bad",
    [
        [g6("user", "q"), {"role": "assistant", "content": 42}],
        [g6("user", "q"), g6("assistant", 42)],
        [g6("user", "q"), g6("assistant", {"unknown": "part"})],
        [g6("user", "q"), g6("assistant", {"type": "text", "text": 3})],
    ],
)
def test_unknown_gradio_6_parts_are_refused_with_their_shape(bad):
    with pytest.raises(APIChangedError, match=r"unexpected shape|content is a"):
        bot_text(bad)


def test_a_gradio_6_stream_joins_to_its_final_answer_without_rewrites():
    """Snapshots as a Gradio 6 chat streams them: a text part that grows, then a second bot
    message whose file part arrives between two text parts."""
    user = g6("user", file_part(), "q")
    snapshots = [
        [user, g6("assistant", THINKING)],
        [user, g6("assistant", "The ")],
        [user, g6("assistant", "The answer")],
        [user, g6("assistant", "The answer"), g6("assistant", "More")],
        [user, g6("assistant", "The answer"), g6("assistant", "More", file_part())],
        [user, g6("assistant", "The answer"), g6("assistant", "More", file_part(), "end.")],
    ]
    items = run([bot_text(s) for s in snapshots])
    assert text(items) == bot_text(snapshots[-1]) == "The answer\n\nMore\n\nend."
    assert not any(isinstance(i, TextRewritten) for i in items)
    assert items[0] == Reasoning(status=THINKING)


def test_file_parts_sent_back_carry_their_meta_tag():
    bare = {k: v for k, v in FILE.items() if k != "meta"}
    chatbot = [
        g6("user", {"type": "file", "file": dict(bare), "alt_text": None}, "hi"),
        g6("assistant", "Hello"),
        {"role": "user", "content": {"file": dict(bare), "alt_text": None}},
    ]  # Gradio 5's file message
    before = repr(chatbot)
    sent = with_file_meta(chatbot)
    assert sent[0]["content"][0]["file"] == FILE and sent[2]["content"]["file"] == FILE
    assert sent[0]["content"][1] == {"type": "text", "text": "hi"} and sent[1] is chatbot[1]
    assert repr(chatbot) == before, "the caller's value is not changed"
    tagged = [g6("user", file_part(), "hi")]
    assert with_file_meta(tagged) is tagged  # nothing missing: no copy
    pairs = [[{"text": "q", "files": []}, [{"text": "a"}]]]
    assert with_file_meta(pairs) is pairs and with_file_meta(None) is None
