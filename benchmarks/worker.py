"""One client, one scenario, one process: `python benchmarks/worker.py '<json spec>'` prints JSON.

Why a process per client: CPU time, peak RSS and thread counts are per process, so the three
clients can only be told apart when each runs alone in a process of its own. The orchestrator
(`run.py`) starts the servers, runs these workers one after the other and compares them.

Clients (same servers, same prompts, same checks):
- `sse`: a hand-written httpx client of `/queue/join` + `/queue/data` (the physical floor);
- `gc`: raw gradio_client, `Client.submit(...)` then `for output in job`;
- `gcwait`: raw gradio_client that only waits for `job.result()` (its own work, not iterated);
- `adapter`: `Qwen_Qwen_2_5M.create_async_generator(...)`;
- `bridge`: the adapter's job-to-async bridge alone, on a plain generator endpoint (gradio 6);
- `load`: the load generator of `qwen-space load` (`harness.load.load_async`), which drives the
  adapter with N concurrent users and times every delta; its CPU per delivered update is compared
  with raw SSE's (scenario `load_floor`: the `concurrency` scenario at the same size).

Every update's text carries ` #{seq}@{server time}`; a `Recorder` turns what reached the consumer
into latencies and checks that every stream was complete and in order (correctness, not timing).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

# The chatbot's shape and Gradio's diff format are the Space's, not the adapter's: every client,
# the raw floor included, reads them the same way, with the same pure functions.
from qwen_space_adapter.deltas import apply_diff, bot_text
from qwen_space_adapter.space_text import SUMMARY_MARKER, THINKING

TOKEN_RE = re.compile(r"#(\d+)(?:@(\d+\.\d+))?")


# ---------------------------------------------------------------------------------------------
# What a turn produced, whichever client ran it.


@dataclass
class Recorder:
    """Parses the stamped tokens of one answer as they reach the consumer."""

    seqs: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    text: str = ""
    updates: int = 0

    def feed_delta(self, delta: str, now: float) -> None:
        """New answer text (a delta) reached the consumer at `now`."""
        self.updates += 1
        self.text += delta
        for m in TOKEN_RE.finditer(delta):
            self.seqs.append(int(m.group(1)))
            if m.group(2):
                self.latencies_ms.append((now - float(m.group(2))) * 1000.0)

    def feed_snapshot(self, snapshot: str | None, now: float) -> None:
        """The whole answer so far reached the consumer; only what is new counts."""
        if snapshot is None:
            return
        body = snapshot.split(SUMMARY_MARKER, 1)[0]
        if body.strip() == THINKING:
            return
        if len(body) > len(self.text):
            self.feed_delta(body[len(self.text) :], now)

    def complete(self, n: int) -> bool:
        return self.seqs == list(range(n))


@dataclass
class TurnResult:
    """What one turn delivered, and what it cost the client process."""

    complete: bool
    tokens: int
    latencies_ms: list[float]
    text_head: str
    cpu_s: float
    wall_s: float


def session_hash() -> str:
    return uuid.uuid4().hex[:12]


# ---------------------------------------------------------------------------------------------
# (a) raw SSE: the floor. Lives only here, never in the adapter.


class RawSSE:
    """A minimal Gradio sse_v3 client: join, then read this session's event stream to the end."""

    is_async = True

    def __init__(self, url: str, prefix: str = "") -> None:
        self.base = url + prefix
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(120.0, connect=10.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=200),
        )

    async def send(self, request: httpx.Request, stream: bool = False) -> httpx.Response:
        """Send; resend (twice at most) when the server closed a kept-alive connection as it was reused.

        uvicorn closes connections idle for 5 s; on a loaded machine 200 conversations leave
        some idle that long between their two jobs, and reusing one just as it closes fails
        before the request reached the app ("Server disconnected without sending a response").
        Browsers and gradio_client's httpx retry exactly this case; the floor must not fail on it.
        """
        for attempt in range(3):
            try:
                return await self.http.send(request, stream=stream)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def job(self, session: str, fn_index: int, data: list[Any]) -> AsyncIterator[tuple[bool, list[Any]]]:
        """Yield (completed, outputs) for every update of one job."""
        body = {
            "data": data,
            "fn_index": fn_index,
            "session_hash": session,
            "event_data": None,
            "trigger_id": None,
        }
        r = await self.send(self.http.build_request("POST", self.base + "/queue/join", json=body))
        r.raise_for_status()
        event_id = r.json()["event_id"]
        current: list[Any] | None = None
        url = self.base + "/queue/data"
        resp = await self.send(self.http.build_request("GET", url, params={"session_hash": session}), stream=True)
        try:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") != event_id:
                    continue
                kind = msg.get("msg")
                if kind == "process_generating":
                    out = msg["output"]["data"]
                    if current is None:
                        current = list(out)
                    else:
                        for i, d in enumerate(out):
                            current[i] = apply_diff(current[i], d)
                    yield False, current
                elif kind == "process_completed":
                    if not msg.get("success", True):
                        raise RuntimeError(f"job failed: {msg.get('output')}")
                    yield True, msg["output"]["data"]
                    return
        finally:
            await resp.aclose()
        raise RuntimeError("the event stream ended before the job completed")

    async def upload(self, path: str) -> dict[str, Any]:
        """POST /upload, as a browser does, and return the FileData the Space expects."""
        with open(path, "rb") as fh:
            r = await self.http.post(self.base + "/upload", files={"files": (os.path.basename(path), fh)})
        r.raise_for_status()
        server_path = r.json()[0]
        return {
            "path": server_path,
            "orig_name": os.path.basename(path),
            "size": os.path.getsize(path),
            "mime_type": "text/plain",
            "meta": {"_type": "gradio.FileData"},
        }

    async def conversation(self, prompts: list[str], files: list[str], on_turn: TurnHook) -> None:
        session, chatbot = session_hash(), []
        for k, prompt in enumerate(prompts):
            t0, c0 = time.perf_counter(), time.process_time()
            uploaded = [await self.upload(p) for p in files] if k == 0 else []
            rec = Recorder()
            added: list[Any] = []
            async for done, out in self.job(session, 1, [{"text": prompt, "files": uploaded}, chatbot, None]):
                if done:
                    added = out
            chatbot = added[1]
            final: list[Any] = []
            async for done, out in self.job(session, 2, [chatbot, None, 0]):
                now = time.time()
                if done:
                    final = out
                rec.feed_snapshot(bot_text(out[0]), now)
            chatbot = final[0]
            on_turn(k, rec, time.process_time() - c0, time.perf_counter() - t0)

    async def plain(self, n: int, delay: float) -> Recorder:
        rec = Recorder()
        async for _done, out in self.job(session_hash(), 0, [n, delay]):
            rec.feed_snapshot(out[0], time.time())
        return rec

    async def aclose(self) -> None:
        await self.http.aclose()


