"""What every test app shares: its command line, and serving a Blocks app until SIGTERM.

The apps run inside a replica environment (Gradio 4.44), started by the replica launcher
(`Replica(app=...)`), which reads the URL line printed once the server accepts requests.
"""

import argparse
import os
import signal
import socket
import threading


def arguments(*modes: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    if modes:
        ap.add_argument("--mode", choices=modes, default=modes[0])
    args, _ = ap.parse_known_args()
    if not args.port:
        with socket.socket() as s:
            s.bind((args.host, 0))
            args.port = s.getsockname()[1]
    return args


def serve(demo, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    demo.queue()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    demo.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True, quiet=True, _frontend=False)
    print(f"http://{args.host}:{args.port}", flush=True)
    os.dup2(2, 1)
    stop.wait()
    demo.close()


def step_named(demo, name: str):  # type: ignore[no-untyped-def]
    """The page's step (a Gradio `BlockFunction`) whose function is called `name`: the apps that
    wrap the replica change one step of it and leave the rest as it is."""
    fns = demo.fns.values() if isinstance(demo.fns, dict) else demo.fns
    (block_fn,) = [f for f in fns if getattr(f.fn, "__name__", "") == name]
    return block_fn
