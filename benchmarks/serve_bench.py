"""The serving benchmark: `python benchmarks/serve_bench.py` (or its rows in `benchmarks/run.py`).

It measures what `qwen-space serve` adds to the adapter, each figure a ratio to the adapter called
directly in the same run (docs/benchmark-protocol.md: shared, noisy machines; only same-run ratios
hold), against the stamp app (the Space's stack; every update carries its server's `time.time()`):

- per-delta latency (update stamped on the Space -> delta in the client), p50 and p99, one stream
  at a time: the adapter in a client process vs an SSE client of the server (the server running
  the adapter in its own process);
- CPU per delivered delta at 200 concurrent streams: the adapter's process vs an SSE client's
  process plus the server's (the target's figure uses a lean SSE reader written for the benchmark,
  the least any client does, so that it measures the server; an httpx reader's is reported too);
- the server's event-loop lag at 200 streams: a task on its loop asks to sleep 5 ms and records
  how late it wakes, p99.

Each party is a process of its own (`--role server` / `--role client`), so each CPU time belongs
to one of them. Latency is measured with an httpx SSE reader (what OpenAI's SDKs use).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STAMP = re.compile(r"@(\d+\.\d+)")
LAG_INTERVAL = 0.005

FULL = {"latency_tokens": 200, "latency_delay": 0.01, "latency_runs": 5, "streams": 200, "tokens": 100, "delay": 0.02}
QUICK = {"latency_tokens": 20, "latency_delay": 0.01, "latency_runs": 1, "streams": 10, "tokens": 10, "delay": 0.01}
LIMITS = {"latency_p50": 1.1, "latency_p99": 1.3, "cpu_per_delta": 1.5, "loop_lag_p99_ms": 20.0}


def available() -> str | None:
    """Why the serving benchmark cannot run here (the serve extra is missing), or None."""
    import importlib.util

    return None if importlib.util.find_spec("uvicorn") else "uvicorn is not installed: pip install '.[serve]'"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (the harness's definition)."""
    from qwen_space_adapter.harness.metrics import percentile as pct

    return float(pct(values, q))


# --- the parties ---------------------------------------------------------------------------------


def role_server(space: str) -> None:
    """The server in a process of its own; stdin commands: `mark` (start a window), `report`, `quit`."""
    from qwen_space_adapter.serve import Context, ServeApp, SessionStore
    from qwen_space_adapter.serve.server import BackgroundServer

    offload = os.environ.get("SERVE_BENCH_OFFLOAD", "1") != "0"  # for experiments: the adapter on the server's loop
    srv = BackgroundServer(ServeApp(Context(store=SessionStore(), space=space), offload=offload)).start()
    lags: list[float] = []
    adapter_lags: list[float] = []
    recording = [False]

    async def monitor(samples: list[float]) -> None:
        # time.monotonic() is asyncio's loop.time(); uvloop's loop.time() counts whole milliseconds
        while True:
            t = time.monotonic()
            await asyncio.sleep(LAG_INTERVAL)
            if recording[0]:
                samples.append(max(0.0, time.monotonic() - t - LAG_INTERVAL))

    assert srv._loop is not None
    asyncio.run_coroutine_threadsafe(monitor(lags), srv._loop)
    if srv.app.adapter_loop is not None:  # the loop the turns run on (offload.py), for the record
        asyncio.run_coroutine_threadsafe(monitor(adapter_lags), srv.app.adapter_loop.loop)
    print(srv.url, flush=True)
    cpu0 = time.process_time()
    for line in sys.stdin:
        command = line.strip()
        if command == "mark":
            lags.clear()
            adapter_lags.clear()
            recording[0] = True
            cpu0 = time.process_time()
            print("ok", flush=True)
        elif command == "report":
            recording[0] = False
            print(
                json.dumps({"cpu": time.process_time() - cpu0, "lags": lags, "adapter_lags": adapter_lags}), flush=True
            )
        elif command == "quit":
            break
    srv.stop()


