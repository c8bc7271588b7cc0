"""The quickstart notebook runs top to bottom in a real Jupyter kernel and says what it should.

The notebook is documentation that executes, so it rots silently unless something runs it. This
test runs every cell with nbclient in a fresh ipykernel (the notebook starts its own replica),
then reads the outputs: the streamed answers, the pass key, the status events, the sync API. It
also checks, while the kernel is still alive, that the notebook's last cell really stopped the
replica: after the kernel exits, the replica's `atexit` hook would hide a missing stop.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat", reason="needs the 'test' extra (nbformat)")
nbclient = pytest.importorskip("nbclient", reason="needs the 'test' extra (nbclient)")
pytest.importorskip("ipykernel", reason="needs the 'test' extra (ipykernel)")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
CELL_TIMEOUT = 60  # seconds per cell; the whole notebook takes about 15 s on the replica


@pytest.fixture
def python3_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A `python3` kernelspec that runs *this* interpreter, found first via JUPYTER_PATH.

    An installed `python3` spec may say just `python`, which is whatever PATH finds first; the
    kernel must import the package under test, so the test brings its own spec instead of
    installing one into the user's Jupyter folders.
    """
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (qwen_space_adapter tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # The notebook's g4f cell makes g4f log usage under its config folder: keep that in tmp_path.
    monkeypatch.setenv("G4F_CONFIG_DIR", str(tmp_path / "g4f"))
    from jupyter_client.kernelspec import KernelSpecManager

    found = KernelSpecManager().get_kernel_spec("python3")
    assert found.argv[0] == sys.executable
    return "python3"


def cell_text(cell: Any) -> str:
    """Everything a cell showed: streams, rich outputs (Markdown, plain text) and errors."""
    parts: list[str] = []
    previous = None
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            # a stream printed in pieces may arrive as several outputs: they are one text
            if previous == "stream" and parts:
                parts[-1] += out.text
            else:
                parts.append(out.text)
        elif out.output_type in ("display_data", "execute_result"):
            parts.extend(str(v) for k, v in out.data.items() if k.startswith("text/"))
        elif out.output_type == "error":
            parts.append("\n".join(out.traceback))
        previous = out.output_type
    return "\n".join(parts)


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is `pid` (zombies included), read from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces; the ppid follows the state.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def replica_log(client: Any) -> str:
    """The tail of the replica's log, read in the kernel: a Space error's cause is only there."""
    probe = nbformat.v4.new_code_cell(
        "if globals().get('replica') is not None and replica.process is not None:\n    print(replica.log_tail(25))"
    )
    client.nb.cells.append(probe)
    try:
        client.execute_cell(probe, len(client.nb.cells) - 1)
    except Exception as exc:  # the diagnosis must not hide the original failure
        return f"(could not read it: {exc})"
    return cell_text(probe) or "(no replica running)"


def replica_pid_of(nb: Any) -> int | None:
    """The replica's pid, as the notebook's start cell printed it."""
    for cell in nb.cells:
        if "start" in cell.metadata.get("tags", []):
            found = re.search(r"replica running at http://\S+ \(pid (\d+)\)", cell_text(cell))
            return int(found.group(1)) if found else None
    return None


def stop_replica_left_by(nb: Any) -> None:
    """If a cell failed before the notebook stopped its replica, stop it here.

    The kernel's shutdown would normally stop it too (the replica's `atexit` hook), but a
    kernel killed on a timeout runs no hooks, and a replica must never outlive the test.
    """
    pid = replica_pid_of(nb)
    stopped = any("replica stopped" in cell_text(c) for c in nb.cells if c.cell_type == "code")
    if pid is None or stopped:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def test_quickstart_notebook_runs_and_shows_the_answers(python3_kernel: str, tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name=python3_kernel,
        timeout=CELL_TIMEOUT,
        startup_timeout=60,
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    client.reset_execution_trackers()
    try:
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                try:
                    client.execute_cell(cell, index)
                except nbclient.exceptions.CellExecutionError as exc:
                    pytest.fail(f"{exc}\n\nThe replica's log:\n{replica_log(client)}", pytrace=False)
            # Still inside: the kernel lives, so an unstopped replica would still be running.
            leftover: list[int] = []
            if Path("/proc/self/stat").exists():
                kernel_pid = client.km.provisioner.pid  # type: ignore[union-attr]
                assert kernel_pid, "cannot tell which process is the kernel"
                leftover = child_pids(kernel_pid)
    finally:
        stop_replica_left_by(nb)

    cells = {cell.metadata.get("tags", ["?"])[0]: cell for cell in nb.cells if cell.cell_type == "code"}
    out = {tag: cell_text(cell) for tag, cell in cells.items()}

    assert "already installed: skipping pip" in out["install"]
    replica_pid = replica_pid_of(nb)
    assert replica_pid, out["start"]

    first = "In two sentences: what is a 1M-token context window good for?"
    assert f'You said: "{first}".' in out["first-answer"]
    assert "first turn" in out["first-answer"]
    assert "JsonConversation(session_hash=" in out["first-answer"]
    shown = [o for o in cells["first-answer"].outputs if o.output_type == "display_data"]
    assert len(shown) == 1, "the answer is one Markdown output, updated in place while it streams"
    assert shown[0].data["text/markdown"].startswith(f'You said: "{first}".')

    assert 'You said: "Repeat my first question in five words."' in out["continue"]
    assert f'your first message was: "{first}"' in out["continue"]

    assert "The pass key is 71432." in out["document"]
    assert 'I read "haystack.txt"' in out["document"]

    assert "QueueStatus(position=" in out["events"]
    assert "Reasoning(status='Qwen is thinking...'" in out["events"]
    assert "Summary(text=" in out["events"]
    assert re.search(r"\.\.\.and [1-9]\d* text deltas", out["events"])

    assert 'You said: "Hello from the synchronous API!"' in out["sync"]
    assert 'your first message was: "Hello from the synchronous API!"' in out["sync"]
    assert 'You said: "Stream, synchronously."' in out["sync"]

    if "g4f is not installed" not in out["g4f"]:
        assert re.search(r"^g4f reasoning: .*Qwen is thinking\.\.\.", out["g4f"], re.MULTILINE), out["g4f"]
        assert 'g4f answer: You said: "Hello from g4f! What is the pass key?"' in out["g4f"]
        assert "The pass key is 71432." in out["g4f"]

    assert f"replica stopped: process group {replica_pid} is gone" in out["stop"]
    assert not leftover, f"the kernel still had child processes after the last cell: {leftover}"
    with pytest.raises(ProcessLookupError):
        os.kill(replica_pid, 0)


INTERRUPTED_CELL = """
import threading
from qwen_space_adapter import Qwen_Qwen_2_5M, Reasoning

before = {{t.ident for t in threading.enumerate()}}
try:
    if {how!r} == "ask":
        Qwen_Qwen_2_5M.ask("kernel interrupt (ask) [[tokens=3000]] [[delay=0.01]]", space={url!r})
    else:
        messages = [{{"role": "user", "content": "kernel interrupt [[fault:slow-first-token=60]]"}}]
        for item in Qwen_Qwen_2_5M.create_completion("qwen-2.5-1m", messages, space={url!r}):
            if isinstance(item, Reasoning):
                print("thinking", flush=True)
except KeyboardInterrupt:
    print("KeyboardInterrupt reached the cell", flush=True)
# The adapter keeps idle workers a few seconds as a cache (`workers.py`): it is the busy ones that count.
from qwen_space_adapter import workers
new = [t for t in threading.enumerate()
       if t.ident not in before and not t.name.startswith(("AnyIO worker", workers.WORKER_NAME))]
for thread in new:
    thread.join(timeout=10)
import time
deadline = time.monotonic() + 10
while workers.busy() and time.monotonic() < deadline:
    time.sleep(0.05)  # a bound on the workers' own count, polled
print("threads left:", [t.name for t in new if t.is_alive()], "busy workers:", workers.busy(), flush=True)
"""


def run_interrupted(km: Any, kc: Any, code: str, started: Any) -> str:
    """Execute `code`, interrupt the kernel once `started(text so far)` says so; the cell's output."""
    msg_id = kc.execute(code)
    text, interrupted = "", False
    while True:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            text += content["text"]
        elif kind == "error":
            text += "\n".join(content["traceback"])
        elif kind == "status" and content["execution_state"] == "idle":
            return text
        if not interrupted and started(text):
            km.interrupt_kernel()
            interrupted = True


@pytest.mark.parametrize("how", ["create_completion", "ask"])
def test_the_stop_button_raises_keyboard_interrupt_in_the_cell(python3_kernel: str, qwen_replica: Any, how: str):
    """Jupyter's stop button (`interrupt_kernel`, SIGINT) during an answer, in a real kernel."""
    from cli_session import wait_for_generation
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=python3_kernel, startup_timeout=60)
    try:
        before = qwen_replica.wait_idle(15)["cancelled"]
        if how == "ask":  # ask() shows nothing while it runs: the replica tells when it generates

            def started(text: str) -> bool:
                wait_for_generation(qwen_replica, "kernel interrupt (ask)")
                return True

        else:

            def started(text: str) -> bool:
                return "thinking" in text

        out = run_interrupted(km, kc, INTERRUPTED_CELL.format(how=how, url=qwen_replica.url), started)
        assert "KeyboardInterrupt reached the cell" in out, out
        assert "aclose()" not in out and "threads left: [] busy workers: 0" in out, out
        stats = qwen_replica.wait_idle(15)
        assert stats["active"] == 0 and stats["cancelled"] == before + 1
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
