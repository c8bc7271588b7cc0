"""`qwen-space load`: how many users a Space holds, and at what latency, measured like a serving benchmark.

Serving benchmarks (vLLM's `benchmark_serving`, llmperf, Locust) give load shapes, per-request
latencies and goodput, but none speaks a Gradio Space's queue, and none tells queue wait from
prefill from decode. This module drives a target through the adapter's public API
(`create_async_generator`), the way users do, and times every item of every answer as it
arrives, so it can:

- **shape the load**: `users` closed loop (each user starts its next conversation when the last
  one ends, optionally added `ramp` users per second), or `rate` open loop (Poisson arrivals of
  conversations, requests per second); until `duration` seconds passed or `requests` were sent;
  conversations of `turns` turns, so the Space's session history grows;
- **time each request** (seconds since the call): queue wait (until the Space starts the job:
  its thinking placeholder or first delta), thinking (placeholder to first delta: the prefill),
  time to first token, the gaps between deltas, end to end; deltas and characters; the error
  class when it failed (every failure is kept and classed, never dropped);
- **report** p50/p90/p99/mean of each figure over the answered requests, throughput, error rate
  by class, and goodput against an SLO (`ttft=5,e2e=60`), for one level or a sweep of levels.

Timestamps are taken the moment an item arrives, before anything else is done with it, and the
per-delta work is a few additions: the generator must never be the bottleneck (the benchmark
checks it at 200 users against a hand-written SSE client, see `benchmarks/`).

A Space on the internet is shared. Against a target not on this machine, `check_courtesy`
refuses more than 2 concurrent users (and any open loop) unless the caller says it owns the
Space, checks that claim when a token and `huggingface_hub` are at hand, and prints what it is
about to send. Reports: `load_report.py`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio

from ..conversation import JsonConversation
from ..errors import InvalidRequestError, QwenSpaceError
from ..events import QueueStatus, Reasoning, TextRewritten
from ..provider import Qwen_Qwen_2_5M
from .metrics import Distribution, percentile

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus

MAX_SHARED_USERS = 2  # concurrent users allowed against a Space the caller does not say it owns
DEFAULT_OPEN_DURATION = 30.0  # seconds an open loop runs when neither duration nor requests is given
OK, ERROR, INTERRUPTED = "ok", "error", "interrupted"

FIGURES: dict[str, tuple[str, str]] = {
    "queue_wait": ("s", "call -> the Space starts the job (its thinking placeholder or first delta): add_text + queue"),
    "thinking": ("s", "thinking placeholder -> first text delta: the Space's prefill"),
    "ttft": ("s", "call -> first text delta (time to first token)"),
    "gap": ("s", "between consecutive text deltas of one answer, all answers pooled"),
    "e2e": ("s", "call -> end of the answer (end to end)"),
    "deltas": ("", "text deltas per answer"),
    "chars": ("", "answer characters per answer"),
}
LATENCY_FIGURES = ("queue_wait", "thinking", "ttft", "e2e")


# ---------------------------------------------------------------------------------------------
# What to send


@dataclass(frozen=True)
class Prompt:
    """One user message and the text files attached to it."""

    text: str
    files: tuple[str, ...] = ()


def load_prompts(path: str | os.PathLike[str], *, allow_outside: bool = False) -> list[Prompt]:
    """Prompts from a JSONL file: one `{"prompt": "...", "files": ["doc.txt"]}` per line.

    Relative file paths are read relative to the JSONL file, so a prompt set can travel with
    its documents. Every file is checked once here, so a bad one stops the run before it starts.
    A file outside the JSONL file's folder (an absolute path, `../`, a symlink out) is refused
    unless `allow_outside` (`--allow-files-outside-prompts-dir`): a prompt set from elsewhere
    must not be able to upload `~/.ssh/id_rsa` to a Space.
    """
    from ..options import check_file

    p = Path(path)
    folder = p.parent.resolve()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidRequestError(f"Cannot read the prompts file {str(p)!r}: {e}") from e
    prompts: list[Prompt] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidRequestError(f"{p}:{number}: not JSON ({e.msg}).") from e
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
            raise InvalidRequestError(f'{p}:{number}: expected {{"prompt": "text", "files": [paths]}}.')
        files = obj.get("files") or []
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise InvalidRequestError(f"{p}:{number}: 'files' must be a list of paths.")
        resolved = tuple(str(f if Path(f).is_absolute() else p.parent / f) for f in files)
        for given, f in zip(files, resolved, strict=True):
            if not allow_outside and not Path(f).resolve().is_relative_to(folder):
                raise InvalidRequestError(
                    f"{p}:{number}: the file {given!r} is outside the prompt set's folder {str(folder)!r} "
                    f"(it is {str(Path(f).resolve())!r}); a prompt set uploads only its own documents. Move "
                    "the file next to the prompts file, or pass --allow-files-outside-prompts-dir "
                    "(allow_outside=True) if you mean to upload it."
                )
            check_file(f)
        prompts.append(Prompt(obj["prompt"], resolved))
    if not prompts:
        raise InvalidRequestError(f"The prompts file {str(p)!r} holds no prompt.")
    return prompts


FILLER = (
    "The quarterly report lists every shipment, its route, its weight in kilograms and the day it "
    "arrived; the notes below repeat the figures so that the reader can check them. "
)


def make_document(path: str | os.PathLike[str], chars: int) -> str:
    """Write a UTF-8 text document of `chars` characters (a long report) and return its path."""
    reps, rest = divmod(chars, len(FILLER))
    Path(path).write_text(FILLER * reps + FILLER[:rest], encoding="utf-8")
    return str(path)


def generated_prompts(
    lengths: Sequence[int], document_chars: int = 0, directory: str | os.PathLike[str] | None = None
) -> list[Prompt]:
    """Prompts of the given lengths in characters, each with a document of `document_chars` attached.

    A long attached document is what makes the Space's prefill (its "thinking") long, so the
    load can include that case; the document is written once into `directory`.
    """
    if not lengths or any(n < 1 for n in lengths):
        raise InvalidRequestError("prompt lengths must be positive numbers of characters.")
    files: tuple[str, ...] = ()
    if document_chars:
        if directory is None:
            raise InvalidRequestError("a generated document needs a directory to be written to.")
        files = (make_document(Path(directory) / f"document-{document_chars}.txt", document_chars),)
    head = "Summarise these notes in three sentences. " if files else "Answer in three sentences. "
    out = []
    for n in lengths:
        body = head + (FILLER * (n // len(FILLER) + 1))
        out.append(Prompt(body[:n].rstrip() or "Hi", files))
    return out


# ---------------------------------------------------------------------------------------------
# How to send it


@dataclass(frozen=True)
class Shape:
    """The load: closed loop of `users` (optionally ramped) or open loop at `rate`, and when to stop."""

    users: int | None = None
    rate: float | None = None
    ramp: float | None = None  # users added per second (closed loop)
    duration: float | None = None  # no new request after this many seconds
    requests: int | None = None  # no more than this many requests
    turns: int = 1

    def check(self) -> Shape:
        """Refuse impossible shapes before anything is sent; fill in the default stop."""
        if (self.users is None) == (self.rate is None):
            raise InvalidRequestError("Give either users (closed loop) or rate (open loop, requests/s).")
        if self.users is not None and self.users < 1:
            raise InvalidRequestError("users must be at least 1.")
        if self.rate is not None and not self.rate > 0:
            raise InvalidRequestError("rate must be a positive number of requests per second.")
        if self.ramp is not None and (self.rate is not None or not self.ramp > 0):
            raise InvalidRequestError("ramp (users added per second) is positive and only for a closed loop.")
        if self.turns < 1:
            raise InvalidRequestError("turns must be at least 1.")
        if self.duration is not None and not self.duration > 0:
            raise InvalidRequestError("duration must be a positive number of seconds.")
        if self.requests is not None and self.requests < 1:
            raise InvalidRequestError("requests must be at least 1.")
        if self.duration is None and self.requests is None:
            if self.users is not None:  # each user holds one conversation
                return replace(self, requests=self.users * self.turns)
            return replace(self, duration=DEFAULT_OPEN_DURATION)
        return self

    @property
    def mode(self) -> str:
        return "closed" if self.users is not None else "open"

    def at(self, level: float) -> Shape:
        """The same shape at another level (users, or rate for an open loop)."""
        if self.users is not None:
            if level != int(level) or level < 1:
                raise InvalidRequestError(f"sweep level {level:g} is not a whole number of users.")
            return replace(self, users=int(level))
        return replace(self, rate=float(level))

    @property
    def level(self) -> float:
        return float(self.users if self.users is not None else self.rate or 0.0)


@dataclass(frozen=True)
class SLO:
    """Limits a request must meet to count for goodput (seconds per figure)."""

    limits: tuple[tuple[str, float], ...] = (("ttft", 5.0), ("e2e", 60.0))

    @classmethod
    def parse(cls, text: str) -> SLO:
        """`ttft=5,e2e=60` (figures: queue_wait, thinking, ttft, e2e; seconds)."""
        limits = []
        for part in text.split(","):
            if not part.strip():
                continue
            name, _, value = part.partition("=")
            name = name.strip()
            if name not in LATENCY_FIGURES:
                raise InvalidRequestError(f"SLO figure {name!r} is not one of {', '.join(LATENCY_FIGURES)}.")
            try:
                limits.append((name, float(value)))
            except ValueError:
                raise InvalidRequestError(f"SLO {part.strip()!r}: the limit must be seconds, like ttft=5.") from None
        if not limits:
            raise InvalidRequestError("An SLO needs at least one limit, like ttft=5,e2e=60.")
        return cls(tuple(limits))

    def met(self, record: RequestRecord) -> bool:
        if record.status != OK:
            return False
        for name, limit in self.limits:
            value = getattr(record, name)
            if value is None or value > limit:
                return False
        return True

    def __str__(self) -> str:
        return ",".join(f"{k}={v:g}" for k, v in self.limits)


@dataclass
class LoadConfig:
    """Everything a load run needs; `url` is where the Space is (see `harness.cli.open_target`)."""

    url: str
    shape: Shape
    prompts: list[Prompt]
    target: str | None = None  # as the user named it (a Space id lets the ownership check run)
    slo: SLO = field(default_factory=SLO)
    timeout: float = 600.0  # seconds allowed per request (whole answer, first token included)
    retries: int = 0  # the adapter's retries: 0, so that every failure shows
    token: str | None = field(default=None, repr=False)
    i_own_this_space: bool = False
    seed: int = 0  # Poisson arrivals are reproducible
    keep_text: bool = False  # keep each answer's text on its record (costs memory)
    provider: type[Qwen_Qwen_2_5M] = Qwen_Qwen_2_5M
    model: str = "qwen-2.5-1m"


# ---------------------------------------------------------------------------------------------
# What one request did


@dataclass
class RequestRecord:
    """One request's timeline in seconds since its call, and what became of it."""

    index: int
    user: int
    conversation: int
    turn: int
    submitted: float  # seconds since the level started
    status: str = INTERRUPTED  # until it ends: a request cut short by a stop stays "interrupted"
    error: str | None = None  # the error class
    message: str | None = None
    started: float | None = None  # the Space started the job: placeholder or first delta
    placeholder: float | None = None
    first_delta: float | None = None
    end: float | None = None  # the answer ended, failed or was interrupted
    deltas: int = 0
    chars: int = 0
    rewrites: int = 0
    queue_events: int = 0
    max_position: int | None = None
    gaps: list[float] = field(default_factory=list, repr=False)
    text: str | None = field(default=None, repr=False)

    @property
    def queue_wait(self) -> float | None:
        return self.started

    @property
    def thinking(self) -> float | None:
        if self.placeholder is None or self.first_delta is None:
            return None
        return self.first_delta - self.placeholder

    @property
    def ttft(self) -> float | None:
        return self.first_delta

    @property
    def e2e(self) -> float | None:
        return self.end if self.status == OK else None

    ROW = (
        "index", "user", "conversation", "turn", "submitted", "status", "error", "queue_wait", "thinking",
        "ttft", "e2e", "end", "deltas", "chars", "gap_mean", "gap_max", "queue_events", "max_position",
        "rewrites", "message",
    )

    def row(self) -> dict[str, Any]:
        """Flat figures for CSV and JSON (seconds, rounded to microseconds)."""
        out: dict[str, Any] = {}
        for key in self.ROW:
            if key == "gap_mean":
                value: Any = sum(self.gaps) / len(self.gaps) if self.gaps else None
            elif key == "gap_max":
                value = max(self.gaps) if self.gaps else None
            else:
                value = getattr(self, key)
            out[key] = round(value, 6) if isinstance(value, float) else value
        return out


