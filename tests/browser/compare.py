"""Normalise two wire recordings (the page's browser, the adapter) and say how they differ.

What is compared is the page's chain as it ran on the wire, per turn: every step the client made
the server run (`/run/predict` or `/queue/join`, `fn_index`, `data`, `trigger_id`, `event_data`,
the step's outputs, or its error), every upload (bytes, filename, content type) and every other
request. Only what legitimately differs between two clients is normalised away:

- the session hash and each proxy's own origin (two clients, two sessions, two ports);
- event ids (the server's names for queued steps; the steps are matched to their outputs first);
- upload paths and temporary file names (the server chooses them);
- State slots (`gr.State` inputs and outputs: the server reads them from the session, whatever
  a client puts there);
- timings (`duration`, `average_duration`) and the streaming updates between a step's start and
  its end (how the diffs of a stream are batched depends on timing; the final outputs do not);
- the order of requests the page sends at once ("concurrent siblings"), a chained step recorded
  after the driver moved on ("late tail"), and an unqueued step's outputs that one client got as
  a diff against a stale stream ("stale stream"): chance and load, not the page's behaviour.

Requests that are the page itself, not its chain, are in `ACCEPTED`: each with a name and why.
Everything else that differs is a difference, shown as a unified diff of the two recordings.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Accepted:
    """A kind of request one client makes and the other need not, and why that is fine."""

    name: str
    path: re.Pattern[str]
    why: str


_API = r"^(?:/gradio_api)?"
ACCEPTED: tuple[Accepted, ...] = (
    Accepted(
        "page",
        re.compile(r"^/$|^/\?|^/favicon\.ico$|^/manifest\.json$"),
        "the page's HTML: the adapter reads the same page from its config instead",
    ),
    Accepted(
        "page code",
        re.compile(
            r"^/(?:assets|static|svelte|custom_component|gradio_api/custom_component)/"
            r"|^(?:/gradio_api)?/theme\.css$|\.(?:js|css|map|woff2?|ttf|svg|png|ico)$"
        ),
        "the page's scripts, styles and fonts: what the browser runs, not what the page runs on the server",
    ),
    Accepted(
        "config",
        re.compile(_API + r"/(?:config|info|api_info)(?:/|$)"),
        "how each client reads the page (the browser's HTML embeds it; gradio_client asks for it)",
    ),
    Accepted(
        "app id",
        re.compile(_API + r"/app_id/?$"),
        "the adapter checks, before a turn, that the page it holds is the page served (issue 18)",
    ),
    Accepted(
        "heartbeat",
        re.compile(_API + r"/heartbeat/"),
        "the adapter opens no heartbeat on purpose: Gradio drops a closed tab's State an hour later",
    ),
    Accepted(
        "file display",
        re.compile(_API + r"/file[=/]"),
        "the page downloads avatars and attachments to show them; the adapter shows nothing",
    ),
    Accepted(
        "queue stream",
        re.compile(_API + r"/queue/data$"),
        "the transport of queued steps' results, compared through each step's outputs, not per connection",
    ),
)


def accepted(path: str) -> Accepted | None:
    """The accepted difference a request path falls under, if any."""
    return next((a for a in ACCEPTED if a.path.search(path)), None)


def _state_slots(config: dict[str, Any]) -> dict[int, tuple[set[int], set[int]]]:
    """fn_index -> (input positions, output positions) that are `gr.State` components."""
    kinds = {c["id"]: c.get("type") for c in config.get("components", [])}
    slots = {}
    for i, dep in enumerate(config.get("dependencies", [])):
        fn = dep.get("id", i) if isinstance(dep.get("id"), int) else i
        ins = {n for n, c in enumerate(dep.get("inputs", [])) if kinds.get(c) == "state"}
        outs = {n for n, c in enumerate(dep.get("outputs", [])) if kinds.get(c) == "state"}
        slots[fn] = (ins, outs)
    return slots


class Normaliser:
    """Rewrites one client's recording into the comparable form (see the module docstring)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.slots = _state_slots(config)
        deps = {
            (dep.get("id", i) if isinstance(dep.get("id"), int) else i): dep
            for i, dep in enumerate(config.get("dependencies", []))
        }
        self.parents = {fn: dep.get("trigger_after") for fn, dep in deps.items()}
        # fn -> the steps whose completion makes the page send it: a chained step's parent, and
        # for a `.change` listener every step that outputs the component it listens to.
        self.sent_after: dict[int, set[int]] = {}
        self.listeners: set[int] = set()
        for fn, dep in deps.items():
            after = {dep["trigger_after"]} if isinstance(dep.get("trigger_after"), int) else set()
            watched = {t[0] for t in dep.get("targets") or [] if isinstance(t, list) and t[1:2] == ["change"]}
            if watched:
                self.listeners.add(fn)
            after |= {other for other, o in deps.items() if watched & set(o.get("outputs") or [])}
            self.sent_after[fn] = after

    def _tail_of(self, earlier: list[dict[str, Any]], entry: dict[str, Any]) -> bool:
        """Accepted difference "late tail": whether `entry`, the first request recorded in a turn,
        is the last step of the turn before (a step chained after one that ran there, and not run
        since). A turn starts with a person's action, never with a chained step; the driver moves on
        once the page is usable and nothing is in flight, which can fall between a step's end and
        the fetch of the step chained after it (Gradio 6's ChatInterface re-enables its input before
        its last `.then` step is sent). The adapter awaits that step within its turn."""
        fn = entry.get("fn_index")
        parent = self.parents.get(fn) if isinstance(fn, int) else None
        if not isinstance(parent, int):
            return False
        ran = [e.get("fn_index") for e in earlier]
        if parent not in ran:
            return False
        last = len(ran) - 1 - ran[::-1].index(parent)
        return fn not in ran[last + 1 :]

    def _sent_at_once(self, prev: dict[str, Any], entry: dict[str, Any]) -> bool:
        a, b = prev.get("fn_index"), entry.get("fn_index")
        if not isinstance(a, int) or not isinstance(b, int):
            return False
        if entry.get("route") == prev.get("route") == "run/predict":
            parent = self.parents.get(b)
            if parent is not None and parent == self.parents.get(a):
                return True
        return bool({a, b} & self.listeners) and bool(self.sent_after.get(a, set()) & self.sent_after.get(b, set()))

    def _siblings_sorted(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Accepted difference "concurrent siblings": the requests the page sends when one step
        completes go out at once, without waiting for each other (two fetches in flight; which
        arrives first depends on what each gathers first and on the machine's load, e.g. Gradio 6
        sends a step with no inputs before one that reads the chatbot): unqueued steps chained
        after the same step, and a `.change` listener with the steps chained after a step whose
        outputs fired it (the frontend sends the chained steps, then the change events on its
        next tick). Their order is not the page's behaviour: a run of such adjacent steps is
        compared by fn index. Anything else keeps its order."""
        out: list[dict[str, Any]] = []
        for entry in entries:
            prev = out[-1] if out else None
            if prev is not None and self._sent_at_once(prev, entry):
                group = [prev, entry]
                out[-1:] = sorted(group, key=lambda e: e.get("fn_index") or 0)
            else:
                out.append(entry)
        return out

    def steps(self, recording: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The recording as turns of entries: steps, uploads and unaccepted other requests."""
        session = self._session(recording)
        uploads: dict[str, str] = {}
        completed: dict[str, Any] = {}
        for x in recording:
            for m in x.get("sse") or []:
                if isinstance(m, dict) and m.get("msg") == "process_completed" and m.get("event_id"):
                    completed[m["event_id"]] = m
        turns: list[dict[str, Any]] = []
        for x in recording:
            if not turns or turns[-1]["turn"] != x["turn"]:
                turns.append({"turn": x["turn"], "entries": []})
            entry = self._entry(x, completed, uploads)
            if entry is not None:
                turns[-1]["entries"].append(entry)
        for earlier, later in itertools.pairwise(turns):
            while later["entries"] and self._tail_of(earlier["entries"], later["entries"][0]):
                earlier["entries"].append(later["entries"].pop(0))
        for turn in turns:
            turn["entries"] = self._siblings_sorted(turn["entries"])
        text = json.dumps(turns)
        if session:
            text = text.replace(session, "<session>")
        text = re.sub(r"https?://127\.0\.0\.1:\d+", "<origin>", text)
        for path, token in sorted(uploads.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(json.dumps(path)[1:-1], token)
        text = re.sub(r"/tmp/gradio/[0-9a-f]{16,}/", "<tmp>/", text)
        return [t for t in json.loads(text) if t["turn"] is not None or t["entries"]]

    @staticmethod
    def _session(recording: list[dict[str, Any]]) -> str | None:
        for x in recording:
            body = x.get("json")
            if isinstance(body, dict) and isinstance(body.get("session_hash"), str):
                return str(body["session_hash"])
            if x.get("query", {}).get("session_hash"):
                return str(x["query"]["session_hash"][0])
        return None

    def _entry(self, x: dict[str, Any], completed: dict[str, Any], uploads: dict[str, str]) -> dict[str, Any] | None:
        path = x["path"]
        route = re.sub(r"^/gradio_api", "", path)
        if x["method"] == "POST" and route in ("/run/predict", "/queue/join"):
            return self._step(route[1:], x, completed)
        if x["method"] == "POST" and route == "/upload":
            result = x.get("response_json")
            for p in result if isinstance(result, list) else []:
                if isinstance(p, str):
                    uploads.setdefault(p, f"<upload {len(uploads)}: {p.rsplit('/', 1)[-1]}>")
            return {
                "route": "upload",
                "status": x["status"],
                "parts": [
                    {k: part[k] for k in ("name", "filename", "content_type", "bytes")} for part in x.get("parts") or []
                ],
                "result": result,
            }
        if accepted(path):
            return None
        return {
            "route": f"{x['method']} {path}",
            "query": {k: v for k, v in x.get("query", {}).items()},
            "body": x.get("json"),
            "status": x["status"],
        }

    def _step(self, route: str, x: dict[str, Any], completed: dict[str, Any]) -> dict[str, Any]:
        raw = x.get("json")
        body: dict[str, Any] = raw if isinstance(raw, dict) else {}
        fn = body.get("fn_index")
        ins, outs = self.slots.get(fn, (set(), set())) if isinstance(fn, int) else (set(), set())
        data = body.get("data")
        if isinstance(data, list):
            data = ["<state>" if n in ins else v for n, v in enumerate(data)]
        step: dict[str, Any] = {"route": route, "fn_index": fn, "data": data}
        for key in ("trigger_id", "event_data"):
            step[key] = body[key] if key in body else "<absent>"
        extra = sorted(set(body) - {"fn_index", "data", "trigger_id", "event_data", "session_hash"})
        if extra:
            step["other fields"] = {k: body[k] for k in extra}
        step["status"] = x["status"]
        if route == "run/predict":
            result = x.get("response_json")
            output = result if isinstance(result, dict) else {"raw": result}
            success = x["status"] == 200 and "error" not in output
        else:
            resp = x.get("response_json")
            event = resp.get("event_id") if isinstance(resp, dict) else None
            m = completed.get(event) if event else None
            output = (m.get("output") or {}) if m else {"not completed": True}
            success = bool(m and m.get("success"))
        if success:
            out = output.get("data")
            if isinstance(out, list):
                out = ["<state>" if n in outs else v for n, v in enumerate(out)]
            stale = route == "run/predict" and isinstance(out, list) and any(map(_is_diff, out))
            step["outputs"] = STALE if stale else out
        else:
            step["error"] = output.get("error", output)
        return step


STALE = "<a diff against a stale stream>"
"""Accepted difference "stale stream": Gradio 4 and 5 key diff streams by a generator's id() and
never end those of unqueued generators, so an unqueued step that draws a stale address is answered
with a diff instead of its value (docs/space-api.md). Which client draws one is chance, and it is
the server's answer, not the client's request: such a step's outputs are compared as equal to the
other client's. What each client sends next is still compared, so a client that misread the diff
still differs there."""
# The judge reads Gradio's diff format itself, not through the adapter's `protocol.is_diff`: what
# judges the adapter must not share its code.
_DIFF_OPS = frozenset({"replace", "append", "add", "delete"})


def _is_diff(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_op(op) for op in value)


def _is_op(op: Any) -> bool:
    return isinstance(op, list) and len(op) == 3 and op[0] in _DIFF_OPS and isinstance(op[1], list)


def _stale_aligned(browser: list[dict[str, Any]], adapter: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """Both recordings with the outputs of a step one client got as a stale diff marked in both."""
    browser, adapter = json.loads(json.dumps(browser)), json.loads(json.dumps(adapter))
    by_turn = {t["turn"]: t["entries"] for t in adapter}
    for t in browser:
        theirs = by_turn.get(t["turn"], [])
        for mine, other in zip(t["entries"], theirs, strict=False):
            if mine.get("fn_index") == other.get("fn_index") and STALE in (mine.get("outputs"), other.get("outputs")):
                if "outputs" in mine and "outputs" in other:
                    mine["outputs"] = other["outputs"] = STALE
    return browser, adapter


def lines(turns: list[dict[str, Any]]) -> list[str]:
    """A recording as diffable text: one block per turn, one JSON document per entry."""
    out = []
    for t in turns:
        out.append(f"== turn: {t['turn']}")
        for e in t["entries"]:
            out.extend(json.dumps(e, indent=1, sort_keys=True, ensure_ascii=False).splitlines())
    return out


def diff(browser: list[dict[str, Any]], adapter: list[dict[str, Any]]) -> str:
    """A unified diff of the two normalised recordings ("" when they are equal)."""
    browser, adapter = _stale_aligned(browser, adapter)
    return "\n".join(difflib.unified_diff(lines(browser), lines(adapter), "browser", "adapter", lineterm="", n=4))


def _walk(a: Any, b: Any, where: str, found: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in b:
                found.append(f"{where}.{k}: browser {json.dumps(a[k])[:160]}, adapter lacks it")
            elif k not in a:
                found.append(f"{where}.{k}: adapter {json.dumps(b[k])[:160]}, browser lacks it")
            else:
                _walk(a[k], b[k], f"{where}.{k}", found)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _walk(x, y, f"{where}[{i}]", found)
    elif a != b:
        found.append(f"{where}: browser {json.dumps(a)[:160]} != adapter {json.dumps(b)[:160]}")


def _label(e: dict[str, Any]) -> str:
    return f"{e['route']} fn {e['fn_index']}" if "fn_index" in e else str(e["route"])


def summary(browser: list[dict[str, Any]], adapter: list[dict[str, Any]]) -> list[str]:
    """The differences as short sentences: per turn the steps each client ran, then field by field
    for the steps both ran (matched by fn_index, in order)."""
    browser, adapter = _stale_aligned(browser, adapter)
    found: list[str] = []
    by_turn = {t["turn"]: t["entries"] for t in adapter}
    for t in browser:
        mine, theirs = t["entries"], by_turn.pop(t["turn"], None)
        if theirs is None:
            found.append(f"turn {t['turn']!r}: the adapter has no such turn")
            continue
        a_labels, b_labels = [_label(e) for e in mine], [_label(e) for e in theirs]
        if a_labels != b_labels:
            found.append(
                f"turn {t['turn']!r}: browser ran [{', '.join(a_labels)}]; adapter ran [{', '.join(b_labels)}]"
            )
        pool = list(theirs)
        for e in mine:
            match = next(
                (
                    o
                    for o in pool
                    if o["route"].split()[-1] == e["route"].split()[-1] and o.get("fn_index") == e.get("fn_index")
                ),
                None,
            )
            if match is None:
                match = next((o for o in pool if "fn_index" in e and o.get("fn_index") == e["fn_index"]), None)
            if match is None:
                continue
            pool.remove(match)
            sub: list[str] = []
            _walk(e, match, "", sub)
            found.extend(f"turn {t['turn']!r} {_label(e)}: {s.lstrip('.')}" for s in sub)
    found.extend(f"turn {k!r}: only the adapter has it" for k in by_turn)
    return found


def kinds(differences: list[str]) -> list[str]:
    """The differences grouped by kind (turn names and list indices left out), with their counts:
    the short list to fix against; `summary` has every occurrence."""
    counts: dict[str, int] = {}
    for line in differences:
        key = re.sub(r"^turn '[^']*'", "turn *", line)
        key = re.sub(r"\[\d+\]", "[*]", key)
        key = re.sub(r"(browser|adapter) (\[\{|\{).*?( != | lacks| ,|$)", r"\1 <value>\3", key)
        counts[key] = counts.get(key, 0) + 1
    return [f"{n:3d}x {k}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
