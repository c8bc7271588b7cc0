"""`qwen-space check`, `record` and `load`: the harness's commands, added to the main CLI.

`qwen_space_adapter.cli` calls `add_commands(subparsers)`, so the harness stays optional there
and owns its own flags. A target is a Space id, a URL, or `replica` (start a local replica for
the run, stopped afterwards); `check` defaults to $QWEN_SPACE, else the live Space.
Exit status: 0 every check passed (or the recording completed, or the load ran to its end),
1 a check failed (or a recorded turn failed, or the target could not be used), 2 bad arguments
(a load refused by the courtesy rules included), 130 a load run stopped by Ctrl-C (its partial
report is still printed and written).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..constants import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

LIVE_SPACE = "Qwen/Qwen2.5-1M-Demo"


@contextmanager
def open_target(target: str) -> Iterator[tuple[str, bool | None]]:
    """(url, is_replica) for a target; `replica` starts one for the duration of the block.

    None for is_replica means "ask the target" (a URL may well be a replica started elsewhere).
    """
    if target == "replica":
        from ..replica import Replica

        print("qwen-space: starting a local replica...", file=sys.stderr)
        with Replica(token_delay=0.01, prefill_base=0.05) as replica:
            assert replica.url is not None
            yield replica.url, True
        return
    from ..target import space_url

    yield space_url(target), None


def _default_target() -> str:
    from ..target import env_space

    return env_space() or LIVE_SPACE


def cmd_check(args: argparse.Namespace) -> int:
    from .checks import CHECK_NAMES, CHECKS, Suite, select
    from .report import render_table, write_json, write_junit

    if args.list:
        for c in CHECKS:
            print(f"{c.name:<12} {c.title}")
        return EXIT_OK
    names = [n.strip() for n in args.checks.split(",") if n.strip()] if args.checks else None
    try:
        select(names)
    except ValueError as e:
        print(f"qwen-space: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    target = args.target or _default_target()
    with open_target(target) as (url, replica):  # errors: reported by qwen_space_adapter.cli.main
        suite = Suite(url, target=target, replica=replica, timeout=args.timeout, samples=args.samples)
        result = suite.run_all(names or list(CHECK_NAMES))
    print(render_table(result))
    if args.json:
        print(f"JSON report: {write_json(result, args.json)}", file=sys.stderr)
    if args.junit:
        print(f"JUnit report: {write_junit(result, args.junit)}", file=sys.stderr)
    return EXIT_OK if result.passed else EXIT_FAILED


def cmd_record(args: argparse.Namespace) -> int:
    from ..options import check_file
    from .record import DEFAULT_PROMPTS, record_transcript, recorded_failure, save_transcript

    prompts = args.prompt or list(DEFAULT_PROMPTS)
    files = [check_file(f).path for f in args.file]  # checked here: a bad file fails before anything is sent
    with open_target(args.target) as (url, _):  # errors: reported by qwen_space_adapter.cli.main
        transcript = record_transcript(url, prompts, files=files, timeout=args.timeout)
    path = save_transcript(transcript, args.out)
    turns = transcript["turns"]
    updates = sum(len(t["updates"]) for t in turns)
    print(f"recorded {len(turns)} turn(s), {updates} updates from {transcript['target']} -> {path}")
    failure = recorded_failure(transcript)
    if failure:
        print(f"qwen-space: the Space failed while recording ({failure})", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _load_prompts(args: argparse.Namespace, directory: str) -> list[Any]:
    from .load import generated_prompts, load_prompts

    if args.prompts:
        if args.prompt_chars or args.document_chars:
            print("qwen-space: note: --prompts given; --prompt-chars / --document-chars ignored", file=sys.stderr)
        return load_prompts(args.prompts, allow_outside=args.allow_files_outside_prompts_dir)
    try:
        lengths = [int(x) for x in (args.prompt_chars or "200").split(",") if x.strip()]
    except ValueError:
        from ..errors import InvalidRequestError

        raise InvalidRequestError(f"--prompt-chars {args.prompt_chars!r}: give lengths like 200,2000.") from None
    return generated_prompts(lengths, args.document_chars or 0, directory)


def cmd_load(args: argparse.Namespace) -> int:
    import os
    import tempfile

    from .load import SLO, LoadConfig, Shape, check_courtesy, load_async, parse_levels
    from .load.report import ProgressLine, render_table, write_csv, write_json, write_png

    users = args.users if args.users is not None or args.rate is not None else 1
    shape = Shape(
        users=users, rate=args.rate, ramp=args.ramp, duration=args.duration, requests=args.requests, turns=args.turns
    ).check()
    levels = parse_levels(args.sweep) if args.sweep else None
    slo = SLO.parse(args.slo)
    token = os.environ.get("HF_TOKEN", "").strip() or None  # a token pasted from a file ends with a newline
    with tempfile.TemporaryDirectory(prefix="qwen-load-") as tmp:
        prompts = _load_prompts(args, tmp)
        if args.target != "replica":  # courtesy first: nothing is started or sent when refused
            from ..target import space_url

            check_courtesy(
                LoadConfig(
                    space_url(args.target),
                    shape,
                    prompts,
                    target=args.target,
                    token=token,
                    i_own_this_space=args.i_own_this_space,
                ),
                levels,
            )
        progress = ProgressLine(sys.stderr)
        every = args.progress if args.progress else (0.5 if progress.tty else 5.0)
        try:
            with open_target(args.target) as (url, _):  # errors: reported by qwen_space_adapter.cli.main
                config = LoadConfig(
                    url,
                    shape,
                    prompts,
                    target=args.target,
                    slo=slo,
                    timeout=args.timeout,
                    retries=args.retries,
                    token=token,
                    i_own_this_space=args.i_own_this_space,
                    seed=args.seed,
                )
                import anyio

                result = anyio.run(
                    lambda: load_async(
                        config,
                        levels,
                        on_progress=None if args.quiet else progress,
                        progress_every=every,
                        handle_sigint=True,
                        courtesy=False,
                    )
                )
        except KeyboardInterrupt:  # before the run could catch it (starting the replica)
            print("qwen-space: interrupted before the load started", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            progress.close()
    print(render_table(result))
    if args.json:
        print(f"JSON report: {write_json(result, args.json)}", file=sys.stderr)
    if args.csv:
        print(f"CSV: {write_csv(result, args.csv)}", file=sys.stderr)
    if args.png:
        try:
            print(f"PNG: {write_png(result, args.png)}", file=sys.stderr)
        except ImportError:
            print(
                "qwen-space: no PNG: matplotlib is not installed (pip install 'qwen_space_adapter[bench]')",
                file=sys.stderr,
            )
    if result.interrupted:
        # Out now: the cancelled jobs' gradio_client reader threads are not daemons, and the
        # interpreter would wait for them (up to the length of the longest answer) before exiting.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    finished = sum(len(lv.records) for lv in result.levels)
    ok = sum(len(lv.by_status("ok")) for lv in result.levels)
    return EXIT_OK if ok or not finished else EXIT_FAILED


def _add_load(subparsers: Any) -> None:
    load = subparsers.add_parser(
        "load",
        help="measure what a target holds under concurrent users (queue wait, TTFT, e2e, goodput)",
        description=(
            "Load a target with concurrent users (closed loop) or Poisson arrivals (open loop) through "
            "the adapter and report per-request latency percentiles, throughput, errors by class and "
            f"goodput. Against a target not on this machine, at most {2} concurrent users unless "
            "--i-own-this-space."
        ),
    )
    load.add_argument("target", help="Space id, URL or 'replica' (starts a local replica for the run)")
    shape = load.add_mutually_exclusive_group()
    shape.add_argument("--users", type=int, default=None, help="concurrent users, closed loop (default 1)")
    shape.add_argument(
        "--rate",
        type=float,
        default=None,
        help="Poisson arrivals of conversations per second (requests/s with --turns 1)",
    )
    load.add_argument("--ramp", type=float, default=None, help="users added per second (closed loop)")
    load.add_argument("--duration", type=float, default=None, help="seconds after which no request starts")
    load.add_argument(
        "--requests",
        type=int,
        default=None,
        help="requests to send (default: one conversation per user; open loop: 30 s)",
    )
    load.add_argument("--turns", type=int, default=1, help="turns per conversation (the history grows)")
    load.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help='JSONL, one {"prompt": "...", "files": ["doc.txt"]} per line, used in turn',
    )
    load.add_argument(
        "--allow-files-outside-prompts-dir",
        action="store_true",
        help="let --prompts attach files outside the prompts file's folder (absolute paths, ../, "
        "symlinks out); every file is listed before a run against a Space not on this machine",
    )
    load.add_argument(
        "--prompt-chars",
        default=None,
        metavar="N,N",
        help="generated prompts of these lengths in characters (default 200)",
    )
    load.add_argument(
        "--document-chars",
        type=int,
        default=0,
        metavar="N",
        help="attach a generated document of N characters to each generated prompt",
    )
    load.add_argument("--slo", default="ttft=5,e2e=60", help="goodput limits in seconds (default ttft=5,e2e=60)")
    load.add_argument(
        "--sweep",
        default=None,
        metavar="L,L",
        help="run each level in turn: users (or rates with --rate), e.g. 1,2,4,8",
    )
    load.add_argument("--json", metavar="PATH", default=None, help="write the JSON report here")
    load.add_argument("--csv", metavar="PATH", default=None, help="write one row per request here")
    load.add_argument("--png", metavar="PATH", default=None, help="draw latency percentiles against the level")
    load.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per request")
    load.add_argument("--retries", type=int, default=0, help="the adapter's retries (default 0: every failure shows)")
    load.add_argument("--seed", type=int, default=0, help="seed of the Poisson arrivals")
    load.add_argument(
        "--progress",
        type=float,
        default=None,
        metavar="S",
        help="seconds between progress lines (default 0.5 on a terminal, 5 otherwise)",
    )
    load.add_argument("--quiet", action="store_true", help="no progress line")
    load.add_argument(
        "--i-own-this-space",
        action="store_true",
        help="allow more than 2 users (or --rate) against a Space not on this machine",
    )
    load.set_defaults(func=cmd_load)


def add_commands(subparsers: Any) -> None:
    """Add `check`, `record` and `load` to the `qwen-space` parser's subcommands."""
    check = subparsers.add_parser(
        "check",
        help="run the conformance checks against a Space, a URL or a local replica",
        description="Check that a target still behaves as the adapter relies on; exit 1 if not.",
    )
    check.add_argument(
        "target", nargs="?", default=None, help=f"Space id, URL or 'replica' (default: $QWEN_SPACE or {LIVE_SPACE})"
    )
    check.add_argument("--json", metavar="PATH", default=None, help="write the machine report here")
    check.add_argument("--junit", metavar="PATH", default=None, help="write JUnit XML here")
    check.add_argument("--checks", metavar="A,B", default=None, help="run only these checks (see --list)")
    check.add_argument("--list", action="store_true", help="list the checks and exit")
    check.add_argument("--samples", type=int, default=3, help="extra answers for the timing figures")
    check.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per answer")
    check.set_defaults(func=cmd_check)

    record = subparsers.add_parser(
        "record",
        help="record every update a Space sends, with timing, into a JSON transcript",
        description="Record a scripted conversation; replay it with `qwen-space replica --replay FILE`.",
    )
    record.add_argument("target", help="Space id, URL or 'replica'")
    record.add_argument("--out", required=True, metavar="FILE", help="where to write the transcript")
    record.add_argument(
        "--prompt",
        action="append",
        default=[],
        help="a user turn (repeatable; default: a scripted 3-turn conversation)",
    )
    record.add_argument("--file", action="append", default=[], help="attach to the first turn")
    record.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per turn")
    record.set_defaults(func=cmd_record)
    _add_load(subparsers)


__all__ = ["add_commands", "cmd_check", "cmd_load", "cmd_record", "open_target"]
