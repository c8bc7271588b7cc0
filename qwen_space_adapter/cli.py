"""`qwen-space`: chat with the Space, run a local replica, serve the Space as an OpenAI-compatible
API (`serve`), and the harness's `check`, `record` and `load` (conformance, transcripts, load tests).

Answers go to stdout as they stream; status (queue position, thinking, with the time spent in
each) goes to stderr, as a live line when stderr is a terminal, so piping stdout gives just the
answer. `--json` prints one JSON object per event instead. Exit status: 0 done, 1 the Space
failed, 2 bad input, 130 interrupted (Ctrl-C cancels the answer on the Space first).

Ctrl-C is handled here, not by asyncio's default handler, for three reasons: asyncio cancels the
answer's task once (an edge that a single swallowed `CancelledError` loses, after which the
answer runs to its end), a second Ctrl-C then waits for the loop's cleanup, and the interpreter's
exit joins gradio_client's worker threads. Here the first Ctrl-C cancels an anyio scope, which
keeps cancelling until the answer is gone (and cancelled on the Space); a second one ends the
process at once; and the program never waits for gradio_client's threads when it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import anyio

from .constants import CLI_MODEL, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .conversation import JsonConversation
from .errors import InvalidRequestError, QwenSpaceError
from .events import QueueStatus, Reasoning, Summary, TextRewritten

# Called, in order, when a second Ctrl-C ends the process at once (e.g. kill the --replica).
_HARD_EXIT_HOOKS: list[Any] = []


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def queue_text(event: QueueStatus) -> str:
    """A queue status for people: positions count from 1 (the Space's rank 0 is next in line)."""
    return "in queue" + event.where()


class StatusLine:
    """What the answer is waiting for, on stderr, with the time spent in that phase.

    On a terminal it is one line redrawn in place, and `tick()` redraws it every second so a
    long prefill (minutes for a 1M-token context) does not look hung. Elsewhere (a log, a pipe)
    each change is one plain line, without the ticking clock.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.shown = False
        self.phase: str | None = None  # "queue", "thinking", "waiting", "cancelling"
        self.text = ""
        self.since = time.monotonic()

    def show(self, phase: str, text: str) -> None:
        if phase != self.phase:
            self.since = time.monotonic()
        changed = (phase, text) != (self.phase, self.text)
        self.phase, self.text = phase, text
        if self.live:
            self.draw()
        elif changed and phase != "waiting":  # in a log, only what the Space reports
            self.stream.write(f"[{text}]\n")
            self.stream.flush()

    def draw(self) -> None:
        if not self.live or self.phase is None:
            return
        self.stream.write(f"\r\x1b[2K[{self.text} {_clock(time.monotonic() - self.since)}]")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        """Take the line away (text follows); the phase ends."""
        self.phase = None
        if self.live and self.shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.shown = False

    async def tick(self) -> None:
        while True:
            await anyio.sleep(1)
            self.draw()


def _event_json(item: Any) -> dict[str, Any]:
    if isinstance(item, str):
        return {"type": "delta", "text": item}
    if isinstance(item, Reasoning):
        return {"type": "reasoning", "status": item.status}
    if isinstance(item, QueueStatus):
        position = None if item.position is None else item.position + 1  # 1 = next in line
        return {"type": "queue", "position": position, "queue_size": item.queue_size, "eta": item.eta}
    if isinstance(item, TextRewritten):
        return {"type": "rewrite", "text": item.text, "previous": item.previous}
    if isinstance(item, Summary):
        return {"type": "summary", "text": item.text}
    if isinstance(item, JsonConversation):
        return {"type": "conversation", "conversation": item.get_dict()}
    return {"type": type(item).__name__}


@dataclass
class Turn:
    """One answer's outcome, filled in as it streams, so an interrupted answer still has it."""

    messages: list[dict[str, str]]
    conversation: JsonConversation | None  # the one continued; replaced by the one the stream yields
    files: list[str] = field(default_factory=list)
    text: str = ""
    error: QwenSpaceError | None = None
    interrupted: bool = False


async def answer(turn: Turn, args: argparse.Namespace, out: TextIO, status: StatusLine) -> None:
    """Stream one answer to `out`, recording the conversation and any error in `turn`."""
    from .provider import Qwen_Qwen_2_5M

    kwargs: dict[str, Any] = {"files": turn.files or None}
    if args.space:
        kwargs["space"] = args.space
    if args.timeout:
        kwargs["timeout"] = args.timeout
    json_out = args.json

    def emit(event: dict[str, Any]) -> None:
        out.write(json.dumps(event, ensure_ascii=False) + "\n")
        out.flush()

    try:
        stream = Qwen_Qwen_2_5M.create_async_generator(
            args.model, turn.messages, return_conversation=True, conversation=turn.conversation, **kwargs
        )
        status.show("waiting", "waiting for the Space")
        try:
            async for item in stream:
                if isinstance(item, JsonConversation):
                    turn.conversation = item
                elif isinstance(item, str):
                    turn.text += item
                elif isinstance(item, TextRewritten):
                    turn.text = item.text
                if json_out:
                    emit(_event_json(item))
                elif isinstance(item, str):
                    status.clear()
                    out.write(item)
                    out.flush()
                elif isinstance(item, Reasoning):
                    status.show("thinking", item.status or "thinking")
                elif isinstance(item, QueueStatus):
                    status.show("queue", queue_text(item))
                elif isinstance(item, TextRewritten):
                    status.clear()
                    out.write(f"\n[the Space rewrote its answer]\n{item.text}")
                    out.flush()
        finally:
            with anyio.CancelScope(shield=True):  # cancels the job on the Space if it still runs
                await stream.aclose()
    except QwenSpaceError as exc:
        turn.error = exc
    except anyio.get_cancelled_exc_class():
        turn.interrupted = True  # Ctrl-C reached the answer (not one that came after its end)
        raise
    finally:
        status.clear()
        if json_out:
            if turn.error is not None:
                emit(
                    {
                        "type": "error",
                        "error": type(turn.error).__name__,
                        "message": str(turn.error),
                        "retryable": turn.error.retryable,
                    }
                )
            elif turn.interrupted:
                emit({"type": "cancelled", "text": turn.text})
            else:
                emit({"type": "done", "text": turn.text})
            if turn.conversation is not None:
                emit(_event_json(turn.conversation))  # final: the chatbot as the Space now has it
        elif turn.text:
            out.write("\n")
            out.flush()


class Interrupts:
    """SIGINT while an answer runs: the first cancels it, a second ends the process at once.

    The handler runs in the main thread between two bytecodes, possibly inside the event loop's
    own code, so it only schedules the cancel with the loop's thread-safe call. Cancelling an
    anyio scope is level-triggered: it keeps cancelling until the answer's code has left the
    scope, unlike asyncio's single `Task.cancel()`.
    """

    def __init__(self, status: StatusLine) -> None:
        self.status = status
        self.loop: asyncio.AbstractEventLoop | None = None
        self.scope: anyio.CancelScope | None = None
        self.count = 0
        self.finished = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.finished:  # the answer is over: behave like Python's default handler
            raise KeyboardInterrupt
        self.count += 1
        if self.count > 1:
            hard_exit()
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._cancel)
        # else: not started yet; `run_answer` sees `count` as soon as the loop runs

    def _cancel(self) -> None:
        if self.scope is not None:
            self.scope.cancel()
        self.status.show("cancelling", "cancelling the answer on the Space (Ctrl-C again quits at once)")


