"""What one request did, and the figures over a level: the records a load run returns."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..metrics import Distribution

if TYPE_CHECKING:
    from .plan import SLO, LoadConfig, Shape

OK, ERROR, INTERRUPTED = "ok", "error", "interrupted"

FIGURES: dict[str, tuple[str, str]] = {
    "queue_wait": ("s", "call -> the Space starts the job (its thinking placeholder or first delta): add_text + queue"),
    "thinking": ("s", "thinking placeholder -> first text delta: the Space's prefill"),
    "ttft": ("s", "call -> first text delta (time to first token)"),
    "gap": ("s", "between consecutive text deltas of one answer, all answers pooled"),
    "e2e": ("s", "call -> end of the answer (end to end)"),
    "deltas": ("", "text deltas per answer"),
    "chars": ("", "answer characters per answer"),
}
LATENCY_FIGURES = ("queue_wait", "thinking", "ttft", "e2e")


@dataclass
class RequestRecord:
    """One request's timeline in seconds since its call, and what became of it."""

    index: int
    user: int
    conversation: int
    turn: int
    submitted: float  # seconds since the level started
    status: str = INTERRUPTED  # until it ends: a request cut short by a stop stays "interrupted"
    error: str | None = None  # the error class
    message: str | None = None
    started: float | None = None  # the Space started the job: placeholder or first delta
    placeholder: float | None = None
    first_delta: float | None = None
    end: float | None = None  # the answer ended, failed or was interrupted
    deltas: int = 0
    chars: int = 0
    rewrites: int = 0
    queue_events: int = 0
    max_position: int | None = None
    gaps: list[float] = field(default_factory=list, repr=False)
    text: str | None = field(default=None, repr=False)

    @property
    def queue_wait(self) -> float | None:
        return self.started

    @property
    def thinking(self) -> float | None:
        if self.placeholder is None or self.first_delta is None:
            return None
        return self.first_delta - self.placeholder

    @property
    def ttft(self) -> float | None:
        return self.first_delta

    @property
    def e2e(self) -> float | None:
        return self.end if self.status == OK else None

    ROW = (
        "index",
        "user",
        "conversation",
        "turn",
        "submitted",
        "status",
        "error",
        "queue_wait",
        "thinking",
        "ttft",
        "e2e",
        "end",
        "deltas",
        "chars",
        "gap_mean",
        "gap_max",
        "queue_events",
        "max_position",
        "rewrites",
        "message",
    )

    def row(self) -> dict[str, Any]:
        """Flat figures for CSV and JSON (seconds, rounded to microseconds)."""
        out: dict[str, Any] = {}
        for key in self.ROW:
            if key == "gap_mean":
                value: Any = sum(self.gaps) / len(self.gaps) if self.gaps else None
            elif key == "gap_max":
                value = max(self.gaps) if self.gaps else None
            else:
                value = getattr(self, key)
            out[key] = round(value, 6) if isinstance(value, float) else value
        return out


@dataclass
class LevelResult:
    """One level of load (one run of a shape): every request, and the figures over them."""

    shape: Shape
    slo: SLO
    records: list[RequestRecord]
    seconds: float
    interrupted: bool = False

    @property
    def level(self) -> float:
        return self.shape.level

    def by_status(self, status: str) -> list[RequestRecord]:
        return [r for r in self.records if r.status == status]

    def metrics(self) -> dict[str, Distribution]:
        """Each figure's distribution over the answered requests (failed ones are counted apart)."""
        ok = self.by_status(OK)
        out = {}
        for name, (unit, _) in FIGURES.items():
            if name == "gap":
                values = [g for r in ok for g in r.gaps]
            else:
                values = [float(v) for r in ok if (v := getattr(r, name)) is not None]
            out[name] = Distribution.of(values, unit)
        return out

    def errors(self) -> dict[str, int]:
        return dict(Counter(r.error or "unknown" for r in self.by_status(ERROR)).most_common())

    def summary(self) -> dict[str, Any]:
        """The level's figures as plain data (the JSON report's per-level part, records aside)."""
        ok, failed = self.by_status(OK), self.by_status(ERROR)
        finished = len(ok) + len(failed)
        secs = self.seconds or float("nan")
        good = sum(1 for r in ok if self.slo.met(r))
        return {
            "level": self.level,
            "seconds": round(self.seconds, 6),
            "interrupted": self.interrupted,
            "requests": len(self.records),
            "ok": len(ok),
            "failed": len(failed),
            "interrupted_requests": len(self.by_status(INTERRUPTED)),
            "errors": self.errors(),
            "error_rate": round(len(failed) / finished, 6) if finished else None,
            "throughput": {
                "requests_per_s": round(len(ok) / secs, 6),
                "chars_per_s": round(sum(r.chars for r in ok) / secs, 6),
                "deltas_per_s": round(sum(r.deltas for r in ok) / secs, 6),
            },
            "goodput": {
                "slo": str(self.slo),
                "requests_per_s": round(good / secs, 6),
                "share": round(good / finished, 6) if finished else None,
            },
            "metrics": {k: {**v.as_dict(), "meaning": FIGURES[k][1]} for k, v in self.metrics().items()},
        }


@dataclass
class LoadResult:
    """A whole run: one level, or several for a sweep."""

    config: LoadConfig
    levels: list[LevelResult]
    started_at: str
    interrupted: bool = False
    sweep: str | None = None  # "users" or "rate" when several levels were asked for


@dataclass
class Progress:
    """A snapshot for the live progress line."""

    level: float
    elapsed: float
    done: int
    failed: int
    in_flight: int
    p50_ttft: float | None
