"""Reports of a load run: a table for people, JSON and CSV for programs, a PNG for the README.

The PNG carries the very numbers it draws (the JSON report's `plot` object, in a PNG text chunk
named `qwen-space-load`), so a picture can always be traced back to its data, and a test can
prove that the picture and the JSON agree. matplotlib is imported only to draw (`bench` extra).

JSON (`"format": "qwen-space-load"`, `"version": 1`): `target`, `url`, `started_at`,
`interrupted`, `sweep` (`users`, `rate` or null), `shape`, `slo`, `levels[{level, shape, seconds,
interrupted, requests, ok, failed, interrupted_requests, errors{class: n}, error_rate,
throughput{requests_per_s, chars_per_s, deltas_per_s}, goodput{slo, requests_per_s, share},
metrics{figure: {unit, n, p50, p90, p99, mean, min, max, meaning}}, records[...]}]` and `plot`.
CSV: one row per request with its level (the `records` fields).
"""

from __future__ import annotations

import csv
import json
import math
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .records import FIGURES, LoadResult, Progress, RequestRecord

JSON_FORMAT = "qwen-space-load"
JSON_VERSION = 1
PNG_KEY = "qwen-space-load"
PLOTTED = ("queue_wait", "ttft", "e2e")
QUANTILES = ("p50", "p90", "p99")


