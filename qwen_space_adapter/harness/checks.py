"""The conformance checks: does this target still behave the way the adapter relies on?

Each check drives the target through the adapter's public API (`create_async_generator`), the
way a user would, and states one property. The prompts are chosen to be answerable both by the
real Qwen2.5-1M model and by the replica's fake model, whose answers quote what it received: a
check never passes merely because the replica is lenient, and never needs the replica to pass.

On a replica (a target that answers `/replica/stats`), the cancellation check also asks the
server whether the generation really stopped; elsewhere it can only check that the stream
closed promptly. A failing `api` check marks the other checks as not run: with no endpoints to
drive, they would only repeat the same failure, slowly (with retries).

`Suite` keeps what checks share (one sample answer, the timings of every answer) so that a live
Space is asked as few questions as possible.
"""

from __future__ import annotations

import secrets
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from ..constants import CLI_MODEL
from ..conversation import JsonConversation
from ..deltas import THINKING, bot_text, summary_start
from ..errors import InvalidRequestError, QwenSpaceError
from ..events import QueueStatus, Reasoning, Summary, TextRewritten
from ..page import Page
from ..provider import Qwen_Qwen_2_5M
from .metrics import AnswerTiming, Distribution, summarize

PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"
MIN_DELTAS = 3  # "streams": at least this many separate deltas in one answer
CLOSE_LIMIT = 10.0  # seconds a cancelled stream may take to close (the adapter's own grace)
STREAM_PROMPT = "Count from one to twenty in words, separated by spaces."


