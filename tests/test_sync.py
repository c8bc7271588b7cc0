"""The synchronous twins: the same items from a plain loop, also inside a running event loop."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest
from cli_session import interrupt, started, wait_for_generation

from qwen_space_adapter import InvalidRequestError, JsonConversation, Qwen_Qwen_2_5M, Reasoning

MSG = [{"role": "user", "content": "sync hello"}]
EXPECTED = 'You said: "sync hello". This is the first turn of our conversation.'


def test_create_completion_outside_a_loop(qwen_replica):
    items = list(Qwen_Qwen_2_5M.create_completion("qwen-2.5-1m", MSG, space=qwen_replica.url, return_conversation=True))
    assert isinstance(items[0], JsonConversation)
    assert any(isinstance(i, Reasoning) for i in items)
    assert "".join(i for i in items if isinstance(i, str)) == EXPECTED


def test_ask_continues_a_conversation(qwen_replica):
    first = Qwen_Qwen_2_5M.ask("I am Ada.", space=qwen_replica.url)
    second = Qwen_Qwen_2_5M.ask("Who am I?", conversation=first.conversation, space=qwen_replica.url)
    assert str(first) == first.text == 'You said: "I am Ada.". This is the first turn of our conversation.'
    assert 'your first message was: "I am Ada."' in second.text


def test_sync_api_inside_a_running_loop(qwen_replica):
    async def notebook_cell() -> str:
        # a Jupyter cell runs inside the kernel's loop: the sync API must not touch that loop
        loop = asyncio.get_running_loop()
        answer = Qwen_Qwen_2_5M.ask("sync hello", space=qwen_replica.url)
        assert asyncio.get_running_loop() is loop
        return answer.text

    assert asyncio.run(notebook_cell()) == EXPECTED


def test_breaking_out_of_the_sync_loop_cancels_and_cleans_up(qwen_replica):
    threads = threading.active_count()
    before = qwen_replica.stats()["cancelled"]
    for item in Qwen_Qwen_2_5M.create_completion(
        "qwen-2.5-1m", [{"role": "user", "content": "go [[tokens=3000]] [[delay=0.01]]"}], space=qwen_replica.url
    ):
        if isinstance(item, str):
            break
    stats = qwen_replica.wait_idle(15)
    assert stats["active"] == 0 and stats["cancelled"] == before + 1
    assert threading.active_count() <= threads + 8  # gradio_client's threads end by themselves


def test_bad_input_raises_at_the_call_in_the_callers_thread():
    with pytest.raises(InvalidRequestError):
        Qwen_Qwen_2_5M.create_completion("qwen-2.5-1m", [])
    with pytest.raises(InvalidRequestError):
        Qwen_Qwen_2_5M.ask("", space="http://127.0.0.1:9")


@pytest.mark.anyio
async def test_ask_async(qwen_replica):
    answer = await Qwen_Qwen_2_5M.ask_async("sync hello", space=qwen_replica.url)
    assert answer.text == EXPECTED and answer.conversation is not None


INTERRUPTED_SCRIPT = """
import sys, threading
from qwen_space_adapter import Qwen_Qwen_2_5M

url, how = sys.argv[1], sys.argv[2]
before = {t.ident for t in threading.enumerate()}
try:
    if how == "ask":
        Qwen_Qwen_2_5M.ask("interrupt me (ask) [[tokens=3000]] [[delay=0.01]]", space=url)
    else:
        # A minute of "thinking": the interrupt lands while the loop waits for the next item.
        messages = [{"role": "user", "content": "interrupt me [[fault:slow-first-token=60]]"}]
        for item in Qwen_Qwen_2_5M.create_completion("qwen-2.5-1m", messages, space=url):
            if type(item).__name__ == "Reasoning":
                print("thinking", flush=True)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
else:
    print("the answer ended without an interrupt", flush=True)
# gradio_client's threads end by themselves once the job is over; give them a bounded while.
# AnyIO keeps idle worker threads cached for 10 s by design: those are not left over.
# The adapter keeps idle workers a few seconds as a cache (`workers.py`): it is the busy ones that count.
from qwen_space_adapter import workers
new = [t for t in threading.enumerate()
       if t.ident not in before and not t.name.startswith(("AnyIO worker", workers.WORKER_NAME))]
for thread in new:
    thread.join(timeout=10)
left = [t.name for t in new if t.is_alive()]
import time
deadline = time.monotonic() + 10
while workers.busy() and time.monotonic() < deadline:
    time.sleep(0.05)  # a bound on the workers' own count, polled
print("threads left:", left, "busy workers:", workers.busy(), flush=True)
"""


@pytest.mark.parametrize("how", ["ask", "create_completion"])
def test_ctrl_c_in_a_script_raises_keyboard_interrupt_and_cancels(qwen_replica, tmp_path, how):
    script = tmp_path / "script.py"
    script.write_text(INTERRUPTED_SCRIPT)
    before = qwen_replica.wait_idle(15)["cancelled"]
    with started([sys.executable, str(script), qwen_replica.url, how]) as proc:
        if how == "ask":
            wait_for_generation(qwen_replica, "interrupt me (ask)")
        else:
            assert proc.stdout is not None and proc.stdout.readline() == "thinking\n"
        code, out, err = interrupt(proc)
    assert code == 0, err
    assert "KeyboardInterrupt\n" in out and "aclose()" not in err, err
    assert "threads left: [] busy workers: 0" in out, out
    stats = qwen_replica.wait_idle(15)
    assert stats["active"] == 0 and stats["cancelled"] == before + 1