async def _adapter_stream(url: str, prompt: str, lat: list[float]) -> int:
    from qwen_space_adapter import Qwen_Qwen_2_5M

    deltas = 0
    async with Qwen_Qwen_2_5M.stream("qwen-2.5-1m", [{"role": "user", "content": prompt}], space=url) as s:
        async for item in s:
            if isinstance(item, str):
                now = time.time()
                deltas += 1
                lat.extend(now - float(m) for m in STAMP.findall(item))
    return deltas


async def _server_stream(http: Any, url: str, prompt: str, lat: list[float]) -> int:
    deltas = 0
    body = {"model": "qwen-2.5-1m", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    async with http.stream("POST", url + "/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:])["choices"]
            text = choices[0]["delta"].get("content") if choices else None
            if text:
                now = time.time()
                deltas += 1
                lat.extend(now - float(m) for m in STAMP.findall(text))
    return deltas


async def _raw_stream(url: str, prompt: str, lat: list[float]) -> int:
    """A lean SSE client: HTTP/1.1 over asyncio streams, chunked decoding and frame splitting by hand.

    Like run.py's raw SSE client, it exists only here: it is the least any client must do, so the
    figure it gives is the server's overhead, not an HTTP library's."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    body = json.dumps(
        {"model": "qwen-2.5-1m", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    ).encode()
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(
        f"POST {parts.path}/chat/completions HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    deltas, pending, done = 0, b"", False
    while not done:
        size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            break
        pending += chunk[:-2]
        *frames, pending = pending.split(b"\n\n")
        now = time.time()
        for frame in frames:
            if frame == b"data: [DONE]":
                done = True
                continue
            choices = json.loads(frame[6:])["choices"]
            text = choices[0]["delta"].get("content") if choices else None
            if text:
                deltas += 1
                lat.extend(now - float(m) for m in STAMP.findall(text))
    writer.close()
    await writer.wait_closed()
    return deltas


def role_client(via: str, url: str, streams: int, tokens: int, delay: float, runs: int) -> None:
    """`runs` rounds of `streams` concurrent answers, through the adapter or the server; prints JSON."""
    import httpx

    prompt = f"bench [[tokens={tokens}]] [[delay={delay}]]"
    lat: list[float] = []

    async def main() -> tuple[int, int]:
        limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
        async with httpx.AsyncClient(timeout=600, limits=limits) as http:
            deltas = updates = 0
            for _ in range(runs):
                if via == "adapter":
                    got = await asyncio.gather(*(_adapter_stream(url, prompt, lat) for _ in range(streams)))
                elif via == "raw":
                    got = await asyncio.gather(*(_raw_stream(url, prompt, lat) for _ in range(streams)))
                else:
                    got = await asyncio.gather(*(_server_stream(http, url, prompt, lat) for _ in range(streams)))
                deltas += sum(got)
                updates += streams * tokens
            return deltas, updates

    import qwen_space_adapter.turn  # noqa: F401  imports and the Space's config outside the window

    async def warm() -> None:
        async with httpx.AsyncClient(timeout=600) as http:
            if via == "adapter":
                await _adapter_stream(url, "warm [[tokens=2]]", [])
            elif via == "raw":
                await _raw_stream(url, "warm [[tokens=2]]", [])
            else:
                await _server_stream(http, url, "warm [[tokens=2]]", [])

    asyncio.run(warm())
    cpu0, wall0 = time.process_time(), time.monotonic()
    deltas, expected = asyncio.run(main())
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    print(
        json.dumps(
            {
                "via": via,
                "deltas": deltas,
                "stamps": len(lat),
                "expected": expected,
                "cpu": cpu,
                "wall": wall,
                "latencies": lat,
            }
        ),
        flush=True,
    )


# --- the run ------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _client(via: str, url: str, **kw: Any) -> dict[str, Any]:
    args = [sys.executable, __file__, "--role", "client", "--via", via, "--url", url]
    for key, value in kw.items():
        args += [f"--{key}", str(value)]
    out = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"client {via} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure(quick: bool = False) -> dict[str, Any]:
    """Start the stamp app and the server, run the clients, return the figures and their verdicts."""
    sys.path.insert(0, str(HERE))
    from run import Server  # the stamp app's launcher, shared with the main benchmark

    from qwen_space_adapter.replica.env import ensure_env

    s = QUICK if quick else FULL
    t0 = time.monotonic()
    space = Server(ensure_env())
    space.start()
    server = subprocess.Popen(
        [sys.executable, __file__, "--role", "server", "--space", space.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert server.stdout is not None and server.stdin is not None
        base = server.stdout.readline().strip()
        if not base.startswith("http"):
            raise RuntimeError("the server did not start")

        def command(text: str) -> str:
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write(text + "\n")
            server.stdin.flush()
            return server.stdout.readline()

        lat = {"streams": 1, "tokens": s["latency_tokens"], "delay": s["latency_delay"], "runs": 1}
        direct: list[float] = []
        served: list[float] = []
        _client("adapter", space.url, **lat)  # warm both paths (config cached, imports done)
        _client("server", base, **lat)
        for _ in range(int(s["latency_runs"])):  # interleaved, so drift hits both alike
            direct += _client("adapter", space.url, **lat)["latencies"]
            served += _client("server", base, **lat)["latencies"]
        load = {"streams": s["streams"], "tokens": s["tokens"], "delay": s["delay"], "runs": 1}
        adapter_load = _client("adapter", space.url, **load)
        command("mark")
        client_load = _client("raw", base, **load)  # the floor of an SSE client: the target's figure
        report = json.loads(command("report"))
        command("mark")
        httpx_load = _client("server", base, **load)  # an httpx SSE reader, as OpenAI's SDKs use: for the record
        httpx_report = json.loads(command("report"))
    finally:
        if server.stdin is not None:
            try:
                server.stdin.write("quit\n")
                server.stdin.flush()
            except OSError:
                pass
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        space.stop()
    direct_cpu = adapter_load["cpu"] / max(1, adapter_load["deltas"])
    served_cpu = (client_load["cpu"] + report["cpu"]) / max(1, client_load["deltas"])
    httpx_cpu = (httpx_load["cpu"] + httpx_report["cpu"]) / max(1, httpx_load["deltas"])
    f = {
        "latency_p50_direct_ms": percentile(direct, 50) * 1e3,
        "latency_p50_served_ms": percentile(served, 50) * 1e3,
        "latency_p99_direct_ms": percentile(direct, 99) * 1e3,
        "latency_p99_served_ms": percentile(served, 99) * 1e3,
        "cpu_per_delta_direct_us": direct_cpu * 1e6,
        "cpu_per_delta_served_us": served_cpu * 1e6,
        "cpu_per_delta_served_httpx_us": httpx_cpu * 1e6,
        "server_cpu_per_delta_us": report["cpu"] / max(1, client_load["deltas"]) * 1e6,
        "client_cpu_per_delta_raw_us": client_load["cpu"] / max(1, client_load["deltas"]) * 1e6,
        "client_cpu_per_delta_httpx_us": httpx_load["cpu"] / max(1, httpx_load["deltas"]) * 1e6,
        "loop_lag_p99_httpx_ms": percentile(httpx_report["lags"], 99) * 1e3 if httpx_report["lags"] else 0.0,
        "server_cpu_share": report["cpu"] / max(1e-9, client_load["cpu"] + report["cpu"]),
        "loop_lag_p99_ms": percentile(report["lags"], 99) * 1e3 if report["lags"] else float("nan"),
        "loop_lag_samples": len(report["lags"]),
        "adapter_loop_lag_p99_ms": percentile(report["adapter_lags"], 99) * 1e3 if report["adapter_lags"] else 0.0,
        "deltas_direct": adapter_load["deltas"],
        "deltas_served": client_load["deltas"],
        "stamps_expected": adapter_load["expected"],
        "stamps_direct": adapter_load["stamps"],
        "stamps_served": client_load["stamps"],
        "stamps_served_httpx": httpx_load["stamps"],
    }
    ratios = {
        "latency_p50": f["latency_p50_served_ms"] / f["latency_p50_direct_ms"],
        "latency_p99": f["latency_p99_served_ms"] / f["latency_p99_direct_ms"],
        "cpu_per_delta": f["cpu_per_delta_served_us"] / f["cpu_per_delta_direct_us"],
        "loop_lag_p99_ms": f["loop_lag_p99_ms"],
    }
    complete = f["stamps_served"] == f["stamps_served_httpx"] == f["stamps_expected"] == f["stamps_direct"]
    return {
        "settings": s,
        "quick": quick,
        "figures": f,
        "ratios": ratios,
        "complete": complete,
        "met": {k: ratios[k] <= LIMITS[k] for k in LIMITS},
        "elapsed_s": time.monotonic() - t0,
    }


ROWS = (
    ("latency_p50", "per-delta latency p50 through the server vs the adapter", "latency_p50_direct_ms", "ms"),
    ("latency_p99", "per-delta latency p99 through the server vs the adapter", "latency_p99_direct_ms", "ms"),
    (
        "cpu_per_delta",
        "client (lean SSE reader) + server CPU per delivered delta at {streams} streams vs the adapter",
        "cpu_per_delta_direct_us",
        "µs",
    ),
    ("loop_lag_p99_ms", "server event-loop lag p99 at {streams} streams (ms, absolute)", None, ""),
)


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The benchmark's rows: figure, the adapter's own value, the ratio (or absolute), the limit, met."""
    out = []
    for key, label, base, unit in ROWS:
        out.append(
            {
                "figure": label.format(**result["settings"]),
                "adapter": f"{result['figures'][base]:.3g} {unit}" if base else "-",
                "measured": round(result["ratios"][key], 3),
                "limit": LIMITS[key],
                "met": bool(result["met"][key]),
            }
        )
    return out


def table_md(result: dict[str, Any]) -> str:
    lines = ["| serving target | adapter alone | measured | limit | met |", "|---|---|---|---|---|"]
    for r in rows(result):
        lines.append(
            f"| {r['figure']} | {r['adapter']} | {r['measured']} | {r['limit']} | {'yes' if r['met'] else 'no'} |"
        )
    f = result["figures"]
    lines.append(
        f"| (for the record) the same with an httpx SSE client | {f['cpu_per_delta_direct_us']:.3g} µs | "
        f"{f['cpu_per_delta_served_httpx_us'] / f['cpu_per_delta_direct_us']:.3f} | - | - |"
    )
    lines.append(
        f"| (for the record) server event-loop lag p99, httpx clients (ms) | - | "
        f"{f['loop_lag_p99_httpx_ms']:.3f} | - | - |"
    )
    lines.append("")
    lines.append(
        f"CPU per delivered delta: server {f['server_cpu_per_delta_us']:.0f} µs, lean client "
        f"{f['client_cpu_per_delta_raw_us']:.0f} µs, httpx client "
        f"{f['client_cpu_per_delta_httpx_us']:.0f} µs, "
        f"the adapter alone {f['cpu_per_delta_direct_us']:.0f} µs."
    )
    lines.append(
        f"Serving run: {f['deltas_served']} deltas through the server ({f['stamps_served']} of "
        f"{f['stamps_expected']} updates), server's share of the CPU {f['server_cpu_share']:.0%}, "
        f"{f['loop_lag_samples']} loop-lag samples (the adapter's own loop: p99 "
        f"{f['adapter_loop_lag_p99_ms']:.0f} ms); {result['elapsed_s']:.0f} s"
        + (" (quick setting: indicative only)" if result["quick"] else "")
        + "."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small setting (seconds; indicative only)")
    ap.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    ap.add_argument("--role", choices=("server", "client"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--space", default="", help=argparse.SUPPRESS)
    ap.add_argument("--via", choices=("adapter", "server", "raw"), default="adapter", help=argparse.SUPPRESS)
    ap.add_argument("--url", default="", help=argparse.SUPPRESS)
    for name in ("streams", "tokens", "runs"):
        ap.add_argument(f"--{name}", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--delay", type=float, default=0.01, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role == "server":
        role_server(args.space)
        return 0
    if args.role == "client":
        role_client(args.via, args.url, args.streams, args.tokens, args.delay, args.runs)
        return 0
    reason = available()
    if reason:
        print(f"serve_bench: {reason}", file=sys.stderr)
        return 2
    result = measure(quick=args.quick)
    if args.out:
        args.out.write_text(json.dumps({k: v for k, v in result.items()}, indent=1, default=str))
    print(table_md(result))
    if not result["complete"]:
        print("INCOMPLETE STREAMS: some updates never reached a client")
    return 0 if result["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
