"""Every published figure, computed from the workers' raw results, and whether every stream was complete."""

from __future__ import annotations

from typing import Any

from .load_figure import load_figure
from .ratios import by, med, pct, ratio


def summarize_latency(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per client: median over runs of each run's p50/p90/p99, completeness, pooled samples."""
    out: dict[str, Any] = {}
    for r in results:
        c = out.setdefault(r["client"], {"runs": [], "complete": True, "samples_ms": [], "errors": []})
        if "error" in r:
            c["errors"].append(r["error"])
            c["complete"] = False
            continue
        for run in r["runs"]:
            lat = run["latencies_ms"]
            c["runs"].append({q: pct(lat, v) for q, v in (("p50", 50), ("p90", 90), ("p99", 99))})
            c["complete"] = c["complete"] and run["complete"]
            c["samples_ms"].extend(round(x, 3) for x in lat)
    for c in out.values():
        for q in ("p50", "p90", "p99"):
            c[q + "_ms"] = med([run[q] for run in c["runs"]])
    return out


def figures(data: dict[str, Any]) -> dict[str, Any]:
    """Every published figure, computed from the raw results."""
    res = data["results"]
    f: dict[str, Any] = {}
    f["latency"] = summarize_latency(by(res, "latency"))
    plain = by(res, "plain_latency")
    f["plain_latency"] = summarize_latency(plain) if plain else {"skipped": data["servers"]["plain_skipped"]}

    conc: dict[str, dict[str, Any]] = {}
    for r in by(res, "concurrency"):
        entry = conc.setdefault(r["client"], {})
        if "error" in r:
            entry["error"] = r["error"]
            continue
        entry[str(r["conversations"])] = {
            k: r[k] for k in ("cpu_s", "wall_s", "peak_threads", "peak_rss_mb", "complete")
        }
    f["concurrency"] = conc
    f["load"] = load_figure(res)

    growth: dict[str, Any] = {}
    for r in by(res, "growth"):
        if "error" in r:
            growth[r["client"]] = {"error": r["error"], "complete": False}
            continue
        sizes = r["sizes"]
        small, large = sorted(sizes, key=int)
        g = {f"cpu_{n}_s": med(sizes[n]["cpu_s"]) for n in (small, large)}
        g["ratio"] = ratio(g[f"cpu_{large}_s"], g[f"cpu_{small}_s"])
        g["complete"] = all(v["complete"] for v in sizes.values())
        growth[r["client"]] = g
    f["growth"] = growth

    turns: dict[str, Any] = {}
    for r in by(res, "turns"):
        if "error" in r:
            turns[r["client"]] = {"error": r["error"], "complete": False}
            continue
        convs = r["conversations"]
        first = med([c["cpu_s"][0] for c in convs])
        last = med([c["cpu_s"][-1] for c in convs])
        turns[r["client"]] = {
            "turn_1_cpu_s": first,
            "turn_last_cpu_s": last,
            "extra_cpu_s": last - first,
            "turns": len(convs[0]["cpu_s"]),
            "complete": all(c["complete"] for c in convs),
        }
    f["turns"] = turns

    attach: dict[str, Any] = {}
    for r in by(res, "attachment"):
        if "error" in r:
            attach[r["client"]] = {"error": r["error"], "complete": False}
            continue
        attach[r["client"]] = {
            "wall_s": med([x["wall_s"] for x in r["runs"]]),
            "cpu_s": med([x["cpu_s"] for x in r["runs"]]),
            "bytes": r["bytes"],
            "complete": all(x["complete"] for x in r["runs"]),
        }
    f["attachment"] = attach

    reqs: dict[str, Any] = {}
    for r in by(res, "requests"):
        if "error" in r:
            reqs[r["client"]] = {"error": r["error"]}
            continue
        reqs[r["client"]] = {t["turn"]: {"requests": t["requests"], "detail": t["detail"]} for t in r["turns"]}
    f["requests"] = reqs
    f["imports"] = data["imports"]
    return f


def completeness(f: dict[str, Any]) -> dict[str, bool]:
    """Whether every stream of every client was complete and correct, per figure."""
    ok: dict[str, bool] = {}
    for fig in ("latency", "plain_latency", "growth", "turns", "attachment"):
        for client, v in f[fig].items():
            if isinstance(v, dict):
                ok[f"{fig}:{client}"] = bool(v.get("complete")) and not v.get("errors")
    for client, levels in f["concurrency"].items():
        for level, v in levels.items():
            if level == "error":
                ok[f"concurrency:{client}"] = False
            else:
                ok[f"concurrency:{client}:{level}"] = v["complete"] == int(level)
    for client, v in f["requests"].items():
        ok[f"requests:{client}"] = "error" not in v
    ok["load"] = f["load"]["complete"]
    return ok
