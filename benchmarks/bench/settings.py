"""The sizes of every measurement (full and quick), the clients compared, and where things are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent  # benchmarks/
RUN = HERE / "run.py"


@dataclass(frozen=True)
class Settings:
    """Sizes of every measurement; `quick` keeps each figure but shrinks it to seconds."""

    quick: bool
    latency_n: int
    latency_delay: float
    latency_rounds: int
    latency_runs: int
    levels: tuple[int, ...]
    conc_n: int
    conc_delay: float
    growth_sizes: tuple[int, int]
    growth_repeats: int
    turns: int
    turn_n: int
    turn_convs: int
    attach_bytes: int
    attach_n: int
    attach_runs: int
    import_runs: int
    worker_timeout: float
    load_users: int  # the load generator's figure: users at once, one answer each
    load_n: int  # updates per answer
    load_delay: float
    load_rounds: int  # load generator and its raw-SSE floor, alternating


FULL = Settings(
    quick=False,
    latency_n=200,
    latency_delay=0.01,
    latency_rounds=2,
    latency_runs=3,
    levels=(1, 25, 100),
    conc_n=200,
    conc_delay=0.01,
    growth_sizes=(1000, 10000),
    growth_repeats=3,
    turns=20,
    turn_n=200,
    turn_convs=2,
    attach_bytes=4_000_000,
    attach_n=50,
    attach_runs=3,
    import_runs=7,
    worker_timeout=300.0,
    load_users=200,
    load_n=200,
    load_delay=0.01,
    load_rounds=2,
)
QUICK = Settings(
    quick=True,
    latency_n=30,
    latency_delay=0.01,
    latency_rounds=1,
    latency_runs=1,
    levels=(5,),
    conc_n=20,
    conc_delay=0.01,
    growth_sizes=(100, 1000),
    growth_repeats=1,
    turns=3,
    turn_n=20,
    turn_convs=1,
    attach_bytes=256_000,
    attach_n=10,
    attach_runs=1,
    import_runs=3,
    worker_timeout=120.0,
    load_users=5,
    load_n=20,
    load_delay=0.01,
    load_rounds=1,
)

QUICK_NOTE = "quick setting: clients ran side by side, timings indicative only"
CLIENTS = ("sse", "gc", "adapter")
LABELS = {
    "sse": "raw SSE",
    "gc": "raw gradio_client",
    "gcwait": "gradio_client (result only)",
    "adapter": "adapter",
    "sse6": "raw SSE",
    "gc6": "raw gradio_client",
    "bridge": "adapter bridge",
    "load": "qwen-space load (through the adapter)",
}
