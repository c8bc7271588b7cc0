"""The load generator's figure: `qwen-space load` against its raw-SSE floor and the adapter alone, per round."""

from __future__ import annotations

from typing import Any

from .ratios import by, fmt, g, med, ratio
from .servers import Server
from .settings import Settings
from .workers import Progress, run_worker

LOAD_CLIENTS = (("sse", "load_floor"), ("adapter", "load_floor"), ("load", "load"))


def load_specs(s: Settings, spec: Any, r: int) -> list[tuple[str, dict[str, Any]]]:
    """Round `r` of the load generator's figure: raw SSE (the floor), the adapter alone, `qwen-space load`.

    The adapter alone (the `concurrency` scenario at the same size) tells the generator's own
    cost from the adapter's: the generator drives the adapter, so it cannot cost less.
    """
    size = {"conversations": s.load_users, "n": s.load_n, "delay": s.load_delay}
    return [
        (f"load round {r + 1}: {client}", {**spec(client, scenario, **size), "key": f"load{r}{client}"})
        for client, scenario in LOAD_CLIENTS
    ]


def load_rounds(s: Settings, spec: Any, server: Server, progress: Progress) -> list[dict[str, Any]]:
    """Every round on a fresh server, so that no round inherits the sessions and queue of the one before."""
    results: list[dict[str, Any]] = []
    for r in range(s.load_rounds):
        server.stop()
        url = server.start()
        for label, one in load_specs(s, spec, r):
            results += progress(label, run_worker([{**one, "url": url}], s.worker_timeout))
    return results


def load_figure(res: list[dict[str, Any]]) -> dict[str, Any]:
    """Client CPU per delivered update: `qwen-space load` against raw SSE, the median of per-round ratios.

    Rounds alternate the two clients, so a ratio within a round shares the machine's state of the
    moment; the median over rounds damps what still differs.
    """
    rounds: dict[str, dict[str, Any]] = {}
    for r in by(res, "load_floor") + by(res, "load"):
        key = str(r.get("key", "")).removeprefix("load").removesuffix(r["client"])  # the round
        entry = rounds.setdefault(key, {})
        if "error" in r:
            entry[r["client"]] = {"error": r["error"], "complete": False}
            continue
        delivered = r["updates_delivered"]
        entry[r["client"]] = {
            "cpu_s": r["cpu_s"],
            "wall_s": r["wall_s"],
            "updates_delivered": delivered,
            "cpu_per_update_us": r["cpu_s"] / delivered * 1e6 if delivered else float("nan"),
            "complete": r["complete"] == r["conversations"] and not r.get("errors"),
            "users": r["conversations"],
            "errors": r.get("errors", []),
        }

    def per_round(a: str, b: str) -> list[float]:
        return [ratio(g(e, a, "cpu_per_update_us"), g(e, b, "cpu_per_update_us")) for e in rounds.values()]

    ratios, adapter_ratios, own = per_round("load", "sse"), per_round("adapter", "sse"), per_round("load", "adapter")
    return {
        "rounds": rounds,
        **{
            f"{c}_cpu_per_update_us": med([g(e, c, "cpu_per_update_us") for e in rounds.values()])
            for c, _ in LOAD_CLIENTS
        },
        "ratio": med([x for x in ratios if x == x]),  # the generator through the adapter vs raw SSE
        "ratios": ratios,
        "adapter_ratio": med([x for x in adapter_ratios if x == x]),  # the adapter alone vs raw SSE
        "generator_over_adapter": med([x for x in own if x == x]),  # the generator's own cost
        "complete": bool(rounds)
        and all(e.get(c, {}).get("complete") for e in rounds.values() for c, _ in LOAD_CLIENTS),
    }


def load_target(f: dict[str, Any], s: Settings) -> tuple[str, float, float]:
    """The load generator is never the bottleneck: its CPU per delivered update vs raw SSE's."""
    return (
        f"load generator, {s.load_users} users: client CPU per delivered update vs raw SSE",
        f["load"]["ratio"],
        1.25,
    )


def load_rows(f: dict[str, Any], s: Settings) -> list[tuple[str, str, str, str]]:
    lo = f["load"]
    name = f"{s.load_users} users x {s.load_n} updates: client CPU per delivered update"
    return [
        (f"{name}, adapter alone", fmt(lo["sse_cpu_per_update_us"], " µs"), "-", fmt(lo["adapter_ratio"], "x")),
        (
            f"{name}, `qwen-space load` (adapter column: its generator through the adapter; "
            f"{fmt(lo['generator_over_adapter'], 'x')} of the adapter alone)",
            fmt(lo["sse_cpu_per_update_us"], " µs"),
            "-",
            fmt(lo["ratio"], "x"),
        ),
    ]
