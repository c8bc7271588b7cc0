"""The adapter's worker threads: the caller's thread never starts one, and `busy()` counts work.

Why it matters: `Thread.start()` waits for the new thread to run, which needs the interpreter
lock; with a hundred conversations' readers holding it in turn, that wait stalled the caller's
event loop for a fifth of a second (`benchmarks/run.py --only loop-lag`). And the suite's leak
checks trust `busy()`: a count that stays 0 would let a call left running pass unseen.
"""

from __future__ import annotations

import threading

from qwen_space_adapter import workers


def _wait_idle(timeout: float = 10.0) -> None:
    done = threading.Event()
    workers.spawn(done.set)
    assert done.wait(timeout)


def test_busy_counts_a_task_until_it_ends():
    release, ended = threading.Event(), threading.Event()

    def task() -> None:
        release.wait(10)
        ended.set()

    base = workers.busy()
    workers.spawn(task)
    assert workers.busy() == base + 1
    release.set()
    assert ended.wait(10)
    finished = threading.Event()
    workers.spawn(finished.set)  # queued behind nothing: once it ran, the first task's count is gone
    assert finished.wait(10)


def test_the_callers_thread_never_starts_a_worker(mocker):
    _wait_idle()  # the starter exists: it is started once per process, by the first spawn
    release = threading.Event()
    ran = threading.Semaphore(0)
    starts_here: list[threading.Thread] = []
    start = threading.Thread.start
    me = threading.current_thread()

    def record(thread: threading.Thread) -> None:
        if threading.current_thread() is me:
            starts_here.append(thread)
        start(thread)

    mocker.patch.object(threading.Thread, "start", autospec=True, side_effect=record)

    def task() -> None:
        ran.release()
        release.wait(10)

    try:
        for _ in range(40):  # more than any idle cache: most of these need a new worker
            workers.spawn(task)
        for _ in range(40):
            assert ran.acquire(timeout=10), "a spawned task never ran"
    finally:
        release.set()
    assert starts_here == []


def test_a_task_runs_even_when_no_thread_can_be_started(mocker):
    """The task must reach the starter's fallback, not an idle worker: a worker of an earlier
    test can fall idle at any moment, so an attempt an idle worker took is played again, with
    that worker kept busy too."""
    _wait_idle()
    release = threading.Event()
    start = threading.Thread.start

    def hold(started: threading.Event) -> None:
        started.set()
        release.wait(30)

    def refuse(thread: threading.Thread) -> None:
        if thread.name == workers.WORKER_NAME:
            raise RuntimeError("can't start new thread")
        start(thread)

    ran_on: list[str] = []
    try:
        for _attempt in range(20):
            blockers = [threading.Event() for _ in range(workers._idle + 2)]  # every idle worker, and more
            for started in blockers:  # so that the next task needs a new worker
                workers.spawn(hold, started)
            assert all(b.wait(10) for b in blockers)
            ran = threading.Event()

            def note(ran: threading.Event = ran) -> None:
                ran_on.append(threading.current_thread().name)
                ran.set()

            refusing = mocker.patch.object(threading.Thread, "start", autospec=True, side_effect=refuse)
            try:
                workers.spawn(note)
                assert ran.wait(10), "a task was lost when its worker could not start"
            finally:
                mocker.stop(refusing)
            if ran_on[-1] == workers.STARTER_NAME:
                break
    finally:
        release.set()
    assert ran_on[-1] == workers.STARTER_NAME, f"the task never needed a new worker: it ran on {ran_on}"