TurnHook = Callable[[int, Recorder, float, float], None]


# ---------------------------------------------------------------------------------------------
# (b) raw gradio_client, as a user writes it by hand.


class RawGradioClient:
    """One `Client` per conversation (a session of its own), jobs iterated or only awaited."""

    is_async = False

    def __init__(self, url: str, iterate: bool = True) -> None:
        self.url = url
        self.iterate = iterate

    def _client(self) -> Any:
        from gradio_client import Client

        return Client(self.url, verbose=False, download_files=False, analytics_enabled=False)

    def conversation(self, prompts: list[str], files: list[str], on_turn: TurnHook) -> None:
        from gradio_client import handle_file

        client = self._client()
        try:
            chatbot: list[Any] = []
            for k, prompt in enumerate(prompts):
                t0, c0 = time.perf_counter(), time.process_time()
                value = {"text": prompt, "files": [handle_file(p) for p in files] if k == 0 else []}
                added = client.submit(value, chatbot, fn_index=1).result()
                job = client.submit(added[1], 0, fn_index=2)
                rec = Recorder()
                if self.iterate:
                    for output in job:
                        rec.feed_snapshot(bot_text(output), time.time())
                chatbot = job.result()
                rec.feed_snapshot(bot_text(chatbot), time.time())
                on_turn(k, rec, time.process_time() - c0, time.perf_counter() - t0)
        finally:
            client.close()

    def plain(self, n: int, delay: float) -> Recorder:
        client = self._client()
        try:
            rec = Recorder()
            job = client.submit(n, delay, api_name="/gen")
            for output in job:
                rec.feed_snapshot(output, time.time())
            rec.feed_snapshot(job.result(), time.time())
            return rec
        finally:
            client.close()


