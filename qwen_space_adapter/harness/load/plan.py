"""How a load run sends: the load's shape, the SLO for goodput, the run's configuration, sweep levels."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ...errors import InvalidRequestError
from ...provider import Qwen_Qwen_2_5M
from .prompts import Prompt
from .records import LATENCY_FIGURES, OK, RequestRecord

DEFAULT_OPEN_DURATION = 30.0  # seconds an open loop runs when neither duration nor requests is given


@dataclass(frozen=True)
class Shape:
    """The load: closed loop of `users` (optionally ramped) or open loop at `rate`, and when to stop."""

    users: int | None = None
    rate: float | None = None
    ramp: float | None = None  # users added per second (closed loop)
    duration: float | None = None  # no new request after this many seconds
    requests: int | None = None  # no more than this many requests
    turns: int = 1

    def check(self) -> Shape:
        """Refuse impossible shapes before anything is sent; fill in the default stop."""
        if (self.users is None) == (self.rate is None):
            raise InvalidRequestError("Give either users (closed loop) or rate (open loop, requests/s).")
        if self.users is not None and self.users < 1:
            raise InvalidRequestError("users must be at least 1.")
        if self.rate is not None and not self.rate > 0:
            raise InvalidRequestError("rate must be a positive number of requests per second.")
        if self.ramp is not None and (self.rate is not None or not self.ramp > 0):
            raise InvalidRequestError("ramp (users added per second) is positive and only for a closed loop.")
        if self.turns < 1:
            raise InvalidRequestError("turns must be at least 1.")
        if self.duration is not None and not self.duration > 0:
            raise InvalidRequestError("duration must be a positive number of seconds.")
        if self.requests is not None and self.requests < 1:
            raise InvalidRequestError("requests must be at least 1.")
        if self.duration is None and self.requests is None:
            if self.users is not None:  # each user holds one conversation
                return replace(self, requests=self.users * self.turns)
            return replace(self, duration=DEFAULT_OPEN_DURATION)
        return self

    @property
    def mode(self) -> str:
        return "closed" if self.users is not None else "open"

    def at(self, level: float) -> Shape:
        """The same shape at another level (users, or rate for an open loop)."""
        if self.users is not None:
            if level != int(level) or level < 1:
                raise InvalidRequestError(f"sweep level {level:g} is not a whole number of users.")
            return replace(self, users=int(level))
        return replace(self, rate=float(level))

    @property
    def level(self) -> float:
        return float(self.users if self.users is not None else self.rate or 0.0)


@dataclass(frozen=True)
class SLO:
    """Limits a request must meet to count for goodput (seconds per figure)."""

    limits: tuple[tuple[str, float], ...] = (("ttft", 5.0), ("e2e", 60.0))

    @classmethod
    def parse(cls, text: str) -> SLO:
        """`ttft=5,e2e=60` (figures: queue_wait, thinking, ttft, e2e; seconds)."""
        limits = []
        for part in text.split(","):
            if not part.strip():
                continue
            name, _, value = part.partition("=")
            name = name.strip()
            if name not in LATENCY_FIGURES:
                raise InvalidRequestError(f"SLO figure {name!r} is not one of {', '.join(LATENCY_FIGURES)}.")
            try:
                limits.append((name, float(value)))
            except ValueError:
                raise InvalidRequestError(f"SLO {part.strip()!r}: the limit must be seconds, like ttft=5.") from None
        if not limits:
            raise InvalidRequestError("An SLO needs at least one limit, like ttft=5,e2e=60.")
        return cls(tuple(limits))

    def met(self, record: RequestRecord) -> bool:
        if record.status != OK:
            return False
        for name, limit in self.limits:
            value = getattr(record, name)
            if value is None or value > limit:
                return False
        return True

    def __str__(self) -> str:
        return ",".join(f"{k}={v:g}" for k, v in self.limits)


@dataclass
class LoadConfig:
    """Everything a load run needs; `url` is where the Space is (see `harness.cli.open_target`)."""

    url: str
    shape: Shape
    prompts: list[Prompt]
    target: str | None = None  # as the user named it (a Space id lets the ownership check run)
    slo: SLO = field(default_factory=SLO)
    timeout: float = 600.0  # seconds allowed per request (whole answer, first token included)
    retries: int = 0  # the adapter's retries: 0, so that every failure shows
    token: str | None = field(default=None, repr=False)
    i_own_this_space: bool = False
    seed: int = 0  # Poisson arrivals are reproducible
    keep_text: bool = False  # keep each answer's text on its record (costs memory)
    provider: type[Qwen_Qwen_2_5M] = Qwen_Qwen_2_5M
    model: str = "qwen-2.5-1m"


def parse_levels(text: str) -> list[float]:
    """`1,2,4,8` -> [1.0, 2.0, 4.0, 8.0]; refuses empty, non-numeric or non-positive levels."""
    try:
        levels = [float(x) for x in re.split(r"[,\s]+", text.strip()) if x]
    except ValueError:
        raise InvalidRequestError(f"--sweep {text!r}: give levels like 1,2,4,8.") from None
    if not levels or any(not x > 0 for x in levels):
        raise InvalidRequestError(f"--sweep {text!r}: give positive levels like 1,2,4,8.")
    return levels
