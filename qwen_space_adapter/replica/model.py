"""The replica's stand-in for Qwen2.5-1M: deterministic, weightless, and honest about its input.

The replica exists to prove what reached the model, so every answer is built from the request:
it quotes the last user message, acknowledges a system prompt, refers to earlier turns of the
same session and answers questions about attached text. Tests compare answers with what they
sent, which is how a broken adapter (lost history, leaked session, dropped file) gets caught.

Both replica apps share it, so the hand-made app and the Qwen team's real UI answer alike: it
decides the answer (`plan`) and how it unfolds in time (`steps`), and each app only shows the steps
in its own UI. It also turns a Space's server-side history into a `Request`
(`request_from_history`), since both apps keep it in the same `{"role", "content"}` shape.

This module is pure Python with no third-party imports: it runs inside the replica's own
environment (gradio 4 or 5) and is also unit-tested from the adapter's environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    from ..space_text import SUMMARY_MARKER, THINKING, unquote
except ImportError:  # loaded by path inside the replica's environment, outside the package
    import importlib.util as _util

    _spec = _util.spec_from_file_location("qwen_space_text", Path(__file__).resolve().parent.parent / "space_text.py")
    assert _spec is not None and _spec.loader is not None
    _space_text = _util.module_from_spec(_spec)
    _spec.loader.exec_module(_space_text)
    THINKING, SUMMARY_MARKER, unquote = _space_text.THINKING, _space_text.SUMMARY_MARKER, _space_text.unquote

# Magic prompts switch a fault on for one request. They are documented in the README and in
# `qwen-space replica --help`; the bracket syntax keeps them out of any natural sentence.
FAULT_RE = re.compile(r"\[\[fault:([a-z-]+)(?:=([0-9.]+))?\]\]")
# A test can ask for a long, slow answer without a fault: `[[tokens=500]]`, `[[delay=0.01]]`.
KNOB_RE = re.compile(r"\[\[(tokens|delay)=([0-9.]+)\]\]")
# `[[tool]]`: the real UI's agent answers in two parts, a tool call and then the answer.
TOOL_RE = re.compile(r"\[\[tool\]\]")
# The prompt convention the adapter uses when it sends a history as context (g4f's format_prompt).
ROLE_RE = re.compile(r"^(System|User|Assistant): ?", re.MULTILINE)
PASS_KEY_RE = re.compile(r"[Tt]he pass key is (\d+)")

FAULTS = (
    "error-before-first-token",
    "error-mid-stream",
    "stall",
    "slow-first-token",
    "die-mid-stream",
)


@dataclass
class Request:
    """What the model was asked, in the order the Space's task history keeps it."""

    history: list[tuple[str, str]]  # earlier (user, assistant) turns of this session
    user_text: str
    files: list[tuple[str, str]] = field(default_factory=list)  # (name, text) of attachments
    # Attachments of earlier messages: the Space's history keeps them, so the model still sees them.
    earlier_files: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Plan:
    """How one answer unfolds: text tokens, pacing and any fault to inject."""

    tokens: list[str]
    summary: str
    tool: bool
    prefill_seconds: float
    token_delay: float
    fault: str | None = None
    fault_arg: float | None = None


def parse_prompt(text: str) -> tuple[str | None, list[tuple[str, str]], str]:
    """Split a g4f-style prompt ("System: ...\\nUser: ...\\nAssistant: ...") into its parts.

    A plain prompt without role prefixes is just the user message; the Space receives plain
    prompts from the browser, and role-prefixed ones only from adapters that send context.
    """
    matches = list(ROLE_RE.finditer(text))
    if not matches or matches[0].start() != 0:
        return None, [], text.strip()
    parts: list[tuple[str, str]] = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        parts.append((m.group(1), text[m.end() : end].strip()))
    if parts and parts[-1] == ("Assistant", ""):
        parts.pop()
    system = "\n".join(c for r, c in parts if r == "System") or None
    convo = [(r, c) for r, c in parts if r != "System"]
    last_user = ""
    if convo and convo[-1][0] == "User":
        last_user = convo.pop()[1]
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for role, content in convo:
        if role == "User":
            if pending is not None:
                pairs.append((pending, ""))
            pending = content
        else:
            pairs.append((pending or "", content))
            pending = None
    if pending is not None:
        pairs.append((pending, ""))
    return system, pairs, last_user


def _clean(text: str) -> str:
    return TOOL_RE.sub("", FAULT_RE.sub("", KNOB_RE.sub("", text))).strip()


