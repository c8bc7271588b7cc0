"""The replica on the Qwen team's real UI (Qwen-Agent's WebUI from PyPI), driven through the
current gradio_client as its web page drives it: the input's submit chain, step by step.

One replica per flavor and layout for the whole session (`qwen_shared_replica`), so each starts
once; environments are cached across runs.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_session import interrupt, started
from gradio_client import Client
from gradio_client.exceptions import AppError

from qwen_space_adapter.replica.flavors import STACKS, flavor, stack_of
from qwen_space_adapter.space_text import SUMMARY_MARKER, THINKING

LAYOUTS = [
    pytest.param(("qwen-agent", 1, False), id="0.0.11-1agent"),
    pytest.param(("qwen-agent", 2, False), id="0.0.11-2agents"),
    pytest.param(("qwen-agent", 2, True), id="0.0.11-2agents-mention"),
    pytest.param(("qwen-agent==0.0.34", 1, False), id="0.0.34-1agent"),
    pytest.param(("qwen-agent==0.0.34", 2, False), id="0.0.34-2agents"),
    # More releases on demand (each builds an environment once): QWEN_SPACE_REPLICA_RELEASES=0.0.14,0.0.20
    *[
        pytest.param((f"qwen-agent=={r}", 2, True), id=f"{r}-2agents-mention")
        for r in os.environ.get("QWEN_SPACE_REPLICA_RELEASES", "").split(",")
        if r.strip()
    ],
]


class Page:
    """What a browser does with the page, minimally: a value per component, updated from each
    step's outputs, and the input's submit chain run in order (`trigger_after`)."""

    def __init__(self, url: str) -> None:
        self.client = Client(url, verbose=False, download_files=False)
        config = self.client.config
        self.kinds = {c["id"]: c["type"] for c in config["components"]}
        self.values = {c["id"]: c.get("props", {}).get("value") for c in config["components"]}
        deps = config["dependencies"]
        first = next(i for i, d in enumerate(deps) if any(t[1] == "submit" for t in d["targets"]))
        self.chain = [first]
        while nxt := [i for i, d in enumerate(deps) if d.get("trigger_after") == self.chain[-1]]:
            self.chain.append(nxt[0])
        self.deps = deps
        self.input = deps[first]["targets"][0][0]
        self.chatbot = next(i for i, k in self.kinds.items() if k.endswith("chatbot"))

    def _visible(self, ids: list[int]) -> list[int]:
        return [i for i in ids if self.kinds[i] != "state"]  # gradio_client keeps State itself

    def _store(self, ids: list[int], result: Any) -> None:
        outs = self._visible(ids)
        values = [result] if len(outs) == 1 else list(result)
        for i, v in zip(outs, values, strict=True):
            if isinstance(v, dict) and v.get("__type__") == "update":
                if "value" in v:
                    self.values[i] = v["value"]
            else:
                self.values[i] = v

    def _submit(self, index: int) -> Any:
        return self.client.submit(*[self.values[i] for i in self._visible(self.deps[index]["inputs"])], fn_index=index)

    def start_answer(self, text: str) -> Any:
        """Run the chain up to the step that streams the answer (`agent_run`); return its job."""
        self.values[self.input] = {"text": text, "files": []}
        for index in self.chain:
            if self.deps[index]["api_name"] == "agent_run":
                return self._submit(index)
            self._store(self.deps[index]["outputs"], self._submit(index).result())
        raise AssertionError("no answer step in the chain")

    def turn(self, text: str, files: list[dict[str, Any]] | None = None) -> list[Any]:
        """Send one message; return every chatbot value the answer streamed."""
        self.values[self.input] = {"text": text, "files": files or []}
        snapshots: list[Any] = []
        for index in self.chain:
            dep = self.deps[index]
            job = self._submit(index)
            streamed = list(job)
            result = job.result()
            if self.chatbot in dep["outputs"] and len(streamed) > 1:
                outs = self._visible(dep["outputs"])
                at = outs.index(self.chatbot)
                snapshots = [s if len(outs) == 1 else s[at] for s in streamed]
            if result is not None:
                self._store(dep["outputs"], result)
        return snapshots or [self.values[self.chatbot]]

    def upload(self, path: Path, mime_type: str) -> dict[str, Any]:
        """A file as a browser sends it: its data keeps `mime_type` and `size`, which Qwen-Agent's
        `add_text` reads. gradio_client's own upload returns path, name and meta only, so its
        result is completed with them here (Gradio 5 insists on the meta marker, so the client's
        upload cannot be bypassed)."""
        for endpoint in self.client.endpoints.values():
            if not getattr(endpoint, "_browser_like", False):
                plain = endpoint._upload_file
                endpoint._upload_file = lambda f, data_index, _p=plain: {
                    **_p(f, data_index),
                    **{k: f[k] for k in ("mime_type", "size") if k in f},
                }
                endpoint._browser_like = True
        return {
            "path": str(path),
            "meta": {"_type": "gradio.FileData"},
            "orig_name": path.name,
            "mime_type": mime_type,
            "size": path.stat().st_size,
        }

    def close(self) -> None:
        self.client.close()


def bot_parts(chatbot: list[Any]) -> list[tuple[int, int, str]]:
    """(pair, slot, text) of every filled bot slot after the last user message."""
    last_user = max(i for i, pair in enumerate(chatbot) if pair[0] is not None)
    found = []
    for p, (_, bot) in enumerate(chatbot[last_user:], start=last_user):
        for s, slot in enumerate(bot or []):
            if slot is not None:
                found.append((p, s, slot["text"] if isinstance(slot, dict) else str(slot)))
    return found


def answer(chatbot: list[Any]) -> str:
    return "\n\n".join(text for _, _, text in bot_parts(chatbot))


# Behaviour that does not depend on the layout runs on one layout per Gradio generation.
ONE_PER_GRADIO = pytest.mark.parametrize("layout", [LAYOUTS[2], LAYOUTS[4]], indirect=True)


@pytest.fixture(params=LAYOUTS)
def layout(request: pytest.FixtureRequest, qwen_shared_replica: Any) -> tuple[Any, int, bool]:
    ui, agents, mention = request.param
    return qwen_shared_replica(ui=ui, agents=agents, mention=mention), agents, mention


@pytest.fixture
def page(layout: tuple[Any, int, bool]) -> Any:
    p = Page(layout[0].url)
    yield p
    p.close()


def test_the_real_ui_serves_its_own_stack(layout: tuple[Any, int, bool]) -> None:
    replica, agents, mention = layout
    config = httpx.get(replica.url + "/config").json()
    gradio5 = replica.settings.ui not in ("qwen-agent", "qwen-agent==0.0.11")
    expected = {"qwen-agent==0.0.34": "5.23.1"}.get(replica.settings.ui, "5." if gradio5 else "4.44.0")
    assert config["version"].startswith(expected)
    kinds = {c["type"] for c in config["components"]}
    # modelscope_studio 1.0 betas (releases 0.0.12-0.0.15) still name the legacy components
    # like 0.x does; 1.1 (0.0.16 on) calls them modelscopelegacy*.
    legacy = stack_of(str(flavor(replica.settings.ui).release)) is STACKS["gradio5"]
    prefix = "modelscopelegacy" if legacy else "modelscope"
    assert {prefix + "chatbot", prefix + "multimodalinput", "state"} <= kinds
    assert ("dropdown" in kinds) == (agents > 1)
    page = Page(replica.url)
    try:
        steps = [page.deps[i]["api_name"] for i in page.chain]
    finally:
        page.close()
    assert steps == ["add_text", *(["add_mention"] if mention else []), "agent_run", "flushed"]


def test_answers_quote_history_and_stream(page: Page) -> None:
    first = page.turn("my name is Ada")
    texts = [answer(s) for s in first]
    assert texts[0] == THINKING
    final = texts[-1]
    assert final.startswith('You said: "my name is Ada". This is the first turn')
    assert SUMMARY_MARKER in final
    growing = [t for t in texts[1:-1] if t != THINKING]
    assert len(growing) > 3 and all(b.startswith(a) for a, b in itertools.pairwise(growing))
    second = answer(page.turn("what is my name?")[-1])
    assert second.startswith(
        'You said: "what is my name?". This is turn 2 of our conversation; your first message was: "my name is Ada".'
    )


@ONE_PER_GRADIO
def test_sessions_are_apart(layout: tuple[Any, int, bool]) -> None:
    a, b = Page(layout[0].url), Page(layout[0].url)
    try:
        a.turn("I am session A")
        other = answer(b.turn("who am I?")[-1])
    finally:
        a.close()
        b.close()
    assert "first turn" in other and "session A" not in other


@ONE_PER_GRADIO
def test_system_prompt_in_the_text_is_acknowledged(page: Page) -> None:
    text = answer(page.turn("System: Answer in French.\nUser: Bonjour")[-1])
    assert text.startswith('You said: "Bonjour". I will follow the system prompt: "Answer in French.".')


def test_the_answering_agent_fills_its_own_slot(page: Page, layout: tuple[Any, int, bool]) -> None:
    _, agents, mention = layout
    parts = bot_parts(page.turn("@Helper who answers?")[-1])
    assert len(parts) == 1
    slot = parts[0][1]
    assert slot == (1 if mention else 0)  # without mentions, agent 0 answers whatever the text
    assert parts[0][2].startswith('You said: "@Helper who answers?".')
    chatbot = page.values[page.chatbot]
    assert len(chatbot[-1][1]) == agents  # one slot per agent


def test_a_tool_call_answer_comes_in_two_bot_pairs(page: Page, layout: tuple[Any, int, bool]) -> None:
    chatbot = page.turn("look it up [[tool]]")[-1]
    assert len(chatbot) == 2 and chatbot[1][0] is None  # the UI appended a [None, bot] pair
    parts = bot_parts(chatbot)
    assert [p for p, _, _ in parts] == [0, 1]
    assert "<summary>Start calling tool" in parts[0][2] and '"read_history"' in parts[0][2]
    assert parts[1][2].startswith('You said: "look it up". This is the first turn')
    follow_up = answer(page.turn("and now?")[-1])
    assert "This is turn 2 of our conversation" in follow_up  # tool messages are not turns


@ONE_PER_GRADIO
def test_attached_text_file_and_pass_key(page: Page, tmp_path: Path) -> None:
    doc = tmp_path / "haystack.txt"
    doc.write_text("filler text. " * 5000 + "The pass key is 71432. " + "more filler. " * 5000)
    text = answer(page.turn("What is the pass key?", [page.upload(doc, "text/plain")])[-1])
    assert "(130023 characters). The pass key is 71432." in text
    later = answer(page.turn("And again?")[-1])  # the file stays in the server-side history
    assert "This is turn 2" in later and "I read" not in later
    assert 'I still have "haystack.txt" from an earlier message (130023 characters). The pass key is 71432.' in later


@ONE_PER_GRADIO
def test_fault_switches_reach_the_caller(page: Page) -> None:
    with pytest.raises(AppError, match="failed mid-stream"):
        page.turn("break [[fault:error-mid-stream]]")
    with pytest.raises(AppError, match="before its first token"):
        page.turn("break [[fault:error-before-first-token]]")


@ONE_PER_GRADIO
def test_knobs_shape_the_answer(page: Page) -> None:
    text = answer(page.turn("long one [[tokens=40]] [[delay=0]]")[-1])
    assert text.split(SUMMARY_MARKER)[0].count(" ") == 39 and "tokens: 40" in text


@ONE_PER_GRADIO
def test_stats_routes_count_generations(layout: tuple[Any, int, bool]) -> None:
    replica = layout[0]
    page = Page(replica.url)
    try:
        page.turn("count me [[tokens=7]]")
    finally:
        page.close()
    stats = replica.wait_idle(10)
    mine = [r for r in stats["requests"] if r["user_text"] == "count me [[tokens=7]]"]
    assert mine[-1]["status"] == "completed" and mine[-1]["tokens"] == 7
    assert mine[-1]["agent"] == "Qwen" and stats["active"] == 0


def test_launch_time_fault_reaches_the_real_ui(qwen_replica_factory: Any) -> None:
    replica = qwen_replica_factory(ui="qwen-agent==0.0.34", fault="error-before-first-token")
    page = Page(replica.url)
    try:
        with pytest.raises(AppError, match="before its first token"):
            page.turn("anything")
    finally:
        page.close()
    assert replica.stats()["failed"] == 1


def test_concurrency_limit_and_queue_size_reach_the_real_ui(qwen_replica_factory: Any) -> None:
    """One generation at a time, one waiting: of three sent at once, the third is refused."""
    replica = qwen_replica_factory(ui="qwen-agent", concurrency_limit=1, max_queue_size=1)
    pages = [Page(replica.url) for _ in range(3)]
    try:
        for i, p in enumerate(pages):  # each page's own add_text first (not queued)
            p.values[p.input] = {"text": f"job {i} [[tokens=60]] [[delay=0.05]]", "files": []}
            p._store(p.deps[0]["outputs"], p.client.submit(p.values[p.input], [], fn_index=0).result())
        jobs = [pages[0].client.submit(pages[0].values[pages[0].chatbot], fn_index=1)]
        next(iter(jobs[0]))  # the first is generating (out of the queue): the others queue behind it
        jobs += [p.client.submit(p.values[p.chatbot], fn_index=1) for p in pages[1:]]
        outcomes = []
        for job in jobs:
            try:
                job.result()
                outcomes.append("answered")
            except Exception as e:
                outcomes.append("full" if "queue is full" in str(e).lower() else repr(e))
    finally:
        for p in pages:
            p.close()
    assert sorted(outcomes) == ["answered", "answered", "full"], outcomes
    done = sorted((r["began"], r["ended"]) for r in replica.wait_idle(10)["requests"])
    assert len(done) == 2 and done[0][1] <= done[1][0]  # never two at once


def test_replayed_transcript_through_the_real_ui(qwen_replica_factory: Any) -> None:
    transcript = Path(__file__).parent / "fixtures" / "replica_transcript.json"
    turns = json.loads(transcript.read_text())["turns"]
    replica = qwen_replica_factory(ui="qwen-agent", replay=str(transcript), replay_speed=100.0)
    page = Page(replica.url)
    try:
        for _ in turns:
            page.turn("replay me")
        with pytest.raises(AppError, match=rf"records {len(turns)} turn\(s\); this conversation asked for turn"):
            page.turn("one too many")
    finally:
        page.close()


@ONE_PER_GRADIO
def test_a_cancelled_answer_stops_and_counts_as_cancelled(layout: tuple[Any, int, bool]) -> None:
    """Gradio stops pulling a cancelled sync generator without closing it: the replica's stats
    must still see the cancel (and wait_idle return), and generation must stop."""
    replica = layout[0]
    page = Page(replica.url)
    try:
        job = page.start_answer("cancel me [[tokens=400]] [[delay=0.02]]")
        for received, _ in enumerate(job):
            if received == 5:
                break
        job.cancel()
        stats = replica.wait_idle(30)
    finally:
        page.close()
    mine = [r for r in stats["requests"] if r["user_text"] == "cancel me [[tokens=400]] [[delay=0.02]]"]
    assert stats["active"] == 0 and mine[-1]["status"] == "cancelled"
    assert mine[-1]["tokens"] < 400


def test_cli_serves_the_real_ui_until_interrupted() -> None:
    args = [
        sys.executable,
        "-m",
        "qwen_space_adapter",
        "replica",
        "--ui",
        "qwen-agent==0.0.34",
        "--agents",
        "2",
        "--mention",
        "--port",
        "0",
    ]
    with started(args) as proc:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        config = httpx.get(url + "/config", timeout=10).json()
        assert config["version"] == "5.23.1"
        assert [d["api_name"] for d in config["dependencies"]][:5] == [
            "change_agent",
            "add_text",
            "add_mention",
            "agent_run",
            "flushed",
        ]
        code, _, stderr = interrupt(proc)
    assert code == 0, stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/config", timeout=2)


@ONE_PER_GRADIO
def test_a_cancel_interrupts_a_stalled_model(layout: tuple[Any, int, bool]) -> None:
    """The model sleeps in Gradio's worker thread: a cancel must still end it (not 60 s later)."""
    replica = layout[0]
    page = Page(replica.url)
    prompt = "stall [[tokens=40]] [[fault:stall=60]]"
    try:
        job = page.start_answer(prompt)
        outs = page._visible(page.deps[page.chain[-2]]["outputs"])  # agent_run's (flushed is last)
        for update in job:
            chatbot = update if len(outs) == 1 else update[outs.index(page.chatbot)]
            if len(re.findall(r"\S+\s*", answer(chatbot))) >= 20:
                break  # 20 tokens shown: the model now stalls
        job.cancel()
        stats = replica.wait_idle(15)
    finally:
        page.close()
    mine = [r for r in stats["requests"] if r["user_text"] == prompt]
    assert stats["active"] == 0 and mine[-1]["status"] == "cancelled" and mine[-1]["tokens"] == 20
