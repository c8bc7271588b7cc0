"""The arithmetic every figure shares: percentiles, medians, ratios, lookups that tolerate a failed worker,
and the table's number format."""

from __future__ import annotations

import statistics
from typing import Any

from qwen_space_adapter.harness.metrics import percentile


def pct(values: list[float], q: float) -> float:
    """The harness's percentile (one definition for both), NaN for no values."""
    return percentile(values, q) if values else float("nan")


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def by(results: list[dict[str, Any]], scenario: str) -> list[dict[str, Any]]:
    return [r for r in results if r["scenario"] == scenario]


def ratio(a: float, b: float) -> float:
    return a / b if b and b == b and a == a else float("nan")


def g(d: dict[str, Any], *path: str) -> float:
    """A number deep in `d`, NaN when any step is missing (a failed worker)."""
    cur: Any = d
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return float("nan")
        cur = cur[p]
    return float(cur) if isinstance(cur, int | float) else float("nan")


def fmt(x: float, unit: str = "") -> str:
    """A number for the table: 3 significant digits below 1, 2 decimals up to 100, none above."""
    if x != x:
        return "n/a"
    if unit == "x":
        return f"{x:.2f}x"
    if abs(x) >= 100:
        return f"{x:.0f}{unit}"
    if abs(x) < 1:
        return f"{x:.3g}{unit}"
    return f"{x:.2f}{unit}"