# ---------------------------------------------------------------------------------------------
# (c) the adapter, and its bridge alone.


class Adapter:
    """`create_async_generator`, continuing each conversation with `conversation=`."""

    is_async = True

    def __init__(self, url: str) -> None:
        self.url = url

    async def conversation(self, prompts: list[str], files: list[str], on_turn: TurnHook) -> None:
        from qwen_space_adapter import JsonConversation, Qwen_Qwen_2_5M

        conv: JsonConversation | None = None
        messages: list[dict[str, str]] = []
        for k, prompt in enumerate(prompts):
            t0, c0 = time.perf_counter(), time.process_time()
            messages.append({"role": "user", "content": prompt})
            rec = Recorder()
            kwargs: dict[str, Any] = {"space": self.url}
            if files and k == 0:
                kwargs["files"] = files
            stream = Qwen_Qwen_2_5M.create_async_generator(
                "qwen-2.5-1m-demo", messages, return_conversation=True, conversation=conv, **kwargs
            )
            async for item in stream:
                if isinstance(item, str):
                    rec.feed_delta(item, time.time())
                elif isinstance(item, JsonConversation):
                    conv = item
            messages.append({"role": "assistant", "content": rec.text})
            on_turn(k, rec, time.process_time() - c0, time.perf_counter() - t0)

    async def aclose(self) -> None:
        return None


class BridgeOnly:
    """The adapter's `bridge` following a gradio_client job of a plain generator endpoint."""

    is_async = True

    def __init__(self, url: str) -> None:
        self.url = url

    async def plain(self, n: int, delay: float) -> Recorder:
        from gradio_client import Client

        from qwen_space_adapter import bridge, protocol
        from qwen_space_adapter.clients import close_client

        client = Client(self.url, verbose=False, download_files=False, analytics_enabled=False)
        try:
            router = bridge.install_tap(client)
            if router is None:
                raise RuntimeError("the bridge's tap is unavailable with this gradio_client")
            follower = protocol.JobFollower(self.url, True, ("textbox",))
            router.follower = follower
            bridge.submit(client, follower, 0, [n, delay], [n, delay])
            rec = Recorder()
            async for event in follower.events():
                if isinstance(event, protocol.Output | protocol.Completed):
                    rec.feed_snapshot(event.data[0], time.time())
                if isinstance(event, protocol.Completed):
                    break
            return rec
        finally:
            await asyncio.to_thread(close_client, client)

    async def aclose(self) -> None:
        return None


class LoadGenerator(Adapter):
    """`qwen-space load`'s generator; warms up through the adapter like the `adapter` client."""

    async def run(self, conversations: int, n: int, delay: float) -> tuple[int, list[str]]:
        """One request per user, all users at once; (streams complete and in order, error classes)."""
        from qwen_space_adapter.harness.load import LoadConfig, Prompt, Shape, load_async

        prompts = [Prompt(prompt(n, delay, stamp=False, tag=f"L{i}")) for i in range(conversations)]
        config = LoadConfig(self.url, Shape(users=conversations, requests=conversations), prompts, keep_text=True)
        result = await load_async(config)
        done, errors = 0, []
        for record in result.levels[0].records:
            rec = Recorder()
            rec.feed_delta(record.text or "", 0.0)
            done += record.status == "ok" and rec.complete(n)
            if record.error:
                errors.append(record.error)
        return done, errors


def make_client(name: str, url: str) -> Any:
    if name == "sse":
        return RawSSE(url)
    if name == "sse6":
        return RawSSE(url, prefix="/gradio_api")
    if name in ("gc", "gc6"):
        return RawGradioClient(url, iterate=True)
    if name == "gcwait":
        return RawGradioClient(url, iterate=False)
    if name == "adapter":
        return Adapter(url)
    if name == "bridge":
        return BridgeOnly(url)
    if name == "load":
        return LoadGenerator(url)
    raise SystemExit(f"unknown client {name!r}")


