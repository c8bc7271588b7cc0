"""Loop lag: how long the caller's event loop waits for its turn while the adapter answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from qwen_space_adapter.harness.metrics import percentile

from .ratios import fmt
from .settings import HERE, RUN

LOOP_LAG_LEVELS = (1, 100, 1000)
LOOP_LAG_QUICK_LEVELS = (1, 20)
LOOP_LAG_TICK = 0.001  # the heartbeat's sleep; lag is how much later than asked it wakes
LOOP_LAG_TARGET = {"conversations": 100, "p99_ms": 20.0, "max_ms": 100.0}


async def _loop_lag_once(url: str, conversations: int) -> dict[str, Any]:
    """Run `conversations` new conversations at once on this loop, with a heartbeat task that
    sleeps `LOOP_LAG_TICK` over and over and records how late it wakes: the loop's lag."""
    import asyncio

    from qwen_space_adapter import Qwen_Qwen_2_5M

    loop = asyncio.get_running_loop()
    lags: list[tuple[float, float]] = []  # (when, lag)
    done = asyncio.Event()

    async def heartbeat() -> None:
        while not done.is_set():
            start = loop.time()
            await asyncio.sleep(LOOP_LAG_TICK)
            lags.append((start, max(0.0, loop.time() - start - LOOP_LAG_TICK)))

    # The floor: the same heartbeat on the idle loop of this process (the machine's own noise).
    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(1.0)
    done.set()
    await beat
    idle = [lag for _, lag in lags]
    lags.clear()
    done.clear()

    async def one(i: int) -> bool:
        text = ""
        messages = [{"role": "user", "content": f"Conversation {i}: say hello."}]
        async for item in Qwen_Qwen_2_5M.create_async_generator("qwen-2.5-1m", messages, space=url, timeout=600):
            if isinstance(item, str):
                text += item
        return bool(text)

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.05)  # a few beats of the idle loop first
    t0 = loop.time()
    started = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(conversations)), return_exceptions=True)
    wall = time.perf_counter() - started
    done.set()
    await beat
    worst_at, worst = max(lags, key=lambda x: x[1])
    values = [lag for _, lag in lags]
    ok = sum(1 for r in results if r is True)
    errors = sorted({type(r).__name__ for r in results if isinstance(r, BaseException)})
    return {
        "conversations": conversations,
        "answered": ok,
        "errors": errors,
        "wall_s": wall,
        "beats": len(values),
        "p50_ms": 1000 * percentile(values, 50),
        "p99_ms": 1000 * percentile(values, 99),
        "max_ms": 1000 * worst,
        "max_at_s": worst_at - t0,  # when the worst stall began, from the first call
        "idle_p99_ms": 1000 * percentile(idle, 99),
        "idle_max_ms": 1000 * max(idle),
    }


def loop_lag_worker(url: str, conversations: int) -> None:
    """`--loop-lag-worker URL N`: one level in a process of its own (its first call included:
    imports and the config fetch), printed as JSON."""
    import asyncio

    print(json.dumps(asyncio.run(_loop_lag_once(url, conversations))))


def measure_loop_lag(levels: tuple[int, ...]) -> dict[str, Any]:
    """Loop lag at each level against a replica (hand-made UI, short answers), one fresh
    process per level."""
    from qwen_space_adapter.replica import Replica

    replica = Replica(token_delay=0.01, prefill_base=0.02)
    replica.start()
    rows = []
    try:
        for n in levels:
            out = subprocess.run(
                [sys.executable, str(RUN), "--loop-lag-worker", str(replica.url), str(n)],
                capture_output=True,
                text=True,
                timeout=1800,
                env={
                    **os.environ,
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])),
                },
            )
            if out.returncode != 0:
                rows.append({"conversations": n, "error": out.stderr[-2000:]})
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        replica.close()
    return {"levels": rows, "tick_s": LOOP_LAG_TICK, "target": LOOP_LAG_TARGET}


def loop_lag_rows(lag: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows for the README's table: the adapter's own loop lag (no baseline to divide by)."""
    rows = []
    for r in lag.get("levels", []):
        n = r["conversations"]
        if "p99_ms" not in r:
            rows.append((f"event-loop lag, {n} new conversations at once", "-", "-", "failed"))
            continue
        answered = "" if r["answered"] == n else f"; {r['answered']}/{n} answered"
        rows.append(
            (
                f"event-loop lag p99 / max, {n} new conversations at once (heartbeat task, first call of a "
                "process; raw SSE column: the same loop idle)",
                f"{fmt(r['idle_p99_ms'], ' ms')} / {fmt(r['idle_max_ms'], ' ms')}",
                "-",
                f"{fmt(r['p99_ms'], ' ms')} / {fmt(r['max_ms'], ' ms')} (absolute{answered})",
            )
        )
    return rows


def loop_lag_targets(lag: dict[str, Any]) -> list[dict[str, Any]]:
    t = lag.get("target", LOOP_LAG_TARGET)
    row = next((r for r in lag.get("levels", []) if r.get("conversations") == t["conversations"]), None)
    out = []
    for key, limit in (("p99_ms", t["p99_ms"]), ("max_ms", t["max_ms"])):
        value = float(row[key]) if row and key in row else float("nan")
        out.append(
            {
                "target": f"event-loop lag {key[:-3]} at {t['conversations']} conversations (ms)",
                "value": value,
                "limit": limit,
                "met": bool(value == value and value <= limit),
            }
        )
    return out