class CheckFailed(AssertionError):
    """The target does not have the property the check states."""

    def __init__(self, detail: str, **data: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.data = data


class CheckSkipped(Exception):
    """The check does not apply to this target (the reason says why)."""


@dataclass
class CheckResult:
    """The outcome of one check: status, a one-line detail, and data for machine reports."""

    name: str
    title: str
    status: str
    detail: str
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in (PASS, SKIP)


@dataclass
class AnswerRun:
    """Everything one answer yielded, each item with its arrival time since the call."""

    prompt: str
    items: list[tuple[float, Any]]
    conversation: JsonConversation | None
    closed_seconds: float | None = None  # how long aclose() took (cancellation)

    @property
    def deltas(self) -> list[str]:
        return [i for _, i in self.items if isinstance(i, str)]

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    def events(self, kind: type) -> list[Any]:
        return [i for _, i in self.items if isinstance(i, kind)]

    @property
    def final_chatbot_text(self) -> str | None:
        """The bot text of the conversation's last turn, summary block included."""
        chatbot = getattr(self.conversation, "chatbot", None)
        return bot_text(chatbot) if chatbot is not None else None

    @property
    def final_answer(self) -> str | None:
        """The final chatbot text without its summary block: what the deltas must add up to."""
        full = self.final_chatbot_text
        if full is None:
            return None
        cut = summary_start(full)
        return full if cut < 0 else full[:cut]

    @property
    def timing(self) -> AnswerTiming:
        started = next((t for t, i in self.items if isinstance(i, str | Reasoning)), None)
        return AnswerTiming(started, tuple(t for t, i in self.items if isinstance(i, str)))


@dataclass
class Context:
    """What the checks need to know about the target, and what they share."""

    url: str
    replica: bool
    timeout: float = 300.0
    samples: int = 3
    provider: type[Qwen_Qwen_2_5M] = Qwen_Qwen_2_5M
    model: str = CLI_MODEL
    runs: list[AnswerRun] = field(default_factory=list)
    sample: AnswerRun | None = None
    api: dict[str, Any] | None = None

    def options(self) -> dict[str, Any]:
        return {
            "space": self.url,
            "timeout": self.timeout,
            "first_token_timeout": self.timeout,
            "idle_timeout": min(self.timeout, 120.0),
        }

    async def ask(
        self,
        messages: list[dict[str, str]],
        *,
        conversation: JsonConversation | None = None,
        files: list[Path] | None = None,
        stop_after_first_delta: bool = False,
    ) -> AnswerRun:
        """One answer through the adapter, every item timestamped; optionally cancelled early."""
        start = time.monotonic()
        stream = self.provider.create_async_generator(
            self.model,
            messages,
            return_conversation=True,
            conversation=conversation,
            files=files or None,
            **self.options(),
        )
        run = AnswerRun(prompt=messages[-1]["content"], items=[], conversation=None)
        try:
            async for item in stream:
                if isinstance(item, JsonConversation):
                    run.conversation = item
                    continue
                run.items.append((time.monotonic() - start, item))
                if stop_after_first_delta and isinstance(item, str):
                    break
        finally:
            closing = time.monotonic()
            await stream.aclose()
            run.closed_seconds = time.monotonic() - closing
        if not stop_after_first_delta:
            self.runs.append(run)
        return run

    @property
    def stream_prompt(self) -> str:
        """The prompt of an ordinary answer. On a replica it asks for 60 tokens (a documented
        knob of its fake model): its quoted answer alone is short enough that, at test speed,
        the server's 50 ms batching could merge it into too few updates to call a stream."""
        return STREAM_PROMPT + (" [[tokens=60]]" if self.replica else "")

    async def sample_answer(self) -> AnswerRun:
        """One ordinary answer, shared by the checks that only need to look at one."""
        if self.sample is None:
            self.sample = await self.ask([{"role": "user", "content": self.stream_prompt}])
        return self.sample

    async def replica_get(self, path: str, **params: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=60.0) as client:
            r = await client.get(self.url + path, params=params)
            r.raise_for_status()
            data: dict[str, Any] = r.json()
            return data


def is_replica(url: str) -> bool:
    """Whether `url` is a replica: only the replica serves `/replica/stats`."""
    try:
        r = httpx.get(url.rstrip("/") + "/replica/stats", timeout=5.0)
        return r.status_code == 200 and "started" in r.json()
    except Exception:
        return False


# --- the checks ---------------------------------------------------------------------------


async def check_api(ctx: Context) -> tuple[str, dict[str, Any]]:
    try:
        # Never followed: a redirect may point off the origin the caller named.
        async with httpx.AsyncClient(timeout=15.0, follow_redirects=False) as client:
            r = await client.get(ctx.url + "/config")
    except httpx.HTTPError as e:
        raise CheckFailed(f"cannot reach {ctx.url}/config: {type(e).__name__}: {e}") from None
    if r.is_redirect:
        raise CheckFailed(
            f"{ctx.url}/config redirects to {r.headers.get('location')!r}, which is not followed: "
            "name the Space's own URL"
        )
    if r.status_code != 200:
        raise CheckFailed(f"{ctx.url}/config answered HTTP {r.status_code}")
    try:
        config = r.json()
    except ValueError:
        raise CheckFailed(f"{ctx.url}/config is not JSON: not a Gradio app") from None
    try:
        page = Page.from_config(config)
    except QwenSpaceError as e:
        raise CheckFailed(str(e)) from None
    data = page.describe()
    ctx.api = data
    notes = "" if page.multimodal else "; text-only input: attachments cannot work"
    steps = " -> ".join(f"fn {s.fn_index}{' (answer)' if i == page.answer else ''}" for i, s in enumerate(page.chain))
    return (
        f"Gradio {page.version} ({page.protocol}): submit runs {steps}, "
        f"{page.input_type} -> {page.chatbot_type}{notes}",
        data,
    )


async def check_stream(ctx: Context) -> tuple[str, dict[str, Any]]:
    run = await ctx.sample_answer()
    n = len(run.deltas)
    data = {"deltas": n, "characters": len(run.text)}
    if n < MIN_DELTAS:
        raise CheckFailed(f"the answer arrived in {n} delta(s); a streamed answer has >= {MIN_DELTAS}", **data)
    return f"{n} deltas, {len(run.text)} characters", data


async def check_concat(ctx: Context) -> tuple[str, dict[str, Any]]:
    run = await ctx.sample_answer()
    final = run.final_answer
    rewrites = run.events(TextRewritten)
    data = {
        "joined_chars": len(run.text),
        "final_chars": None if final is None else len(final),
        "rewrites": len(rewrites),
    }
    if final is None:
        raise CheckFailed("the conversation holds no final chatbot to compare with", **data)
    if rewrites:
        raise CheckFailed(f"the Space rewrote text already streamed ({len(rewrites)} TextRewritten)", **data)
    if run.text != final:
        at = next(
            (i for i, (a, b) in enumerate(zip(run.text, final, strict=False)) if a != b), min(len(run.text), len(final))
        )
        raise CheckFailed(
            f"joined deltas differ from the final chatbot text at character {at}: "
            f"{run.text[at : at + 30]!r} vs {final[at : at + 30]!r}",
            **data,
        )
    return f"{len(run.deltas)} deltas join to the final {len(final)}-character answer", data


async def check_events(ctx: Context) -> tuple[str, dict[str, Any]]:
    run = await ctx.sample_answer()
    kinds = [type(i).__name__ for _, i in run.items if not isinstance(i, QueueStatus)]
    reasoning, summaries = run.events(Reasoning), run.events(Summary)
    full = run.final_chatbot_text or ""
    data = {"sequence_head": kinds[:4], "reasoning": len(reasoning), "summaries": len(summaries)}
    problems = []
    if THINKING in run.text:
        problems.append(f"the {THINKING!r} placeholder is inside the answer text")
    cut = summary_start(full)
    if cut >= 0 and full[cut:].strip() in run.text:
        problems.append("the <summary> block is inside the answer text")
    if not reasoning:
        problems.append(f"no Reasoning event for the {THINKING!r} placeholder")
    elif "str" in kinds and kinds.index("Reasoning") > kinds.index("str"):
        problems.append("Reasoning came after the answer had started")
    if cut >= 0:
        if len(summaries) != 1:
            problems.append(f"the Space sent a summary block but the stream had {len(summaries)} Summary")
        elif summaries[0].text != full[cut + 1 :]:
            problems.append("the Summary event's text is not the Space's summary block")
    elif summaries:
        problems.append("a Summary event without a summary block in the final chatbot")
    if problems:
        raise CheckFailed("; ".join(problems), **data)
    note = "Summary reported" if cut >= 0 else "no summary block sent"
    return f"placeholder reported as Reasoning; {note}; neither in the text", data


async def check_context(ctx: Context) -> tuple[str, dict[str, Any]]:
    first = "Remember the word PLUM. Reply with one short sentence."
    second = "What word did I ask you to remember? Answer with the word only."
    one = await ctx.ask([{"role": "user", "content": first}])
    history = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": one.text},
        {"role": "user", "content": second},
    ]
    two = await ctx.ask(history, conversation=one.conversation)
    data = {"second_answer": two.text[:300]}
    if "PLUM" not in two.text.upper():
        raise CheckFailed(f"the second answer does not recall PLUM: {two.text[:120]!r}", **data)
    return "the second turn recalled the word from the first", data