@dataclass
class LevelResult:
    """One level of load (one run of a shape): every request, and the figures over them."""

    shape: Shape
    slo: SLO
    records: list[RequestRecord]
    seconds: float
    interrupted: bool = False

    @property
    def level(self) -> float:
        return self.shape.level

    def by_status(self, status: str) -> list[RequestRecord]:
        return [r for r in self.records if r.status == status]

    def metrics(self) -> dict[str, Distribution]:
        """Each figure's distribution over the answered requests (failed ones are counted apart)."""
        ok = self.by_status(OK)
        out = {}
        for name, (unit, _) in FIGURES.items():
            if name == "gap":
                values = [g for r in ok for g in r.gaps]
            else:
                values = [float(v) for r in ok if (v := getattr(r, name)) is not None]
            out[name] = Distribution.of(values, unit)
        return out

    def errors(self) -> dict[str, int]:
        return dict(Counter(r.error or "unknown" for r in self.by_status(ERROR)).most_common())

    def summary(self) -> dict[str, Any]:
        """The level's figures as plain data (the JSON report's per-level part, records aside)."""
        ok, failed = self.by_status(OK), self.by_status(ERROR)
        finished = len(ok) + len(failed)
        secs = self.seconds or float("nan")
        good = sum(1 for r in ok if self.slo.met(r))
        return {
            "level": self.level,
            "seconds": round(self.seconds, 6),
            "interrupted": self.interrupted,
            "requests": len(self.records),
            "ok": len(ok),
            "failed": len(failed),
            "interrupted_requests": len(self.by_status(INTERRUPTED)),
            "errors": self.errors(),
            "error_rate": round(len(failed) / finished, 6) if finished else None,
            "throughput": {
                "requests_per_s": round(len(ok) / secs, 6),
                "chars_per_s": round(sum(r.chars for r in ok) / secs, 6),
                "deltas_per_s": round(sum(r.deltas for r in ok) / secs, 6),
            },
            "goodput": {
                "slo": str(self.slo),
                "requests_per_s": round(good / secs, 6),
                "share": round(good / finished, 6) if finished else None,
            },
            "metrics": {k: {**v.as_dict(), "meaning": FIGURES[k][1]} for k, v in self.metrics().items()},
        }


