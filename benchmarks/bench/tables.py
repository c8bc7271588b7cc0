"""The targets' verdicts, the markdown tables, and the table's place in docs/benchmarks.md."""

from __future__ import annotations

from typing import Any

from .load_figure import load_rows, load_target
from .loop_lag import loop_lag_rows
from .ratios import fmt, g, ratio
from .settings import HERE, Settings

README = HERE.parent / "docs" / "benchmarks.md"  # the docs page that holds the table (it left the README)
START, END = "<!-- BENCHMARK TABLE -->", "<!-- /BENCHMARK TABLE -->"


def targets(f: dict[str, Any], s: Settings) -> list[dict[str, Any]]:
    """Each target of docs/benchmark-protocol.md (and issue 12's load target) with the measured value and a verdict."""
    top = str(max(s.levels))
    small, large = (str(n) for n in s.growth_sizes)
    lat, conc, gro, tur = f["latency"], f["concurrency"], f["growth"], f["turns"]
    rows: list[tuple[str, float, float]] = [  # (target, measured, upper limit)
        (
            "latency p50 vs raw SSE (Space's stack)",
            ratio(g(lat, "adapter", "p50_ms"), g(lat, "sse", "p50_ms")),
            1.2,
        ),
        (
            "latency p99 vs raw SSE (Space's stack)",
            ratio(g(lat, "adapter", "p99_ms"), g(lat, "sse", "p99_ms")),
            1.5,
        ),
    ]
    if "skipped" not in f["plain_latency"]:
        pl = f["plain_latency"]
        rows.append(
            (
                "bridge alone p50 vs raw SSE (current Gradio)",
                ratio(g(pl, "bridge", "p50_ms"), g(pl, "sse6", "p50_ms")),
                2.0,
            )
        )
    rows += [
        (
            f"{top} conversations: client CPU vs raw SSE",
            ratio(g(conc, "adapter", top, "cpu_s"), g(conc, "sse", top, "cpu_s")),
            1.25,
        ),
        (
            f"{top} conversations: wall vs raw SSE",
            ratio(g(conc, "adapter", top, "wall_s"), g(conc, "sse", top, "wall_s")),
            1.2,
        ),
        (
            f"{top} conversations: peak RSS vs gradio_client (result only)",
            ratio(g(conc, "adapter", top, "peak_rss_mb"), g(conc, "gcwait", top, "peak_rss_mb")),
            1.0,
        ),
        (
            f"growth: CPU {large} / {small} updates",
            g(gro, "adapter", "ratio"),
            12.0 * int(large) / int(small) / 10.0,
        ),
    ]
    extra_a, extra_s = g(tur, "adapter", "extra_cpu_s"), g(tur, "sse", "extra_cpu_s")
    allowance = max(extra_s, 0.0) + 0.1 * g(tur, "adapter", "turn_1_cpu_s")
    rows.append(
        (
            f"turn {s.turns} extra CPU over turn 1 (s), allowed: raw SSE's extra + 10% of turn 1",
            extra_a,
            allowance,
        )
    )
    rows.append(
        (
            "attachment: upload + stream vs raw httpx",
            ratio(g(f["attachment"], "adapter", "wall_s"), g(f["attachment"], "sse", "wall_s")),
            1.2,
        )
    )
    warm = f["requests"].get("adapter", {}).get("new conversation", {})
    config_reqs = sum(1 for d in warm.get("detail", []) if d.endswith(("/config", "/info")))
    rows.append(("warm turn: requests for config / API info", float(config_reqs) if warm else float("nan"), 0.0))
    imp = f["imports"]
    rows.append(
        (
            "import time vs gradio_client",
            ratio(imp["qwen_space_adapter"]["median_ms"], imp["gradio_client"]["median_ms"]),
            1.2,
        )
    )
    rows.append(load_target(f, s))
    out = []
    for name, value, limit in rows:
        met = value == value and value <= limit + 1e-12
        out.append({"target": name, "value": value, "limit": limit, "met": bool(met)})
    return out


