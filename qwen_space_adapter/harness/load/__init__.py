"""`qwen-space load`: how many users a Space holds, and at what latency, measured like a serving benchmark.

Serving benchmarks (vLLM's `benchmark_serving`, llmperf, Locust) give load shapes, per-request
latencies and goodput, but none speaks a Gradio Space's queue, and none tells queue wait from
prefill from decode. This module drives a target through the adapter's public API
(`create_async_generator`), the way users do, and times every item of every answer as it
arrives, so it can:

- **shape the load**: `users` closed loop (each user starts its next conversation when the last
  one ends, optionally added `ramp` users per second), or `rate` open loop (Poisson arrivals of
  conversations, requests per second); until `duration` seconds passed or `requests` were sent;
  conversations of `turns` turns, so the Space's session history grows;
- **time each request** (seconds since the call): queue wait (until the Space starts the job:
  its thinking placeholder or first delta), thinking (placeholder to first delta: the prefill),
  time to first token, the gaps between deltas, end to end; deltas and characters; the error
  class when it failed (every failure is kept and classed, never dropped);
- **report** p50/p90/p99/mean of each figure over the answered requests, throughput, error rate
  by class, and goodput against an SLO (`ttft=5,e2e=60`), for one level or a sweep of levels.

Timestamps are taken the moment an item arrives, before anything else is done with it, and the
per-delta work is a few additions: the generator must never be the bottleneck (the benchmark
checks it at 200 users against a hand-written SSE client, see `benchmarks/`).

A Space on the internet is shared. Against a target not on this machine, `check_courtesy`
refuses more than 2 concurrent users (and any open loop) unless the caller says it owns the
Space, checks that claim when a token and `huggingface_hub` are at hand, and prints what it is
about to send.

The parts, one module each (every public name is importable from this package):

- `prompts`: what to send (`Prompt`, `load_prompts`, `generated_prompts`, `make_document`);
- `plan`: how to send it (`Shape`, `SLO`, `LoadConfig`, `parse_levels`);
- `records`: what one request did (`RequestRecord`) and the figures over a level (`LevelResult`,
  `LoadResult`, `Progress`, `FIGURES`);
- `courtesy`: the refusal of heavy load on a shared Space and the plan said before a run
  (`check_courtesy`, `describe_plan`, `is_local`, `ownership`);
- `runner`: running it (`LevelRun`, `load_async`, `run_load`, `poisson_gaps`);
- `report`: the table, JSON, CSV and PNG reports (`render_table`, `to_dict`, `write_json`,
  `write_csv`, `write_png`, `read_png_data`, `ProgressLine`).
"""

from __future__ import annotations

from .courtesy import MAX_SHARED_USERS, check_courtesy, describe_plan, is_local, ownership, space_id_of, upload_list
from .plan import DEFAULT_OPEN_DURATION, SLO, LoadConfig, Shape, parse_levels
from .prompts import FILLER, Prompt, generated_prompts, load_prompts, make_document
from .records import (
    ERROR,
    FIGURES,
    INTERRUPTED,
    LATENCY_FIGURES,
    OK,
    LevelResult,
    LoadResult,
    Progress,
    RequestRecord,
)
from .runner import LevelRun, load_async, poisson_gaps, run_load

__all__ = [
    "DEFAULT_OPEN_DURATION",
    "ERROR",
    "FIGURES",
    "FILLER",
    "INTERRUPTED",
    "LATENCY_FIGURES",
    "MAX_SHARED_USERS",
    "OK",
    "SLO",
    "LevelResult",
    "LevelRun",
    "LoadConfig",
    "LoadResult",
    "Progress",
    "Prompt",
    "RequestRecord",
    "Shape",
    "check_courtesy",
    "describe_plan",
    "generated_prompts",
    "is_local",
    "load_async",
    "load_prompts",
    "make_document",
    "ownership",
    "parse_levels",
    "poisson_gaps",
    "run_load",
    "space_id_of",
    "upload_list",
]