async def check_system(ctx: Context) -> tuple[str, dict[str, Any]]:
    messages = [
        {"role": "system", "content": "Always include the code word KIWI in every answer."},
        {"role": "user", "content": "Say hello in one short sentence."},
    ]
    run = await ctx.ask(messages)
    data = {"answer": run.text[:300]}
    if "KIWI" not in run.text.upper():
        raise CheckFailed(f"the answer ignores the system message's code word: {run.text[:120]!r}", **data)
    return "the answer follows the system message", data


async def check_attachment(ctx: Context) -> tuple[str, dict[str, Any]]:
    key = str(10000 + secrets.randbelow(90000))  # fresh each run: no cached answer can pass
    filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
    with tempfile.TemporaryDirectory(prefix="qwen-check-") as tmp:
        doc = Path(tmp) / "haystack.txt"
        doc.write_text(filler * 200 + f"The pass key is {key}. Remember it.\n" + filler * 200)
        run = await ctx.ask(
            [{"role": "user", "content": "What is the pass key in the attached document? Reply with the number only."}],
            files=[doc],
        )
    data = {"pass_key": key, "answer": run.text[:300]}
    if key not in run.text:
        raise CheckFailed(f"the answer does not contain the pass key {key}: {run.text[:120]!r}", **data)
    return f"the pass key {key} hidden in a {doc.name} came back", data