def hard_exit() -> None:
    """End the process now: the second Ctrl-C. Nothing waits, not even gradio_client's threads."""
    for hook in _HARD_EXIT_HOOKS:
        try:
            hook()
        except Exception:
            pass
    try:
        os.write(2, b"\nqwen-space: interrupted.\n")
    finally:
        os._exit(EXIT_INTERRUPTED)


def read_line(prompt: str) -> str:
    """`input()` for the interactive chat, without its Ctrl-C race.

    `input()` checks for signals only when its blocking read is interrupted, so a Ctrl-C that
    lands between the prompt and the read waits for the next key. Here the signal module's
    wakeup fd is read next to the terminal: a signal at any moment ends the wait, and Python's
    default handler then raises `KeyboardInterrupt`. The terminal stays in its line mode (the
    kernel edits the line and drops it on Ctrl-C). Raises `EOFError` on Ctrl-D.
    """
    sys.stderr.write(prompt)
    sys.stderr.flush()
    fd = sys.stdin.fileno()
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    try:
        while True:
            ready, _, _ = select.select([fd, reader], [], [])
            if reader in ready:
                _drain(reader)  # a signal came: its handler runs at the next bytecode
            if fd in ready:
                data = os.read(fd, 65536)  # in line mode: one line, or what Ctrl-D ended
                if not data:
                    raise EOFError
                return data.decode(errors="replace").rstrip("\r\n")
    finally:
        signal.set_wakeup_fd(previous)
        reader.close()
        writer.close()


