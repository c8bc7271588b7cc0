"""`qwen-space serve`: its arguments and what it does, kept here so cli.py only registers it.

uvicorn is imported when the command runs, not when the CLI starts, so `qwen-space chat` works
without the `serve` extra and `serve` says how to get it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..constants import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE


def add_command(sub: Any) -> None:
    """Register `serve` on the CLI's sub-parsers."""
    p = sub.add_parser(
        "serve",
        help="serve the Space as an OpenAI-compatible API (needs the 'serve' extra)",
        description="Serve the Space as an OpenAI-compatible API: POST /v1/chat/completions (streaming "
        "or not), GET /v1/models, GET /health. Prints the base URL once it accepts requests; "
        "Ctrl-C stops it at once, cancelling what runs on the Space. See docs/serving.md.",
    )
    p.add_argument("--space", default=None, help="Space id or URL (default: $QWEN_SPACE or the live Space)")
    p.add_argument("--replica", action="store_true", help="start a local replica Space for this run (not with --space)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: %(default)s; anything but loopback needs --api-key)",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0 picks a free one)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (clients' API key)")
    p.add_argument(
        "--sessions",
        default=":memory:",
        metavar="FILE",
        help="SQLite file mapping conversations to Space sessions, so a restarted server still "
        "continues them (default: in memory)",
    )
    p.add_argument("--max-sessions", type=int, default=10_000, help="conversations kept (default: %(default)s)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..errors import InvalidRequestError

    if args.replica and args.space:
        print(
            "qwen-space: error: --replica starts a local Space of its own; do not also give --space.", file=sys.stderr
        )
        return EXIT_USAGE
    try:
        from . import server
    except ImportError as e:
        print(
            f"qwen-space: error: serving needs the 'serve' extra ({e.name} is missing): "
            "pip install 'qwen_space_adapter[serve]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.max_sessions < 1:
        raise InvalidRequestError("--max-sessions must be at least 1.")
    server.check_bind(args.host, args.api_key)
    try:
        sock = server.bind(args.host, args.port)
    except OSError as e:
        raise InvalidRequestError(f"Cannot listen on {args.host}:{args.port}: {e.strerror or e}.") from None
    replica = None
    try:
        if args.replica:
            from ..replica import Replica

            replica = Replica()
            args.space = replica.start()
        return _serve(args, sock, server)
    except KeyboardInterrupt:  # while the replica starts
        print("\nqwen-space: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        sock.close()
        if replica is not None:
            replica.close()


def _serve(args: argparse.Namespace, sock: Any, server: Any) -> int:
    from .app import ServeApp
    from .store import SessionStore
    from .turns import Context

    store = SessionStore(args.sessions, max_entries=args.max_sessions)
    app = ServeApp(Context(store=store, space=args.space), api_key=args.api_key)
    url = server.base_url(sock)

    def ready() -> None:
        print(url, flush=True)
        print(
            f"qwen-space: serving {args.space or 'the default Space'} at {url} (Ctrl-C stops)",
            file=sys.stderr,
            flush=True,
        )

    try:
        server.run(server.serve_forever(app, sock, ready))
    finally:
        store.close()
    return EXIT_OK


__all__ = ["add_command", "cmd_serve"]
