"""The run: start the servers, run every worker, and return the raw results grouped by figure."""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .load_figure import load_rounds, load_specs
from .servers import Server, current_gradio, start_async
from .settings import CLIENTS, Settings
from .workers import Progress, import_costs, make_attachment, run_worker


def measure(s: Settings, only_load: bool = False) -> dict[str, Any]:
    """Start the servers, run every worker, and return the raw results grouped by figure."""
    from qwen_space_adapter.replica.env import ensure_env

    data: dict[str, Any] = {
        "settings": asdict(s),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": os.cpu_count(),
    }
    t_start = time.monotonic()
    g6_reason = "not measured by --load" if only_load else current_gradio(allow_build=not s.quick)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="qwen-bench-") as tmp:
        space = Server(ensure_env())
        plain = None if g6_reason else Server(None, "--plain")
        stack.callback(space.stop)
        if plain is not None:
            stack.callback(plain.stop)
            plain_start = start_async(plain)
        space.start()
        plain_url = ""
        if plain is not None:
            try:
                plain_url = plain_start()
            except RuntimeError as e:
                g6_reason = f"current-Gradio app did not start: {e}"
                plain = None
        url = space.url
        data["servers"] = {"space": url, "plain": plain_url, "plain_skipped": g6_reason or None}
        doc = Path(tmp) / "document.txt"
        make_attachment(doc, s.attach_bytes)

        def spec(client: str, scenario: str, **kw: Any) -> dict[str, Any]:
            return {
                "client": client,
                "scenario": scenario,
                "url": url,
                "key": f"{client}:{scenario}:{kw}",
                **kw,
            }

        lat = {"n": s.latency_n, "delay": s.latency_delay, "runs": s.latency_runs}
        misc = [
            ("growth", {"sizes": list(s.growth_sizes), "repeats": s.growth_repeats}),
            ("turns", {"conversations": s.turn_convs, "turns": s.turns, "n": s.turn_n}),
            ("attachment", {"runs": s.attach_runs, "n": s.attach_n, "delay": 0.005, "file": str(doc)}),
            ("requests", {}),  # last: it patches httpx in its process
        ]
        results: list[dict[str, Any]] = []
        progress = Progress(t_start)
        if only_load:
            results += load_rounds(s, spec, space, progress)
        elif s.quick:
            # One process per client, every scenario in it: a few seconds instead of a minute.
            # The workers run side by side: quick checks that everything works, its timings are
            # indicative only (the full run measures one client at a time).
            level = s.levels[0]
            jobs: list[tuple[str, list[dict[str, Any]]]] = []
            for c in CLIENTS:
                specs = [
                    spec(c, "concurrency", conversations=level, n=s.conc_n, delay=s.conc_delay),
                    spec(c, "latency", **lat),
                ] + [spec(c, k, **kw) for k, kw in misc]
                if plain is not None:
                    pc = {"sse": "sse6", "gc": "gc6", "adapter": "bridge"}[c]
                    specs.append({**spec(pc, "plain_latency", **lat), "url": plain_url})
                jobs.append((f"{c}: all scenarios", specs))
            jobs.append(("load generator and its floor", [one for _, one in load_specs(s, spec, 0)]))
            jobs.append(
                (
                    "gcwait: concurrency",
                    [spec("gcwait", "concurrency", conversations=level, n=s.conc_n, delay=s.conc_delay)],
                )
            )
            with ThreadPoolExecutor(len(jobs)) as pool:
                futures = [(label, pool.submit(run_worker, specs, s.worker_timeout)) for label, specs in jobs]
                for label, fut in futures:
                    results += progress(label, fut.result())
        else:
            for r in range(s.latency_rounds):  # interleaved rounds: drift hits every client alike
                for c in CLIENTS:
                    results += progress(
                        f"latency round {r + 1}: {c}",
                        run_worker([{**spec(c, "latency", **lat), "key": f"lat{r}{c}"}], s.worker_timeout),
                    )
            if plain is not None:
                for c in ("sse6", "gc6", "bridge"):
                    results += progress(
                        f"current Gradio latency: {c}",
                        run_worker(
                            [
                                {
                                    **spec(
                                        c,
                                        "plain_latency",
                                        n=s.latency_n,
                                        delay=s.latency_delay,
                                        runs=s.latency_runs * s.latency_rounds,
                                    ),
                                    "url": plain_url,
                                }
                            ],
                            s.worker_timeout,
                        ),
                    )
            for level in s.levels:
                for c in ("sse", "gcwait", "gc", "adapter"):
                    results += progress(
                        f"concurrency {level}: {c}",
                        run_worker(
                            [spec(c, "concurrency", conversations=level, n=s.conc_n, delay=s.conc_delay)],
                            s.worker_timeout,
                        ),
                    )
            for c in CLIENTS:
                results += progress(
                    f"growth, turns, attachment, requests: {c}",
                    run_worker([spec(c, k, **kw) for k, kw in misc], s.worker_timeout),
                )
            results += load_rounds(s, spec, space, progress)
        data["imports"] = {} if only_load else import_costs(s.import_runs)
        space.stop()
        if plain is not None:
            plain.stop()
    data["results"] = results
    data["elapsed_s"] = time.monotonic() - t_start
    return data