@contextmanager
def _wake_on_signals(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Wake the event loop when a signal arrives, whichever thread the kernel delivered it to.

    Python runs signal handlers in the main thread, but only once that thread runs bytecode; a
    SIGINT delivered to one of gradio_client's threads does not interrupt the loop's wait. The
    signal module's wakeup fd makes the loop's selector return, and the handler then runs.
    """
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    loop.add_reader(reader.fileno(), _drain, reader)
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        loop.remove_reader(reader.fileno())
        reader.close()
        writer.close()


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(512):
            pass
    except OSError:  # nothing left (BlockingIOError) or closed
        pass


def run_answer(turn: Turn, args: argparse.Namespace, out: TextIO, status: StatusLine) -> Turn:
    """Run one answer on an event loop of its own, with Ctrl-C cancelling it (see `Interrupts`)."""
    interrupts = Interrupts(status)

    async def main() -> None:
        interrupts.loop = asyncio.get_running_loop()
        with _wake_on_signals(interrupts.loop):
            async with anyio.create_task_group() as tg:
                tg.start_soon(status.tick)
                with anyio.CancelScope() as scope:
                    interrupts.scope = scope
                    if interrupts.count:
                        scope.cancel()
                    await answer(turn, args, out, status)  # records errors in `turn`, raises none
                tg.cancel_scope.cancel()

    previous = signal.signal(signal.SIGINT, interrupts)
    try:
        anyio.run(main)
    finally:
        interrupts.finished = True
        signal.signal(signal.SIGINT, previous)
    return turn


def _messages(prompt: str, system: str | None, first: bool) -> list[dict[str, str]]:
    msgs = []
    if system and first:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": prompt})
    return msgs


def _report_error(error: QwenSpaceError) -> int:
    print(f"qwen-space: error: {error}", file=sys.stderr)
    return EXIT_USAGE if isinstance(error, InvalidRequestError) else EXIT_FAILED


def _run_chat(args: argparse.Namespace) -> int:
    out, status = sys.stdout, StatusLine(sys.stderr)
    prompt = " ".join(args.prompt) if args.prompt else None
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip()
        if not prompt:
            print("qwen-space: error: empty prompt on stdin", file=sys.stderr)
            return EXIT_USAGE
    if prompt is not None:
        turn = run_answer(Turn(_messages(prompt, args.system, True), None, list(args.file)), args, out, status)
        if turn.interrupted:
            print("qwen-space: interrupted; the answer was cancelled on the Space.", file=sys.stderr)
            return EXIT_INTERRUPTED
        return _report_error(turn.error) if turn.error else EXIT_OK
    return _repl(args, out, status)


def _repl(args: argparse.Namespace, out: TextIO, status: StatusLine) -> int:
    """The interactive chat: one conversation, kept across answers, cancels and errors.

    `--file` documents are attached to the first message of a conversation only: the Space keeps
    them in its session history, so later questions are about them without sending them again.
    """
    conv: JsonConversation | None = None
    print(
        "Chatting with the Space. /clear starts over, /exit or Ctrl-D quits; Ctrl-C cancels an answer.", file=sys.stderr
    )
    if args.file:
        print(
            f"(attaching {len(args.file)} file(s) to the first message; later messages can refer to them)",
            file=sys.stderr,
        )
    while True:
        try:
            line = read_line("you> ")
        except KeyboardInterrupt:  # as in a shell: drop the line, prompt again
            print(file=sys.stderr)
            continue
        except EOFError:
            print(file=sys.stderr)
            return EXIT_OK
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return EXIT_OK
        if line == "/clear":
            conv = None
            print("(new conversation)", file=sys.stderr)
            continue
        first = conv is None or not conv.message_count
        files = list(args.file) if first else []
        try:
            turn = run_answer(Turn(_messages(line, args.system, first), conv, files), args, out, status)
        except KeyboardInterrupt:  # between the answer's end and the prompt: nothing to cancel
            print(file=sys.stderr)
            continue
        if turn.interrupted:
            print("(answer cancelled)", file=sys.stderr)
        elif turn.error is not None:
            print(f"qwen-space: error: {turn.error}", file=sys.stderr)
        # Keep what the Space holds: after add_text it has this message in its session history.
        if turn.conversation is not None and turn.conversation.message_count:
            conv = turn.conversation


def cmd_chat(args: argparse.Namespace) -> int:
    if args.replica and args.space:
        print(
            "qwen-space: error: --replica starts a local Space of its own; do not also give --space.", file=sys.stderr
        )
        return EXIT_USAGE
    replica = None
    try:
        if args.replica:
            from .replica import Replica

            replica = Replica()
            _HARD_EXIT_HOOKS.append(lambda: _kill_group(replica))
            args.space = replica.start()
        return _run_chat(args)
    except KeyboardInterrupt:  # while the replica starts, or between two answers
        print("\nqwen-space: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if replica is not None:
            replica.close()


def _kill_group(replica: Any) -> None:
    pid = replica.pid
    if pid:
        os.killpg(pid, signal.SIGKILL)


def cmd_replica(args: argparse.Namespace) -> int:
    from .errors import ReplicaError
    from .replica import Replica, ReplicaSettings

    settings = ReplicaSettings(
        host=args.host,
        port=args.port,
        token_delay=args.token_delay,
        prefill_base=args.prefill_base,
        fault=args.fault,
        fault_arg=args.fault_arg,
        max_queue_size=args.max_queue_size,
        concurrency_limit=args.concurrency_limit,
        replay=args.replay,
        replay_speed=args.replay_speed,
        ui=args.ui,
        agents=args.agents,
        mention=args.mention,
        python=args.python,
    )
    try:  # a bad option is a usage error, said in one line before anything starts
        settings.validate()
    except ReplicaError as e:
        print(f"qwen-space: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Replica(settings) as replica:
        print(replica.url, flush=True)
        stop.wait()
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(prog="qwen-space", description=__doc__.split("\n")[0])
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    chat = sub.add_parser(
        "chat",
        help="chat with the Space (one-shot with a prompt, else interactive)",
        description="Chat with the Space: one-shot with a prompt (or a piped stdin), else interactive.",
        epilog="Interactive: Ctrl-C cancels an answer on the Space and keeps the conversation (a second "
        "Ctrl-C quits at once); Ctrl-C at the prompt clears the line; /clear starts over; "
        "Ctrl-D or /exit quits. One-shot: Ctrl-C cancels and exits with 130.",
    )
    chat.add_argument("prompt", nargs="*", help="the message; read from stdin when piped")
    chat.add_argument("--space", default=None, help="Space id or URL (default: $QWEN_SPACE or the live Space)")
    chat.add_argument(
        "--replica", action="store_true", help="start a local replica Space for this run (not with --space)"
    )
    chat.add_argument("--system", default=None, help="a system message for the conversation")
    chat.add_argument(
        "--file",
        action="append",
        default=[],
        help="attach a text document (repeatable); interactively, to the first message only: "
        "the Space keeps it for the follow-up questions",
    )
    chat.add_argument("--json", action="store_true", help="print one JSON object per event")
    chat.add_argument(
        "--model",
        default=CLI_MODEL,
        help="the model name: qwen-2.5-1m or qwen-2.5-1m-demo, the same model (default: %(default)s)",
    )
    chat.add_argument("--timeout", type=float, default=None, help="seconds for the whole answer")
    chat.set_defaults(func=cmd_chat)

    rep = sub.add_parser("replica", help="serve a local replica Space until interrupted")
    rep.add_argument("--host", default="127.0.0.1")
    rep.add_argument("--port", type=int, default=0, help="0 picks a free port")
    rep.add_argument("--token-delay", type=float, default=0.02, help="seconds between tokens")
    rep.add_argument("--prefill-base", type=float, default=0.05, help="seconds of 'thinking'")
    rep.add_argument(
        "--fault",
        default=None,
        help="a fault for every request: error-before-first-token, error-mid-stream, stall, "
        "slow-first-token or die-mid-stream (see README)",
    )
    rep.add_argument("--fault-arg", type=float, default=None)
    rep.add_argument("--max-queue-size", type=int, default=0, help="0 = unlimited")
    rep.add_argument("--concurrency-limit", type=int, default=0, help="0 = unlimited")
    rep.add_argument("--replay", default=None, help="replay a recorded transcript")
    rep.add_argument("--replay-speed", type=float, default=1.0)
    rep.add_argument(
        "--ui",
        default="hand",
        help="'hand' (default, fast), 'gradio6' (Gradio 6's own multimodal ChatInterface; "
        "history from the chatbot the client sends), 'qwen-agent' (Qwen-Agent 0.0.11's "
        "real UI, Gradio 4) or 'qwen-agent==X' (releases 0.0.11 to 0.0.34; Gradio 5 from "
        "0.0.12 on)",
    )
    rep.add_argument("--agents", type=int, default=1, help="agents behind the real UI (--ui qwen-agent)")
    rep.add_argument("--mention", action="store_true", help="let @Name pick the agent (needs --agents 2+)")
    rep.add_argument(
        "--python", default=None, help="interpreter for the replica's environment (default: this one if supported)"
    )
    rep.set_defaults(func=cmd_replica)

    from .serve.command import add_command as add_serve  # imports no server code until it runs

    add_serve(sub)

    try:
        from .harness.cli import add_commands
    except ImportError:  # pragma: no cover - the harness ships with the package
        pass
    else:
        add_commands(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """The program. Run as one (`argv` None), it exits without waiting for worker threads."""
    code = _main(argv)
    if argv is None:
        exit_without_waiting(code)
    return code


def exit_without_waiting(code: int) -> None:
    """Exit now if threads other than the main one still run, after the `atexit` hooks.

    A cancelled answer can leave gradio_client's reader thread on a stream the Space is still
    closing; the interpreter's own exit would join it (and any executor thread) first, which
    can take as long as the answer would have. Everything the program printed is flushed and
    the `atexit` hooks (the replica's cleanup) run; only the thread joins are skipped.
    """
    if not any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    atexit._run_exitfuncs()
    os._exit(code)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if os.environ.get("QWEN_SPACE_DEBUG"):
        import logging

        logging.basicConfig(level=logging.DEBUG)
    try:
        code: int = args.func(args)
    except InvalidRequestError as e:  # every command: one line, no traceback, a status
        print(f"qwen-space: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except QwenSpaceError as e:
        print(f"qwen-space: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    return code


if __name__ == "__main__":
    sys.exit(main())
