"""`qwen-space check` and `qwen-space record`: the harness's commands, added to the main CLI.

`qwen_space_adapter.cli` calls `add_commands(subparsers)`, so the harness stays optional there
and owns its own flags. A target is a Space id, a URL, or `replica` (start a local replica for
the run, stopped afterwards); `check` defaults to $QWEN_SPACE, else the live Space.
Exit status: 0 every check passed (or the recording completed), 1 a check failed (or a recorded
turn failed, or the target could not be used), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
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
    files = [check_file(f) for f in args.file]
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


def add_commands(subparsers: Any) -> None:
    """Add `check` and `record` to the `qwen-space` parser's subcommands."""
    check = subparsers.add_parser(
        "check",
        help="run the conformance checks against a Space, a URL or a local replica",
        description="Check that a target still behaves as the adapter relies on; exit 1 if not.",
    )
    check.add_argument("target", nargs="?", default=None,
                       help=f"Space id, URL or 'replica' (default: $QWEN_SPACE or {LIVE_SPACE})")
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
    record.add_argument("--prompt", action="append", default=[],
                        help="a user turn (repeatable; default: a scripted 3-turn conversation)")
    record.add_argument("--file", action="append", default=[], help="attach to the first turn")
    record.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per turn")
    record.set_defaults(func=cmd_record)


__all__ = ["add_commands", "cmd_check", "cmd_record", "open_target"]