def table(f: dict[str, Any], s: Settings) -> str:
    """The markdown table: raw SSE in absolute units, the others as ratios to it."""
    top = str(max(s.levels))
    small, large = (str(n) for n in s.growth_sizes)
    lat, conc = f["latency"], f["concurrency"]
    rows: list[tuple[str, str, str, str]] = []

    def add(name: str, base: float, gc: float, ad: float, unit: str) -> None:
        rows.append((name, fmt(base, unit), fmt(ratio(gc, base), "x"), fmt(ratio(ad, base), "x")))

    for q in ("p50", "p90", "p99"):
        add(
            f"latency {q}, {s.latency_n} updates at {s.latency_delay * 1000:.0f} ms (Space's stack)",
            g(lat, "sse", f"{q}_ms"),
            g(lat, "gc", f"{q}_ms"),
            g(lat, "adapter", f"{q}_ms"),
            " ms",
        )
    pl = f["plain_latency"]
    if "skipped" in pl:
        rows.append(("latency p50, current Gradio, bridge alone", "skipped", "", pl["skipped"]))
    else:
        for q in ("p50", "p99"):
            add(
                f"latency {q}, current Gradio generator (adapter column: bridge alone)",
                g(pl, "sse6", f"{q}_ms"),
                g(pl, "gc6", f"{q}_ms"),
                g(pl, "bridge", f"{q}_ms"),
                " ms",
            )
    for key, unit, label in (
        ("cpu_s", " s", "client CPU"),
        ("wall_s", " s", "wall"),
        ("peak_threads", "", "peak threads"),
        ("peak_rss_mb", " MB", "peak RSS"),
    ):
        base = g(conc, "sse", top, key)
        name = f"{top} conversations x {s.conc_n} updates: {label}"
        rows.append(
            (
                name,
                fmt(base, unit),
                fmt(ratio(g(conc, "gc", top, key), base), "x")
                + f" (result only: {fmt(ratio(g(conc, 'gcwait', top, key), base), 'x')})",
                fmt(ratio(g(conc, "adapter", top, key), base), "x"),
            )
        )
    rows += load_rows(f, s)
    gro = f["growth"]
    for n in (small, large):
        add(
            f"client CPU, one answer of {n} updates",
            g(gro, "sse", f"cpu_{n}_s"),
            g(gro, "gc", f"cpu_{n}_s"),
            g(gro, "adapter", f"cpu_{n}_s"),
            " s",
        )
    rows.append(
        (
            f"growth: CPU {large} / {small} updates",
            fmt(g(gro, "sse", "ratio"), "x"),
            fmt(g(gro, "gc", "ratio"), "x") + " (own)",
            fmt(g(gro, "adapter", "ratio"), "x") + " (own)",
        )
    )
    tur = f["turns"]
    add(
        "client CPU, turn 1",
        g(tur, "sse", "turn_1_cpu_s"),
        g(tur, "gc", "turn_1_cpu_s"),
        g(tur, "adapter", "turn_1_cpu_s"),
        " s",
    )
    add(
        f"client CPU, turn {s.turns}",
        g(tur, "sse", "turn_last_cpu_s"),
        g(tur, "gc", "turn_last_cpu_s"),
        g(tur, "adapter", "turn_last_cpu_s"),
        " s",
    )
    att = f["attachment"]
    mb = s.attach_bytes / 1e6
    add(
        f"{mb:g} MB attachment: upload + streamed answer, wall",
        g(att, "sse", "wall_s"),
        g(att, "gc", "wall_s"),
        g(att, "adapter", "wall_s"),
        " s",
    )
    req = f["requests"]

    def n(c: str, t: str) -> str:
        v = req.get(c, {}).get(t, {}).get("requests")
        return "n/a" if v is None else str(v)

    for t in ("new conversation", "continued conversation"):
        rows.append(
            (
                f"HTTP requests per warm turn, {t}",
                n("sse", t),
                n("gc", t) + " (count)",
                n("adapter", t) + " (count)",
            )
        )
    imp = f["imports"]
    rows.append(
        (
            "import time (`-X importtime`, cumulative)",
            "-",
            fmt(imp["gradio_client"]["median_ms"], " ms") + " (absolute)",
            fmt(imp["qwen_space_adapter"]["median_ms"], " ms")
            + " (absolute, "
            + fmt(ratio(imp["qwen_space_adapter"]["median_ms"], imp["gradio_client"]["median_ms"]), "x")
            + " of gradio_client)",
        )
    )
    if "loop_lag" in f:
        rows.extend(loop_lag_rows(f["loop_lag"]))
    head = "| figure | raw SSE | raw gradio_client | adapter |\n|---|---|---|---|\n"
    return head + "".join(f"| {a} | {b} | {c} | {d} |\n" for a, b, c, d in rows)


def targets_md(rows: list[dict[str, Any]]) -> str:
    head = "| target | measured | limit | met |\n|---|---|---|---|\n"
    return head + "".join(
        f"| {r['target']} | {fmt(r['value'])} | {fmt(r['limit'])} | {'yes' if r['met'] else '**no**'} |\n" for r in rows
    )


def update_readme(table_md: str) -> None:
    """Put the full run's table between the markers of docs/benchmarks.md, so its figures are this run's."""
    text = README.read_text()
    if START not in text:
        return
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1] if END in rest else rest
    README.write_text(f"{head}{START}\n{table_md.strip()}\n{END}{tail}")
