"""Timing of answers as the caller sees them: queue wait, first token, gaps, tokens per second.

Every figure is measured at the consumer of `create_async_generator`, from the moment of the
call, because that is the latency a user of the adapter lives with (network, Space, adapter).
A "token" here is one `str` delta: the smallest unit the caller receives (the Space may send
several model tokens per update, and the adapter may merge updates that arrive together).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Distribution:
    """Summary of one metric over all measured answers."""

    unit: str
    n: int
    p50: float | None
    p90: float | None
    p99: float | None
    mean: float | None
    min: float | None
    max: float | None

    @classmethod
    def of(cls, values: Sequence[float], unit: str) -> Distribution:
        if not values:
            return cls(unit, 0, None, None, None, None, None, None)
        p50, p90, p99 = (percentile(values, q) for q in PERCENTILES)
        return cls(unit, len(values), p50, p90, p99, sum(values) / len(values), min(values), max(values))

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class AnswerTiming:
    """When each item of one answer arrived, in seconds since the call that asked for it."""

    started: float | None  # the Space started answering: first Reasoning or delta
    deltas: tuple[float, ...]  # arrival of each `str` delta

    @property
    def ttft(self) -> float | None:
        return self.deltas[0] if self.deltas else None

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.deltas, self.deltas[1:], strict=False)]

    @property
    def tokens_per_second(self) -> float | None:
        if len(self.deltas) < 2 or self.deltas[-1] <= self.deltas[0]:
            return None
        return (len(self.deltas) - 1) / (self.deltas[-1] - self.deltas[0])


METRICS: dict[str, str] = {
    "queue_wait": "call -> the Space starts answering (first Reasoning or delta): add_text plus the queue",
    "time_to_first_token": "call -> first text delta (includes the Space's prefill)",
    "inter_token_gap": "between consecutive text deltas, all answers pooled",
    "tokens_per_second": "text deltas per second of streaming, one value per answer",
}


def summarize(timings: Iterable[AnswerTiming]) -> dict[str, Distribution]:
    """The four distributions over the given answers (empty distributions when nothing streamed)."""
    timings = list(timings)
    waits = [t.started for t in timings if t.started is not None]
    ttfts = [t.ttft for t in timings if t.ttft is not None]
    gaps = [g for t in timings for g in t.gaps]
    rates = [r for t in timings if (r := t.tokens_per_second) is not None]
    return {
        "queue_wait": Distribution.of(waits, "s"),
        "time_to_first_token": Distribution.of(ttfts, "s"),
        "inter_token_gap": Distribution.of(gaps, "s"),
        "tokens_per_second": Distribution.of(rates, "1/s"),
    }


__all__ = ["METRICS", "PERCENTILES", "AnswerTiming", "Distribution", "percentile", "summarize"]
