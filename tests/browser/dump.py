"""Dump both wire recordings of one flavor, normalised and raw, with their differences, as JSON.

    python -m tests.browser.dump --ui qwen-agent --agents 2 --mention -o /tmp/mention.json

For whoever fixes the engine: rerun after a change and read `differences` / `diff` (empty when
the adapter runs the page exactly as its browser does). Starts and stops its own replica and browser.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from qwen_space_adapter.replica import Replica, ReplicaSettings

from .compare import kinds
from .driver import browser
from .run import run_case


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ui", default="hand")
    ap.add_argument("--agents", type=int, default=1)
    ap.add_argument("--mention", action="store_true")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    started = time.monotonic()
    settings = ReplicaSettings(
        ui=args.ui, agents=args.agents, mention=args.mention, token_delay=0.005, prefill_base=0.02
    )
    with Replica(settings) as replica, browser() as chromium:
        result = run_case(chromium, str(replica.url), args.mention)
    args.output.write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False))
    print(f"{args.output}: {len(result.differences)} difference(s) in {time.monotonic() - started:.1f}s")
    for line in kinds(result.differences):
        print("  " + line)
    return 1 if result.differences else 0


if __name__ == "__main__":
    sys.exit(main())