def _secs(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    if value < 0.1:
        return f"{value * 1000:.1f} ms"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _num(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.1f}"


def plot_data(result: LoadResult) -> dict[str, Any]:
    """The numbers the PNG draws: percentiles of each latency figure, throughput and goodput, per level."""
    levels = [lv.summary() for lv in result.levels]
    series: dict[str, list[float | None]] = {}
    for fig in PLOTTED:
        for q in QUANTILES:
            series[f"{fig} {q}"] = [lv["metrics"][fig][q] for lv in levels]
    series["requests_per_s"] = [lv["throughput"]["requests_per_s"] for lv in levels]
    series["goodput_per_s"] = [lv["goodput"]["requests_per_s"] for lv in levels]
    series["error_rate"] = [lv["error_rate"] for lv in levels]
    return {
        "x": result.sweep or ("users" if result.config.shape.mode == "closed" else "rate"),
        "levels": [lv["level"] for lv in levels],
        "series": series,
    }


def to_dict(result: LoadResult) -> dict[str, Any]:
    """The JSON report (see the module docstring)."""
    shape = asdict(result.config.shape.check())
    return {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "target": result.config.target or result.config.url,
        "url": result.config.url,
        "started_at": result.started_at,
        "interrupted": result.interrupted,
        "sweep": result.sweep,
        "shape": shape,
        "slo": dict(result.config.slo.limits),
        "prompts": len(result.config.prompts),
        "levels": [
            {**lv.summary(), "shape": asdict(lv.shape), "records": [r.row() for r in lv.records]}
            for lv in result.levels
        ],
        "plot": plot_data(result),
    }


def write_json(result: LoadResult, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(to_dict(result), indent=1) + "\n", encoding="utf-8")
    return p


def write_csv(result: LoadResult, path: str | Path) -> Path:
    """One row per request, every level, in the order they were sent."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["level", *RequestRecord.ROW])
        writer.writeheader()
        for lv in result.levels:
            for r in lv.records:
                writer.writerow({"level": lv.level, **r.row()})
    return p


def render_table(result: LoadResult) -> str:
    """The human report: per level, each figure's percentiles, then throughput, errors and goodput."""
    lines: list[str] = []
    state = " (INTERRUPTED: partial report)" if result.interrupted else ""
    lines.append(f"Load on {result.config.target or result.config.url} ({result.config.url}){state}")
    for lv in result.levels:
        s = lv.summary()
        lines.append("")
        what = f"{lv.shape.users} user(s)" if lv.shape.mode == "closed" else f"{lv.shape.rate:g} request(s)/s"
        lines.append(
            f"{what}, {lv.shape.turns} turn(s) per conversation: {s['requests']} requests in {s['seconds']:.1f} s"
            f" ({s['ok']} ok, {s['failed']} failed, {s['interrupted_requests']} interrupted)"
        )
        lines.append(f"  {'figure':<11} {'n':>6} {'p50':>9} {'p90':>9} {'p99':>9} {'mean':>9}")
        for name, d in s["metrics"].items():
            fmt = _secs if FIGURES[name][0] == "s" else _num
            lines.append(
                f"  {name:<11} {d['n']:>6} {fmt(d['p50']):>9} {fmt(d['p90']):>9} {fmt(d['p99']):>9} {fmt(d['mean']):>9}"
            )
        t, g = s["throughput"], s["goodput"]
        lines.append(
            f"  throughput: {t['requests_per_s']:.2f} requests/s, {t['chars_per_s']:.0f} chars/s, "
            f"{t['deltas_per_s']:.1f} deltas/s"
        )
        share = "-" if g["share"] is None else f"{g['share'] * 100:.0f}%"
        lines.append(f"  goodput ({g['slo']}): {g['requests_per_s']:.2f} requests/s, {share} of finished requests")
        if s["errors"]:
            rate = s["error_rate"] * 100
            errs = ", ".join(f"{k} {v}" for k, v in s["errors"].items())
            lines.append(f"  errors: {rate:.1f}% ({errs})")
        else:
            lines.append("  errors: none")
    if len(result.levels) > 1:
        lines.append("")
        lines.append(sweep_table(result))
    return "\n".join(lines)


def sweep_table(result: LoadResult) -> str:
    """One markdown row per level: the README's sweep table."""
    x = result.sweep or "level"
    head = (
        f"| {x} | requests | errors | queue wait p50 / p99 | TTFT p50 / p99 | e2e p50 / p99 | requests/s | goodput/s |"
    )
    rows = [head, "|" + "---|" * 8]
    for lv in result.levels:
        s = lv.summary()
        m = s["metrics"]

        def pair(fig: str, m: dict[str, Any] = m) -> str:
            return f"{_secs(m[fig]['p50'])} / {_secs(m[fig]['p99'])}"

        rows.append(
            f"| {lv.level:g} | {s['requests']} | {s['failed']} | {pair('queue_wait')} | {pair('ttft')} | "
            f"{pair('e2e')} | {s['throughput']['requests_per_s']:.2f} | {s['goodput']['requests_per_s']:.2f} |"
        )
    return "\n".join(rows)


def write_png(result: LoadResult, path: str | Path) -> Path:
    """Latency percentiles (queue wait, TTFT, e2e) and throughput against users or rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = plot_data(result)
    xs = data["levels"]
    fig, axes = plt.subplots(1, len(PLOTTED) + 1, figsize=(4.2 * (len(PLOTTED) + 1), 3.8))
    for ax, name in zip(axes, PLOTTED, strict=False):
        for q, style in zip(QUANTILES, ("-o", "--s", ":^"), strict=True):
            ys = [math.nan if v is None else v for v in data["series"][f"{name} {q}"]]
            ax.plot(xs, ys, style, label=q)
        ax.set_title(FIGURES[name][1].split(" (")[0][:48], fontsize=8)
        ax.set_ylabel(f"{name} (s)")
    ax = axes[-1]
    ax.plot(xs, data["series"]["requests_per_s"], "-o", label="requests/s")
    ax.plot(xs, data["series"]["goodput_per_s"], "--s", label=f"goodput/s ({result.config.slo})")
    ax.set_title("throughput", fontsize=8)
    ax.set_ylabel("requests per second")
    doubling = len(xs) >= 3 and min(xs) > 0 and max(xs) / min(xs) >= 4  # 1,2,4,8,...: even steps on log2
    for ax in axes:
        if doubling:
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel("concurrent users" if data["x"] == "users" else "arrival rate (requests/s)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"qwen-space load: {result.config.target or result.config.url}", fontsize=9)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=100, metadata={PNG_KEY: json.dumps(data, sort_keys=True)})
    plt.close(fig)
    return p


def read_png_data(path: str | Path) -> dict[str, Any] | None:
    """The `plot` numbers stored in a PNG written by `write_png` (None when there are none)."""
    raw = Path(path).read_bytes()
    if raw[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    pos = 8
    while pos + 8 <= len(raw):
        length = int.from_bytes(raw[pos : pos + 4], "big")
        kind = raw[pos + 4 : pos + 8]
        body = raw[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            key, _, rest = body.partition(b"\0")
            if key.decode("latin-1") != PNG_KEY:
                continue
            if kind == b"tEXt":
                text = rest.decode("latin-1")
            elif kind == b"zTXt":
                text = zlib.decompress(rest[1:]).decode("latin-1")
            else:  # iTXt: compression flag, method, language\0, translated keyword\0, text
                flag = rest[0]
                _lang, _, rest2 = rest[2:].partition(b"\0")
                _tkey, _, text_bytes = rest2.partition(b"\0")
                text = (zlib.decompress(text_bytes) if flag else text_bytes).decode("utf-8")
            loaded: dict[str, Any] = json.loads(text)
            return loaded
    return None


class ProgressLine:
    """The live line: done / failed / in flight / p50 TTFT; redrawn on a terminal, one line a period on a pipe."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.width = 0
        self.level: float | None = None

    def __call__(self, p: Progress) -> None:
        if self.tty and self.width and p.level != self.level:
            self.stream.write("\n")  # keep the last line of the level before
            self.width = 0
        self.level = p.level
        text = (
            f"[{p.elapsed:6.1f} s] level {p.level:g}: done {p.done}  failed {p.failed}  "
            f"in flight {p.in_flight}  p50 TTFT {_secs(p.p50_ttft)}"
        )
        if self.tty:
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()


__all__ = [
    "JSON_FORMAT",
    "ProgressLine",
    "plot_data",
    "read_png_data",
    "render_table",
    "sweep_table",
    "to_dict",
    "write_csv",
    "write_json",
    "write_png",
]