@dataclass
class LoadResult:
    """A whole run: one level, or several for a sweep."""

    config: LoadConfig
    levels: list[LevelResult]
    started_at: str
    interrupted: bool = False
    sweep: str | None = None  # "users" or "rate" when several levels were asked for


@dataclass
class Progress:
    """A snapshot for the live progress line."""

    level: float
    elapsed: float
    done: int
    failed: int
    in_flight: int
    p50_ttft: float | None


# ---------------------------------------------------------------------------------------------
# Courtesy


def is_local(url: str) -> bool:
    """Whether the target runs on this machine (loopback), where any load is the caller's own business."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def space_id_of(target: str | None) -> str | None:
    """The `owner/name` id when the target was given as one (a URL cannot be mapped back reliably)."""
    from ..target import SPACE_ID_RE

    return target if target and SPACE_ID_RE.match(target) else None


def ownership(space_id: str, token: str) -> tuple[bool | None, str]:
    """(owned, why): whether the token's account (or one of its organisations) owns the Space.

    None when it cannot be told (no huggingface_hub, no network, unknown Space): the check is a
    courtesy, so it fails soft and says why.
    """
    try:
        from huggingface_hub import HfApi
    except ImportError:
        return None, "ownership not checked: huggingface_hub is not installed"
    api = HfApi(token=token)
    try:
        me = api.whoami()
    except Exception as e:  # offline, bad token, Hub down: all mean "cannot tell"
        return None, f"ownership not checked: the Hub did not answer who the token belongs to ({type(e).__name__})"
    names = {me.get("name")} | {o.get("name") for o in me.get("orgs") or [] if isinstance(o, dict)}
    owner = space_id.split("/", 1)[0]
    try:
        author = getattr(api.space_info(space_id), "author", None) or owner
    except Exception:  # the id's owner is enough to judge
        author = owner
    account = me.get("name") or "the token's account"
    if author in names:
        return True, f"the token's account {account} owns {space_id}"
    return False, f"the token's account {account} does not own {space_id} (owner: {author})"


def check_courtesy(
    config: LoadConfig, levels: Sequence[float] | None = None, say: Callable[[str], None] | None = None
) -> None:
    """Refuse heavy load on a Space that may be shared, and say what will be sent; local targets pass.

    Raises `InvalidRequestError` (nothing sent) when more than 2 users, or an open loop, would
    hit a target not on this machine without `i_own_this_space`, or when a token shows that the
    account does not own the Space.
    """
    say = say or (lambda text: print(text, file=sys.stderr))
    if is_local(config.url):
        return
    shape = config.shape.check()
    peak_users = max([shape.level, *(levels or [])]) if shape.mode == "closed" else None
    space_id = space_id_of(config.target)
    owned: bool | None = None
    if config.token and space_id:
        owned, why = ownership(space_id, config.token)
        say(f"qwen-space load: {why}")
    heavy = peak_users is None or peak_users > MAX_SHARED_USERS
    if heavy and (not config.i_own_this_space or owned is False):
        what = "an open loop (--rate) has no bound on concurrent users" if peak_users is None else (
            f"{peak_users:g} concurrent users"
        )
        reason = (
            "the token's account does not own it"
            if owned is False
            else "it may be shared with everyone; pass --i-own-this-space (i_own_this_space=True) if it is yours"
        )
        raise InvalidRequestError(
            f"Refusing to load {config.url}: {what}, against a Space not on this machine, where "
            f"at most {MAX_SHARED_USERS} are allowed because {reason}. Run a duplicate or a replica "
            "(TARGET 'replica') for heavier load."
        )
    say(describe_plan(config, levels))


def describe_plan(config: LoadConfig, levels: Sequence[float] | None = None) -> str:
    """What the run will send, in words: printed before a run against a Space that may be public."""
    shape = config.shape.check()
    if shape.mode == "closed":
        load = f"{shape.users} concurrent user(s)" + (f", {shape.ramp:g} added per second" if shape.ramp else "")
    else:
        load = f"Poisson arrivals at {shape.rate:g} request(s)/s"
    if levels:
        load += f"; sweep levels {', '.join(f'{x:g}' for x in levels)}"
    stop = " and ".join(
        s for s in (f"{shape.requests} request(s)" if shape.requests else "",
                    f"{shape.duration:g} s" if shape.duration else "") if s
    )
    lines = [
        f"qwen-space load will send to {config.url}: {load}, conversations of {shape.turns} turn(s), "
        f"stopping after {stop}{' per level' if levels else ''}. Prompts ({len(config.prompts)}, used in turn):",
    ]
    for p in config.prompts[:3]:
        text = " ".join(p.text.split())
        text = text if len(text) <= 100 else text[:97] + "..."
        files = "".join(f" + {Path(f).name} ({_size(f)})" for f in p.files)
        lines.append(f"  - {len(p.text)} chars: {text!r}{files}")
    if len(config.prompts) > 3:
        lines.append(f"  - ... and {len(config.prompts) - 3} more")
    uploads = upload_list(config.prompts)
    if uploads:
        # Every file, with its real path (symlinks and ../ resolved): nothing goes out unseen.
        lines.append(f"Files it will upload ({len(uploads)}):")
        lines += [f"  - {f} ({_size(f)})" for f in uploads]
    else:
        lines.append("Files it will upload: none.")
    return "\n".join(lines)


def upload_list(prompts: Sequence[Prompt]) -> list[str]:
    """Every distinct file the prompts attach, as its resolved absolute path, in first-use order."""
    seen: dict[str, None] = {}
    for prompt in prompts:
        for f in prompt.files:
            seen.setdefault(str(Path(f).resolve()), None)
    return list(seen)


def _size(path: str) -> str:
    try:
        return f"{os.path.getsize(path):,} bytes"
    except OSError:
        return "unreadable"


# ---------------------------------------------------------------------------------------------
# Running


def poisson_gaps(rate: float, seed: int) -> Iterator[float]:
    """Seconds between Poisson arrivals at `rate` per second (exponential gaps), reproducibly."""
    rng = random.Random(seed)
    while True:
        yield rng.expovariate(rate)


class LevelRun:
    """One level: starts users or arrivals, times every request, and stops on demand."""

    def __init__(self, config: LoadConfig, shape: Shape, on_progress: Callable[[Progress], None] | None,
                 progress_every: float) -> None:
        self.config, self.shape = config, shape.check()
        self.on_progress, self.progress_every = on_progress, progress_every
        self.records: list[RequestRecord] = []
        self.issued = 0
        self.conversations = 0
        self.done = self.failed = 0
        self.recent_ttft: deque[float] = deque(maxlen=200)
        self.stopped = False
        self.scope: anyio.CancelScope | None = None
        self.t0 = 0.0
        self.deadline = float("inf")
        self.keep_text = config.keep_text or self.shape.turns > 1
        self.options: dict[str, Any] = {
            "space": config.url,
            "timeout": config.timeout,
            "first_token_timeout": config.timeout,
            "idle_timeout": min(config.timeout, 120.0),
            "max_retries": config.retries,
        }
        if config.token:
            self.options["hf_token"] = config.token

    def stop(self) -> None:
        """Stop now: no new request, in-flight ones are cancelled (on the Space too) and kept as interrupted."""
        self.stopped = True
        if self.scope is not None:
            self.scope.cancel()

    def claim(self) -> int | None:
        """The next request's index, or None when the level is over (budget, deadline or stop)."""
        if self.stopped or time.perf_counter() >= self.deadline:
            return None
        if self.shape.requests is not None and self.issued >= self.shape.requests:
            return None
        self.issued += 1
        return self.issued - 1

    async def run(self) -> LevelResult:
        self.t0 = time.perf_counter()
        if self.shape.duration is not None:
            self.deadline = self.t0 + self.shape.duration
        async with anyio.create_task_group() as outer:
            if self.on_progress is not None:
                outer.start_soon(self._progress)
            with anyio.CancelScope() as scope:
                self.scope = scope
                if self.stopped:
                    scope.cancel()
                async with anyio.create_task_group() as work:
                    if self.shape.users is not None:
                        for user in range(self.shape.users):
                            work.start_soon(self._user, user)
                    else:
                        work.start_soon(self._arrivals, work)
            outer.cancel_scope.cancel()
        seconds = time.perf_counter() - self.t0
        if self.on_progress is not None:
            self.on_progress(self.snapshot())
        return LevelResult(self.shape, self.config.slo, self.records, seconds, self.stopped)

    def snapshot(self) -> Progress:
        ttft = percentile(list(self.recent_ttft), 50) if self.recent_ttft else None
        in_flight = len(self.records) - self.done - self.failed
        return Progress(self.shape.level, time.perf_counter() - self.t0, self.done, self.failed, in_flight, ttft)

    async def _progress(self) -> None:
        assert self.on_progress is not None
        while True:
            await anyio.sleep(self.progress_every)  # a reporting period, not synchronisation
            self.on_progress(self.snapshot())

    async def _user(self, user: int) -> None:
        if self.shape.ramp:
            await anyio.sleep(user / self.shape.ramp)  # the ramp's schedule
        while (first := self.claim()) is not None:
            await self._conversation(user, first)

    async def _arrivals(self, work: TaskGroup) -> None:
        assert self.shape.rate is not None
        start = anyio.current_time()
        at = 0.0
        user = 0
        for gap in poisson_gaps(self.shape.rate, self.config.seed):
            first = self.claim()
            if first is None:
                return
            work.start_soon(self._conversation, user, first)
            user += 1
            at += gap
            await anyio.sleep_until(start + at)  # the arrival schedule

    async def _conversation(self, user: int, first: int) -> None:
        """Up to `turns` requests in one Space session; a failed turn ends the conversation."""
        number = self.conversations
        self.conversations += 1
        conversation: JsonConversation | None = None
        messages: list[dict[str, str]] = []
        index: int | None = first
        for turn in range(self.shape.turns):
            if index is None:
                return
            prompt = self.config.prompts[index % len(self.config.prompts)]
            messages.append({"role": "user", "content": prompt.text})
            record = RequestRecord(index, user, number, turn, time.perf_counter() - self.t0)
            self.records.append(record)
            conversation = await self._request(record, messages, conversation, prompt.files)
            if record.status != OK:
                return
            messages.append({"role": "assistant", "content": record.text or "(empty)"})
            if not self.config.keep_text:
                record.text = None
            index = self.claim() if turn + 1 < self.shape.turns else None

    async def _request(
        self, rec: RequestRecord, messages: list[dict[str, str]], conversation: JsonConversation | None,
        files: tuple[str, ...],
    ) -> JsonConversation | None:
        """Send one request and time every item on arrival; every outcome lands on `rec`."""
        clock = time.perf_counter
        parts: list[str] | None = [] if self.keep_text else None
        gaps = rec.gaps
        options = dict(self.options, files=list(files)) if files else self.options
        t0 = clock()
        last = 0.0
        try:
            stream = self.config.provider.create_async_generator(
                self.config.model, messages, return_conversation=True, conversation=conversation, **options
            )
            async with aclosing(stream):
                async for item in stream:
                    now = clock()  # first: the arrival time, before any work on the item
                    if isinstance(item, str):
                        if rec.first_delta is None:
                            rec.first_delta = now - t0
                            if rec.started is None:
                                rec.started = rec.first_delta
                        else:
                            gaps.append(now - last)
                        last = now
                        rec.deltas += 1
                        rec.chars += len(item)
                        if parts is not None:
                            parts.append(item)
                    elif isinstance(item, Reasoning):
                        if rec.placeholder is None:
                            rec.placeholder = now - t0
                            if rec.started is None:
                                rec.started = rec.placeholder
                    elif isinstance(item, QueueStatus):
                        rec.queue_events += 1
                        if item.position is not None:
                            rec.max_position = max(rec.max_position or 0, item.position)
                    elif isinstance(item, TextRewritten):
                        rec.rewrites += 1
                        rec.chars = len(item.text)
                        if parts is not None:
                            parts[:] = [item.text]
                    elif isinstance(item, JsonConversation):
                        conversation = item
            rec.end = clock() - t0
            rec.status = OK
            self.done += 1
            if rec.first_delta is not None:
                self.recent_ttft.append(rec.first_delta)
        except QwenSpaceError as e:
            self._failed(rec, e, clock() - t0)
        except anyio.get_cancelled_exc_class():
            rec.end = clock() - t0  # stays "interrupted"
            raise
        except Exception as e:  # not the adapter's promise, but a load test must count it, not die
            self._failed(rec, e, clock() - t0)
        if parts is not None:
            rec.text = "".join(parts)
        return conversation

    def _failed(self, rec: RequestRecord, error: Exception, seconds: float) -> None:
        rec.end = seconds
        rec.status = ERROR
        rec.error = type(error).__name__ if isinstance(error, QwenSpaceError) else f"unexpected:{type(error).__name__}"
        rec.message = " ".join(str(error).split())[:300]
        self.failed += 1