async def check_cancel(ctx: Context) -> tuple[str, dict[str, Any]]:
    nonce = secrets.token_hex(4)
    if ctx.replica:
        prompt = f"Cancellation probe {nonce}: a long answer please. [[tokens=400]]"
    else:
        prompt = f"Write a detailed essay of at least 600 words about the history of rivers. ({nonce})"
    run = await ctx.ask([{"role": "user", "content": prompt}], stop_after_first_delta=True)
    closed = run.closed_seconds or 0.0
    data: dict[str, Any] = {"close_seconds": round(closed, 3), "deltas_before_break": len(run.deltas)}
    if not run.deltas:
        raise CheckFailed("the answer ended before its first delta: nothing to cancel", **data)
    if closed > CLOSE_LIMIT:
        raise CheckFailed(f"closing the stream took {closed:.1f} s (limit {CLOSE_LIMIT:.0f} s)", **data)
    if not ctx.replica:
        return f"stream closed {closed:.2f} s after the break (the server's side is not observable)", data
    stats = await ctx.replica_get("/replica/wait-idle", timeout=30)
    mine = [r for r in stats.get("requests", []) if nonce in r.get("user_text", "")]
    if not mine:
        raise CheckFailed("the replica has no record of the cancelled request", **data)
    record = mine[-1]
    data.update(server_status=record.get("status"), server_tokens=record.get("tokens"))
    if record.get("status") != "cancelled":
        raise CheckFailed(
            f"the generation was not cancelled on the Space: it ended {record.get('status')!r} "
            f"after {record.get('tokens')} of 400 tokens",
            **data,
        )
    tokens = record.get("tokens")
    return f"cancelled on the Space after {tokens} of 400 tokens; closed in {closed:.2f} s", data


BAD_INPUTS: list[tuple[str, dict[str, Any]]] = [
    ("empty messages", {"messages": []}),
    ("messages not a list", {"messages": "hello"}),
    ("last message not the user's", {"messages": [{"role": "assistant", "content": "hi"}]}),
    ("unknown role", {"messages": [{"role": "wizard", "content": "hi"}]}),
    ("empty user message", {"messages": [{"role": "user", "content": "   "}]}),
    ("unknown model", {"model": "gpt-17"}),
    ("missing attachment", {"files": ["/nonexistent/qwen-check/missing.txt"]}),
    ("negative timeout", {"timeout": -1}),
    ("unknown option", {"temperture": 0.2}),
]


async def check_bad_input(ctx: Context) -> tuple[str, dict[str, Any]]:
    accepted = []
    for label, case in BAD_INPUTS:
        case = dict(case)
        model = case.pop("model", ctx.model)
        messages = case.pop("messages", [{"role": "user", "content": "hi"}])
        options = {**ctx.options(), **case}
        try:
            stream = ctx.provider.create_async_generator(model, messages, **options)
        except InvalidRequestError:
            continue
        except Exception as e:  # refused, but not with the documented error type
            accepted.append(f"{label} ({type(e).__name__})")
            continue
        # Not refused at the call. Never iterate it: that would send the bad request.
        await stream.aclose()
        accepted.append(label)
    data = {"cases": len(BAD_INPUTS), "not_refused": accepted}
    if accepted:
        raise CheckFailed("not refused with InvalidRequestError at the call: " + ", ".join(accepted), **data)
    return f"all {len(BAD_INPUTS)} bad calls raised InvalidRequestError before sending", data


async def check_timing(ctx: Context) -> tuple[str, dict[str, Any]]:
    for _ in range(ctx.samples):
        await ctx.ask([{"role": "user", "content": ctx.stream_prompt}])
    metrics = summarize(r.timing for r in ctx.runs)
    data = {"answers": len(ctx.runs), "metrics": {k: v.as_dict() for k, v in metrics.items()}}
    ttft, gap = metrics["time_to_first_token"], metrics["inter_token_gap"]
    if not ttft.n or not gap.n:
        raise CheckFailed("no answer streamed two deltas: nothing to measure", **data)
    return (
        f"{len(ctx.runs)} answers: first token p50 {_ms(ttft.p50)}, gap p50 {_ms(gap.p50)} p99 {_ms(gap.p99)}",
        data,
    )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    run: Callable[[Context], Awaitable[tuple[str, dict[str, Any]]]]


CHECKS: tuple[Check, ...] = (
    Check("api", "Space API has the endpoints and component types the adapter needs", check_api),
    Check("stream", "an answer streams as several deltas", check_stream),
    Check("concat", "deltas concatenate to the final chatbot text (summary cut)", check_concat),
    Check("events", "placeholder -> Reasoning, summary block -> Summary, never in the text", check_events),
    Check("context", "a conversation keeps its context across turns", check_context),
    Check("system", "the system message reaches the model", check_system),
    Check("attachment", "an attached document reaches the model", check_attachment),
    Check("cancel", "cancelling stops the generation", check_cancel),
    Check("bad-input", "bad input is refused before anything is sent", check_bad_input),
    Check("timing", "queue wait, first token, gaps, tokens/s (p50/p90/p99)", check_timing),
)
CHECK_NAMES: tuple[str, ...] = tuple(c.name for c in CHECKS)


