"""The adapter's benchmark: `python benchmarks/run.py` (full), `--quick` (smallest) or `--load` (one figure).

How long each takes is stated once, in `benchmarks/README.md`; every run prints its own elapsed time.

It follows `docs/benchmark-protocol.md`: servers on 127.0.0.1 that stamp every update with their
`time.time()`, three clients of the same servers in the same run (raw SSE, raw gradio_client, the
adapter), and every figure reported as a ratio to raw SSE, because these machines are noisy and
only same-run ratios hold. Each client runs in a subprocess of its own (`worker.py`), so CPU time,
peak RSS and threads belong to one client only.

Outputs (in `--out`, default `benchmarks/results/`): `latest.json` (every figure, raw data and
the targets' verdicts), `table.md` (the table of `docs/benchmarks.md`), `latency.png` and `cpu_concurrency.png`
(skipped, with a note, when matplotlib is not installed: `pip install -e '.[bench]'`).
`--load` measures only the load generator against its raw-SSE floor and writes `load.json`.

The parts live in `bench/`, one module each: `settings` (the sizes of every measurement),
`servers` (the stamp app, served by the replica's launcher), `workers` (the worker processes and
import costs), `measure` (the run), `ratios` and `figures` (the figures from the raw results),
`load_figure` (the load generator's), `loop_lag`, `tables` (targets, tables, docs/benchmarks.md)
and `plots`. This file is the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `bench` and `serve_bench` sit next to this file (also when loaded by path)
    sys.path.insert(0, str(HERE))

from bench.figures import completeness, figures  # noqa: E402
from bench.load_figure import load_figure, load_rows, load_target  # noqa: E402
from bench.loop_lag import (  # noqa: E402
    LOOP_LAG_LEVELS,
    LOOP_LAG_QUICK_LEVELS,
    loop_lag_rows,
    loop_lag_targets,
    loop_lag_worker,
    measure_loop_lag,
)
from bench.measure import measure  # noqa: E402
from bench.plots import plots  # noqa: E402
from bench.ratios import fmt  # noqa: E402
from bench.servers import Server  # noqa: E402  (serve_bench.py starts the stamp app with it)
from bench.settings import FULL, QUICK, QUICK_NOTE, Settings  # noqa: E402
from bench.tables import END, README, START, table, targets, targets_md, update_readme  # noqa: E402

__all__ = ["END", "README", "START", "Server", "main"]


def main_loop_lag(s: Settings, out: Path) -> int:
    """`--only loop-lag`: the loop-lag figures alone, into `loop_lag.json`; README untouched."""
    lag = measure_loop_lag(LOOP_LAG_QUICK_LEVELS if s.quick else LOOP_LAG_LEVELS)
    lag["targets"] = loop_lag_targets(lag)
    (out / "loop_lag.json").write_text(json.dumps(lag, indent=1, default=str))
    head = "| figure | raw SSE | raw gradio_client | adapter |\n|---|---|---|---|\n"
    print(head + "".join("| {} | {} | {} | {} |\n".format(*row) for row in loop_lag_rows(lag)))
    print(targets_md(lag["targets"]))
    failed = [r for r in lag["levels"] if "p99_ms" not in r or r["answered"] != r["conversations"]]
    for r in failed:
        print(f"level {r['conversations']}: {r.get('error') or r.get('errors')}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smallest setting of every figure (seconds)")
    ap.add_argument(
        "--load",
        action="store_true",
        help="only the load generator's CPU per delivered update vs raw SSE (writes load.json)",
    )
    ap.add_argument("--out", type=Path, default=HERE / "results", help="where results go")
    ap.add_argument(
        "--only",
        choices=["loop-lag"],
        help="only this part: loop-lag = event-loop lag at 1, 100 and 1,000 conversations "
        "(writes loop_lag.json; README untouched)",
    )
    ap.add_argument("--loop-lag-worker", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.loop_lag_worker:
        loop_lag_worker(args.loop_lag_worker[0], int(args.loop_lag_worker[1]))
        return 0
    s = QUICK if args.quick else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    if args.load:
        return main_load(s, args.out)
    if args.only == "loop-lag":
        return main_loop_lag(s, args.out)
    data = measure(s)
    f = figures(data)
    f["loop_lag"] = measure_loop_lag(LOOP_LAG_QUICK_LEVELS if s.quick else LOOP_LAG_LEVELS)
    verdicts = targets(f, s) + loop_lag_targets(f["loop_lag"])
    data["figures"] = f
    data["targets"] = verdicts
    data["complete"] = completeness(f)
    data["notes"] = plots(f, args.out)
    md = table(f, s)
    tmd = targets_md(verdicts)
    if not s.quick:  # the serving rows (benchmarks/serve_bench.py; --quick stays within its smoke test's budget)
        import serve_bench

        if serve_bench.available() is None:
            data["serve"] = serve_bench.measure()
            tmd += "\n" + serve_bench.table_md(data["serve"]) + "\n"
    (args.out / "table.md").write_text(
        f"{md}\nRatios are to raw SSE in the same run ({QUICK_NOTE if s.quick else 'full setting'}, "
        f"{data['started']}, {data['cpus']} CPUs; the run took {data['elapsed_s'] / 60:.0f} min).\n\n{tmd}"
    )
    (args.out / "latest.json").write_text(json.dumps(data, indent=1, default=str))
    if not s.quick and args.out.resolve() == (HERE / "results").resolve():
        update_readme((args.out / "table.md").read_text())
    if s.quick:
        print(QUICK_NOTE + "\n")
    print(md)
    print(tmd)
    for note in data["notes"]:
        print(note)
    bad = [k for k, v in data["complete"].items() if not v]
    if bad:
        print("INCOMPLETE OR FAILED STREAMS: " + ", ".join(bad))
    print(f"elapsed {data['elapsed_s']:.0f} s; results in {args.out}")
    return 1 if bad else 0


def main_load(s: Settings, out: Path) -> int:
    """`--load`: the load generator's figure alone (a minute or two), into `load.json`; docs/benchmarks.md untouched."""
    data = measure(s, only_load=True)
    f = {"load": load_figure(data["results"])}
    name, value, limit = load_target(f, s)
    data["figures"] = f
    data["targets"] = [{"target": name, "value": value, "limit": limit, "met": bool(value <= limit)}]
    (out / "load.json").write_text(json.dumps(data, indent=1, default=str))
    head = "| figure | raw SSE | raw gradio_client | adapter |\n|---|---|---|---|\n"
    print(head + "".join("| {} | {} | {} | {} |\n".format(*row) for row in load_rows(f, s)))
    print(f"per-round ratios: {', '.join(fmt(x, 'x') for x in f['load']['ratios'])}")
    print(targets_md(data["targets"]))
    ok = f["load"]["complete"]
    if not ok:
        print("INCOMPLETE OR FAILED STREAMS: load")
    print(f"elapsed {data['elapsed_s']:.0f} s; results in {out / 'load.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