# ---------------------------------------------------------------------------------------------
# Entry points


def parse_levels(text: str) -> list[float]:
    """`1,2,4,8` -> [1.0, 2.0, 4.0, 8.0]; refuses empty, non-numeric or non-positive levels."""
    try:
        levels = [float(x) for x in re.split(r"[,\s]+", text.strip()) if x]
    except ValueError:
        raise InvalidRequestError(f"--sweep {text!r}: give levels like 1,2,4,8.") from None
    if not levels or any(not x > 0 for x in levels):
        raise InvalidRequestError(f"--sweep {text!r}: give positive levels like 1,2,4,8.")
    return levels


async def load_async(
    config: LoadConfig,
    levels: Sequence[float] | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every: float = 1.0,
    handle_sigint: bool = False,
    courtesy: bool = True,
    say: Callable[[str], None] | None = None,
) -> LoadResult:
    """Run the load (one level, or each of `levels` in turn) and return every request's record.

    With `handle_sigint` (main thread only), the first Ctrl-C stops the run: in-flight requests
    are cancelled and kept as interrupted, no further level starts, and the partial result is
    returned with `interrupted=True`; a second Ctrl-C exits at once.
    """
    shape = config.shape.check()
    if not config.prompts:
        raise InvalidRequestError("A load run needs at least one prompt.")
    if levels:
        shapes = [shape.at(x).check() for x in levels]
    else:
        shapes = [shape]
    if courtesy:
        check_courtesy(config, levels, say)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    sweep = ("users" if shape.mode == "closed" else "rate") if levels else None
    result = LoadResult(config, [], started_at, sweep=sweep)
    current: list[LevelRun] = []

    async def watch_sigint(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            task_status.started()  # the handler is in place before the first request is sent
            async for _ in signals:
                if result.interrupted:
                    os._exit(130)  # a second Ctrl-C: out now, without the report
                result.interrupted = True
                if current:
                    current[-1].stop()

    async with anyio.create_task_group() as tg:
        if handle_sigint:
            await tg.start(watch_sigint)
        for level_shape in shapes:
            if result.interrupted:
                break
            run = LevelRun(config, level_shape, on_progress, progress_every)
            current.append(run)
            result.levels.append(await run.run())
        tg.cancel_scope.cancel()
    return result


def run_load(config: LoadConfig, levels: Sequence[float] | None = None, **kwargs: Any) -> LoadResult:
    """The synchronous twin of `load_async` (runs its own event loop; in a thread when one is running)."""
    import asyncio
    import functools
    from concurrent.futures import ThreadPoolExecutor

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(functools.partial(load_async, config, levels, **kwargs))
    kwargs.pop("handle_sigint", None)  # signals reach the main thread only
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, functools.partial(load_async, config, levels, **kwargs)).result()


__all__ = [
    "FIGURES",
    "SLO",
    "LevelResult",
    "LevelRun",
    "LoadConfig",
    "LoadResult",
    "Progress",
    "Prompt",
    "RequestRecord",
    "Shape",
    "check_courtesy",
    "describe_plan",
    "generated_prompts",
    "is_local",
    "load_async",
    "load_prompts",
    "make_document",
    "parse_levels",
    "poisson_gaps",
    "run_load",
    "upload_list",
]