# ---------------------------------------------------------------------------------------------
# Scenarios. Each returns a JSON-ready dict; timings are the client process's own.


def prompt(n: int, delay: float = 0.0, stamp: bool = True, tag: str = "") -> str:
    return f"bench {tag} [[tokens={n}]] [[delay={delay}]] [[stamp={int(stamp)}]]"


async def conversations(client: Any, specs: list[tuple[list[str], list[str]]]) -> list[list[TurnResult]]:
    """Run conversations concurrently (tasks for async clients, threads for gradio_client)."""
    results: list[list[TurnResult]] = [[] for _ in specs]

    def hook(i: int, n_expected: list[int]) -> TurnHook:
        def on_turn(k: int, rec: Recorder, cpu: float, wall: float) -> None:
            results[i].append(
                TurnResult(rec.complete(n_expected[k]), len(rec.seqs), rec.latencies_ms, rec.text[:80], cpu, wall)
            )

        return on_turn

    def expected(prompts: list[str]) -> list[int]:
        return [int(re.search(r"\[\[tokens=(\d+)\]\]", p).group(1)) for p in prompts]  # type: ignore[union-attr]

    if client.is_async:
        await asyncio.gather(*(client.conversation(p, f, hook(i, expected(p))) for i, (p, f) in enumerate(specs)))
    else:
        errors: list[BaseException] = []

        def run(i: int, p: list[str], f: list[str]) -> None:
            try:
                client.conversation(p, f, hook(i, expected(p)))
            except BaseException as e:  # reported, not swallowed
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i, p, f)) for i, (p, f) in enumerate(specs)]
        for t in threads:
            t.start()
        await asyncio.to_thread(lambda: [t.join() for t in threads])
        if errors:
            raise errors[0]
    return results


