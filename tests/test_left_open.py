"""A stream left open when its event loop ends: no traceback, and nothing left on the Space.

A script that breaks out of a stream without closing it, then lets `asyncio.run` (or a bare
loop, or trio) end, hands the open generator to the loop's shutdown or to the garbage collector.
Either way the answer must be stopped on the Space (not run to its end for nobody) and the
interpreter must exit quietly.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import asyncio, sys
from qwen_space_adapter import Qwen_Qwen_2_5M
kept = []
async def main(url):
    stream = Qwen_Qwen_2_5M.create_async_generator(
        "", [{"role": "user", "content": sys.argv[2] + " [[tokens=2000]] [[delay=0.01]]"}], space=url)
    kept.append(stream)
    async for item in stream:
        if isinstance(item, str):
            break
if sys.argv[2] == "asyncio.run":
    asyncio.run(main(sys.argv[1]))
elif sys.argv[2] == "bare loop":
    loop = asyncio.new_event_loop()
    loop.run_until_complete(main(sys.argv[1]))
    loop.close()
else:
    import trio
    trio.run(main, sys.argv[1])
print("ended", flush=True)
"""


@pytest.mark.parametrize("how", ["asyncio.run", "bare loop", "trio"])
def test_a_stream_left_open_at_the_loops_end_ends_quietly(qwen_shared_replica, how):
    replica = qwen_shared_replica()
    done = subprocess.run([sys.executable, "-c", SCRIPT, replica.url, how], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "ended\n", done.stderr
    assert "Traceback" not in done.stderr and "no running event loop" not in done.stderr, done.stderr
    stats = replica.wait_idle(15)
    assert stats["active"] == 0, "the answer still runs on the Space"
    # Stopped, not run to its end: an exit that waited for the whole answer (the Space generating
    # 2000 tokens for nobody, the script hanging 20 s) would also leave the Space idle.
    (left,) = [r for r in stats["requests"] if r["user_text"].startswith(how + " [[")]
    assert left["status"] == "cancelled" and left["tokens"] < 2000, left