def _quote(text: str, limit: int = 200) -> str:
    text = " ".join(_clean(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def compose_answer(req: Request) -> str:
    """The answer text (without the summary block); every sentence proves part of the input."""
    system, context_pairs, user = parse_prompt(req.user_text)
    history = list(req.history) + context_pairs
    sentences = [f'You said: "{_quote(user)}".']
    if system:
        sentences.append(f'I will follow the system prompt: "{_quote(system)}".')
    if history:
        first = history[0][0]
        sentences.append(
            f'This is turn {len(history) + 1} of our conversation; your first message was: "{_quote(first)}".'
        )
    else:
        sentences.append("This is the first turn of our conversation.")
    for name, content in req.files:
        found = PASS_KEY_RE.search(content)
        detail = f" The pass key is {found.group(1)}." if found else ""
        sentences.append(f'I read "{name}" ({len(content)} characters).{detail}')
    for name, content in req.earlier_files:
        found = PASS_KEY_RE.search(content)
        detail = f" The pass key is {found.group(1)}." if found else ""
        sentences.append(f'I still have "{name}" from an earlier message ({len(content)} characters).{detail}')
    return " ".join(sentences)


def tokenize(text: str) -> list[str]:
    """Word-sized tokens that concatenate back to the text exactly."""
    return re.findall(r"\S+\s*|\s+", text)


def planned(req: Request, settings: Any, **extra: Any) -> tuple[Plan, dict[str, Any]]:
    """One request's plan under the launch settings, and the record the stats keep of it: every
    page answers through this, so all of them pace, fault and count alike."""
    p = plan(
        req,
        token_delay=settings.token_delay,
        prefill_base=settings.prefill_base,
        prefill_per_mb=settings.prefill_per_mb,
    )
    files = [name for name, _ in req.files]
    return p, {"user_text": req.user_text, "history_turns": len(req.history), "files": files, **extra}


def plan(
    req: Request,
    *,
    token_delay: float = 0.02,
    prefill_base: float = 0.05,
    prefill_per_mb: float = 0.5,
    max_tokens: int | None = None,
) -> Plan:
    """Decide tokens, pacing and faults for one request from its text and the launch settings."""
    raw = req.user_text
    fault = FAULT_RE.search(raw)
    knobs = {k: float(v) for k, v in KNOB_RE.findall(raw)}
    answer = compose_answer(req)
    tokens = tokenize(answer)
    if "tokens" in knobs:
        want = int(knobs["tokens"])
        tokens += [f" word{i}" for i in range(max(0, want - len(tokens)))]
        del tokens[want:]
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    context_chars = len(raw) + sum(len(c) for _, c in req.files + req.earlier_files)
    context_chars += sum(len(u) + len(a) for u, a in req.history)
    prefill = prefill_base + prefill_per_mb * context_chars / 1_000_000
    summary = (
        f"{SUMMARY_MARKER}<details><summary>Generation details</summary>"
        f"context: {context_chars} chars; tokens: {len(tokens)}</details>"
    )
    return Plan(
        tokens=tokens,
        summary=summary,
        tool=bool(TOOL_RE.search(raw)),
        prefill_seconds=prefill,
        token_delay=knobs.get("delay", token_delay),
        fault=fault.group(1) if fault else None,
        fault_arg=float(fault.group(2)) if fault and fault.group(2) else None,
    )


@dataclass(frozen=True)
class Step:
    """One moment of an answer: wait `delay` seconds, then show `text` (or fail, or die)."""

    delay: float = 0.0
    text: str | None = None  # the whole bot text to show now
    token: bool = False  # `text` grew by one generated token
    error: str | None = None  # fail the request with this message (the app's error type)
    die: bool = False  # end the server process at once, as a crashed Space would


def steps(p: Plan, fault: str | None = None, fault_arg: float | None = None) -> Iterator[Step]:
    """How an answer unfolds, for either app to show: the thinking placeholder during the
    prefill, one step per token, then the text with its summary block. `fault` (from the
    prompt or the launch settings) breaks it where a real model breaks."""
    yield Step(text=THINKING)
    if fault == "error-before-first-token":
        yield Step(error="Replica fault: the model failed before its first token.")
        return
    delay = fault_arg if fault == "slow-first-token" and fault_arg is not None else p.prefill_seconds
    text = ""
    half = len(p.tokens) // 2
    for i, token in enumerate(p.tokens):
        if i == half and fault == "error-mid-stream":
            yield Step(error="Replica fault: the model failed mid-stream.")
            return
        if i == half and fault == "stall":
            delay += fault_arg if fault_arg is not None else 30.0
        if i == half and fault == "die-mid-stream":
            yield Step(die=True)
            return
        text += token
        yield Step(delay=delay, text=text, token=True)
        delay = p.token_delay
    yield Step(delay=delay if p.tokens else p.prefill_seconds, text=text + p.summary)


def answer_text(p: Plan) -> str:
    """The answer as the server-side history keeps it: the tokens, without the summary block."""
    return "".join(p.tokens)


def file_text(path: str) -> str:
    """An attachment's text as the model would read it; an unreadable file says why."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return f"<unreadable: {e}>"


def _parts(content: Any) -> tuple[str, list[str]]:
    """Text and file paths of a history message's content (a string or a list of items)."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    text, files = "", []
    for item in content:
        get = item.get if isinstance(item, dict) else lambda k, _i=item: getattr(_i, k, None)
        if get("text") is not None:
            text += str(get("text"))
        elif get("file") is not None:
            files.append(str(get("file")))
    return text, files


def request_from_history(history: list[Any]) -> Request:
    """The model's `Request` from a Space's server-side history, whose last user message is
    the one to answer.

    Messages are `{"role", "content"}` dicts (or objects with those keys, as Qwen-Agent's
    `Message`); content is a string or a list of `{"text"}` / `{"file": path}` items. Only user
    and assistant text counts: tool calls and results of a multi-part answer are not turns.
    """
    users = [i for i, m in enumerate(history) if m["role"] == "user"]
    if not users:
        return Request(history=[], user_text="")
    pairs: list[tuple[str, str]] = []
    earlier: list[str] = []
    for message in history[: users[-1]]:
        text, attached = _parts(message["content"])
        if message["role"] == "user":
            pairs.append((text, ""))
            earlier += attached
        elif message["role"] == "assistant" and pairs and text:
            pairs[-1] = (pairs[-1][0], text)
    text, files = _parts(history[users[-1]]["content"])
    return Request(history=pairs, user_text=text, files=_read(files), earlier_files=_read(earlier))


def _read(paths: list[str]) -> list[tuple[str, str]]:
    return [(Path(p.removeprefix("file://")).name, file_text(p.removeprefix("file://"))) for p in paths]