def select(names: list[str] | None) -> list[Check]:
    """The checks to run, in suite order; unknown names are a usage error."""
    if not names:
        return list(CHECKS)
    unknown = sorted(set(names) - set(CHECK_NAMES))
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECK_NAMES)}")
    return [c for c in CHECKS if c.name in names]


@dataclass
class SuiteResult:
    """A whole run: the target, each check's result, and the timing distributions."""

    target: str
    url: str
    replica: bool
    started_at: str
    seconds: float
    results: list[CheckResult]
    metrics: dict[str, Distribution]
    api: dict[str, Any] | None

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.results)


class Suite:
    """Runs checks against one target, in order, sharing one context between them.

    Each check runs in an event loop of its own (`anyio.run`), so the suite works from plain
    code, a CLI and a synchronous pytest test alike.
    """

    def __init__(
        self,
        url: str,
        *,
        target: str | None = None,
        replica: bool | None = None,
        timeout: float = 300.0,
        samples: int = 3,
        provider: type[Qwen_Qwen_2_5M] = Qwen_Qwen_2_5M,
        check_timeout: float | None = None,
    ) -> None:
        url = url.rstrip("/")
        self.target = target or url
        self.ctx = Context(
            url=url,
            replica=is_replica(url) if replica is None else replica,
            timeout=timeout,
            samples=samples,
            provider=provider,
        )
        self.check_timeout = check_timeout or timeout * (samples + 2)
        self.results: dict[str, CheckResult] = {}

    def run(self, name: str) -> CheckResult:
        """Run one check (by name) and keep its result."""
        check = select([name])[0]
        api = self.results.get("api")
        if name != "api" and api is not None and api.status != PASS:
            result = CheckResult(name, check.title, SKIP, "not run: the target's API check failed", 0.0)
        else:
            result = anyio.run(self._run, check)
        self.results[name] = result
        return result

    async def _run(self, check: Check) -> CheckResult:
        start = time.monotonic()
        status = PASS
        data: dict[str, Any] = {}
        try:
            with anyio.fail_after(self.check_timeout):
                detail, data = await check.run(self.ctx)
        except CheckFailed as e:
            status, detail, data = FAIL, e.detail, e.data
        except CheckSkipped as e:
            status, detail = SKIP, str(e)
        except QwenSpaceError as e:  # the target failed to answer: it does not conform
            status, detail = FAIL, f"{type(e).__name__}: {e}"
        except TimeoutError:
            status, detail = FAIL, f"the check did not finish within {self.check_timeout:.0f} s"
        except Exception as e:  # a bug (in the adapter or the harness): report, don't hide
            status, detail = ERROR, f"{type(e).__name__}: {e}"
            data = {"traceback": traceback.format_exc(limit=8)}
        return CheckResult(check.name, check.title, status, detail, time.monotonic() - start, data)

    def run_all(self, names: list[str] | None = None) -> SuiteResult:
        """Run the selected checks (all by default) and gather the results and metrics."""
        import datetime as _dt

        started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        t0 = time.monotonic()
        results = [self.run(c.name) for c in select(names)]
        return SuiteResult(
            target=self.target,
            url=self.ctx.url,
            replica=self.ctx.replica,
            started_at=started,
            seconds=time.monotonic() - t0,
            results=results,
            metrics=summarize(r.timing for r in self.ctx.runs),
            api=self.ctx.api,
        )


def run_suite(url: str, names: list[str] | None = None, **kwargs: Any) -> SuiteResult:
    """Run the conformance suite against `url`; see `Suite` for the options."""
    return Suite(url, **kwargs).run_all(names)


__all__ = [
    "CHECKS",
    "CHECK_NAMES",
    "AnswerRun",
    "Check",
    "CheckFailed",
    "CheckResult",
    "CheckSkipped",
    "Context",
    "Suite",
    "SuiteResult",
    "is_replica",
    "run_suite",
    "select",
]
