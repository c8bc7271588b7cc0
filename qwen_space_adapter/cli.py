"""`qwen-space`: chat with the Space, run a local replica, check or record a Space.

Answers go to stdout as they stream; status (queue position, thinking) goes to stderr, as a
live line when stderr is a terminal, so piping stdout gives just the answer. `--json` prints
one JSON object per event instead. Exit status: 0 done, 1 the Space failed, 2 bad input,
130 interrupted (Ctrl-C cancels the answer on the Space first).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any, TextIO

import anyio

from .conversation import JsonConversation
from .errors import InvalidRequestError, QwenSpaceError
from .events import QueueStatus, Reasoning, Summary, TextRewritten

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class StatusLine:
    """One line of status on stderr, redrawn in place on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.shown = False

    def show(self, text: str) -> None:
        if self.live:
            self.stream.write("\r\x1b[2K" + text)
            self.shown = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.live and self.shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.shown = False


def _event_json(item: Any) -> dict[str, Any]:
    if isinstance(item, str):
        return {"type": "delta", "text": item}
    if isinstance(item, Reasoning):
        return {"type": "reasoning", "status": item.status}
    if isinstance(item, QueueStatus):
        return {"type": "queue", "position": item.position, "queue_size": item.queue_size, "eta": item.eta}
    if isinstance(item, TextRewritten):
        return {"type": "rewrite", "text": item.text, "previous": item.previous}
    if isinstance(item, Summary):
        return {"type": "summary", "text": item.text}
    if isinstance(item, JsonConversation):
        return {"type": "conversation", "conversation": item.get_dict()}
    return {"type": type(item).__name__}


async def answer(
    messages: list[dict[str, str]],
    conversation: JsonConversation | None,
    args: argparse.Namespace,
    out: TextIO,
    status: StatusLine,
) -> JsonConversation | None:
    """Stream one answer to `out`; return the conversation to continue."""
    from .provider import Qwen_Qwen_2_5M

    kwargs: dict[str, Any] = {"files": args.file or None}
    if args.space:
        kwargs["space"] = args.space
    if args.timeout:
        kwargs["timeout"] = args.timeout
    stream = Qwen_Qwen_2_5M.create_async_generator(
        args.model, messages, return_conversation=True, conversation=conversation, **kwargs
    )
    conv = None
    text = ""
    try:
        async for item in stream:
            if isinstance(item, JsonConversation):
                conv = item
                if not args.json:
                    continue
            if args.json:
                if isinstance(item, str):
                    text += item
                out.write(json.dumps(_event_json(item), ensure_ascii=False) + "\n")
                out.flush()
                continue
            if isinstance(item, str):
                status.clear()
                out.write(item)
                out.flush()
            elif isinstance(item, Reasoning):
                status.show(f"[{item.status or 'thinking'}]")
            elif isinstance(item, QueueStatus):
                eta = f", about {item.eta:.0f}s" if item.eta else ""
                size = f"/{item.queue_size}" if item.queue_size else ""
                status.show(f"[in queue: position {item.position}{size}{eta}]")
            elif isinstance(item, TextRewritten):
                out.write(f"\n[the Space rewrote its answer]\n{item.text}")
    finally:
        await stream.aclose()
    if args.json:
        out.write(json.dumps({"type": "done", "text": text}, ensure_ascii=False) + "\n")
    else:
        out.write("\n")
    out.flush()
    return conv


def _messages(prompt: str, system: str | None, first: bool) -> list[dict[str, str]]:
    msgs = []
    if system and first:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": prompt})
    return msgs


def _run_chat(args: argparse.Namespace) -> int:
    out, status = sys.stdout, StatusLine(sys.stderr)
    prompt = " ".join(args.prompt) if args.prompt else None
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip()
        if not prompt:
            print("qwen-space: error: empty prompt on stdin", file=sys.stderr)
            return EXIT_USAGE
    if prompt is not None:
        anyio.run(answer, _messages(prompt, args.system, True), None, args, out, status)
        return EXIT_OK
    conv: JsonConversation | None = None
    print("Chatting with the Space. /clear starts over, /exit or Ctrl-D quits.", file=sys.stderr)
    while True:
        try:
            line = input("you> ")
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
        conv = anyio.run(answer, _messages(line, args.system, conv is None), conv, args, out, status)


def cmd_chat(args: argparse.Namespace) -> int:
    replica = None
    try:
        if args.replica:
            from .replica import Replica

            replica = Replica()
            args.space = replica.start()
        return _run_chat(args)
    except KeyboardInterrupt:
        print("\nqwen-space: interrupted; the answer was cancelled on the Space.", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if replica is not None:
            replica.close()


def cmd_replica(args: argparse.Namespace) -> int:
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
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Replica(settings) as replica:
        print(replica.url, flush=True)
        stop.wait()
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="qwen-space", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    chat = sub.add_parser("chat", help="chat with the Space (one-shot with a prompt, else interactive)")
    chat.add_argument("prompt", nargs="*", help="the message; read from stdin when piped")
    chat.add_argument("--space", default=None, help="Space id or URL (default: $QWEN_SPACE or the live Space)")
    chat.add_argument("--replica", action="store_true", help="start a local replica Space for this run")
    chat.add_argument("--system", default=None, help="a system message for the conversation")
    chat.add_argument("--file", action="append", default=[], help="attach a text document (repeatable)")
    chat.add_argument("--json", action="store_true", help="print one JSON object per event")
    chat.add_argument("--model", default="qwen-2.5-1m")
    chat.add_argument("--timeout", type=float, default=None, help="seconds for the whole answer")
    chat.set_defaults(func=cmd_chat)

    rep = sub.add_parser("replica", help="serve a local replica Space until interrupted")
    rep.add_argument("--host", default="127.0.0.1")
    rep.add_argument("--port", type=int, default=0, help="0 picks a free port")
    rep.add_argument("--token-delay", type=float, default=0.02, help="seconds between tokens")
    rep.add_argument("--prefill-base", type=float, default=0.05, help="seconds of 'thinking'")
    rep.add_argument("--fault", default=None, help="a fault for every request (see README)")
    rep.add_argument("--fault-arg", type=float, default=None)
    rep.add_argument("--max-queue-size", type=int, default=0, help="0 = unlimited")
    rep.add_argument("--concurrency-limit", type=int, default=0, help="0 = unlimited")
    rep.add_argument("--replay", default=None, help="replay a recorded transcript")
    rep.add_argument("--replay-speed", type=float, default=1.0)
    rep.set_defaults(func=cmd_replica)

    try:
        from .harness.cli import add_commands
    except ImportError:  # pragma: no cover - the harness ships with the package
        pass
    else:
        add_commands(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
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