class ThreadSampler:
    """Peak OS threads of this process, sampled from /proc every 10 ms (itself excluded)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _count(self) -> int:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("Threads:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return threading.active_count()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._count() - 1)

    def __enter__(self) -> ThreadSampler:
        self.peak = self._count()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


_WARMED: set[tuple[str, str]] = set()


async def warm(client: Any, name: str, url: str) -> None:
    """One short turn first, once per process: imports, connections and (adapter) the config."""
    if (name, url) in _WARMED:
        return
    _WARMED.add((name, url))
    await conversations(client, [([prompt(3, tag="warm")], [])])


async def scenario(spec: dict[str, Any]) -> dict[str, Any]:
    name, kind = spec["client"], spec["scenario"]
    client = make_client(name, spec["url"])
    try:
        if kind == "plain_latency":
            runs = []
            await_plain = client.plain if client.is_async else None
            for i in range(spec["runs"] + 1):
                if await_plain is not None:
                    rec = await await_plain(spec["n"], spec["delay"])
                else:
                    rec = await asyncio.to_thread(client.plain, spec["n"], spec["delay"])
                if i:  # the first run warms up
                    runs.append({"complete": rec.complete(spec["n"]), "latencies_ms": rec.latencies_ms})
            return {"runs": runs}
        await warm(client, name, spec["url"])
        if kind == "latency":
            runs = []
            for i in range(spec["runs"]):
                res = await conversations(client, [([prompt(spec["n"], spec["delay"], tag=f"lat{i}")], [])])
                t = res[0][0]
                runs.append({"complete": t.complete, "latencies_ms": t.latencies_ms, "head": t.text_head})
            return {"runs": runs}
        if kind in ("concurrency", "load_floor", "load"):
            c, n = spec["conversations"], spec["n"]
            specs = [([prompt(n, spec["delay"], stamp=False, tag=f"c{i}")], []) for i in range(c)]
            rss0 = peak_rss_mb()
            errors: list[str] = []
            t0, c0 = time.perf_counter(), time.process_time()
            with ThreadSampler() as threads:
                if kind == "load":
                    done, errors = await client.run(c, n, spec["delay"])
                else:
                    res = await conversations(client, specs)
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            if kind != "load":
                done = sum(1 for r in res if len(r) == 1 and r[0].complete)
            return {
                "updates_delivered": done * n,
                "errors": errors,
                "cpu_s": cpu,
                "wall_s": wall,
                "peak_threads": threads.peak,
                "peak_rss_mb": peak_rss_mb(),
                "rss_before_mb": rss0,
                "complete": done,
                "conversations": c,
            }
        if kind == "growth":
            out: dict[str, Any] = {}
            for n in spec["sizes"]:
                cpus = []
                ok = True
                for _ in range(spec["repeats"]):
                    res = await conversations(client, [([prompt(n, 0.0, stamp=False, tag=f"g{n}")], [])])
                    cpus.append(res[0][0].cpu_s)
                    ok = ok and res[0][0].complete
                out[str(n)] = {"cpu_s": cpus, "complete": ok}
            return {"sizes": out}
        if kind == "turns":
            per_conv = []
            for i in range(spec["conversations"]):
                prompts = [prompt(spec["n"], 0.0, stamp=False, tag=f"t{i}.{k}") for k in range(spec["turns"])]
                res = await conversations(client, [(prompts, [])])
                turns = res[0]
                ok = len(turns) == spec["turns"] and all(t.complete for t in turns)
                ok = ok and f"turn:{spec['turns']}" in turns[-1].text_head
                per_conv.append({"cpu_s": [t.cpu_s for t in turns], "complete": ok})
            return {"conversations": per_conv}
        if kind == "attachment":
            runs = []
            size = os.path.getsize(spec["file"])
            for i in range(spec["runs"]):
                res = await conversations(client, [([prompt(spec["n"], spec["delay"], tag=f"a{i}")], [spec["file"]])])
                t = res[0][0]
                runs.append(
                    {
                        "wall_s": t.wall_s,
                        "cpu_s": t.cpu_s,
                        "complete": t.complete and f"file:{size}" in t.text_head,
                    }
                )
            return {"runs": runs, "bytes": size}
        if kind == "requests":
            log: list[str] = []
            install_request_counter(log)
            counts = []
            for label, turns in (("new conversation", 1), ("continued conversation", 2)):
                prompts = [prompt(5, tag=f"r{k}") for k in range(turns)]
                marks: list[int] = []

                def on_turn(k: int, rec: Recorder, cpu: float, wall: float, marks: list[int] = marks) -> None:
                    marks.append(len(log))

                start = len(log)
                if client.is_async:
                    await client.conversation(prompts, [], on_turn)
                else:
                    await asyncio.to_thread(client.conversation, prompts, [], on_turn)
                begin = start if turns == 1 else marks[-2]
                counts.append(
                    {"turn": label, "requests": len(log[begin : marks[-1]]), "detail": log[begin : marks[-1]]}
                )
            return {"turns": counts}
        raise SystemExit(f"unknown scenario {kind!r}")
    finally:
        if hasattr(client, "aclose"):
            await client.aclose()


def install_request_counter(log: list[str]) -> None:
    """Count every HTTP request of this process, sync or async, at httpx's `send`."""
    sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send

    def send(self: httpx.Client, request: httpx.Request, *a: Any, **k: Any) -> httpx.Response:
        log.append(f"{request.method} {request.url.path}")
        return sync_send(self, request, *a, **k)

    async def asend(self: httpx.AsyncClient, request: httpx.Request, *a: Any, **k: Any) -> httpx.Response:
        log.append(f"{request.method} {request.url.path}")
        return await async_send(self, request, *a, **k)

    httpx.Client.send = send  # type: ignore[method-assign]
    httpx.AsyncClient.send = asend  # type: ignore[method-assign]


def main() -> None:
    """Run each spec of the JSON list in turn (one event loop each) and print one RESULT line each."""
    specs = json.loads(sys.argv[1])
    for spec in specs if isinstance(specs, list) else [specs]:
        t0 = time.perf_counter()
        result = asyncio.run(scenario(spec))
        result["elapsed_s"] = time.perf_counter() - t0
        result.update(client=spec["client"], scenario=spec["scenario"], key=spec.get("key"))
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
