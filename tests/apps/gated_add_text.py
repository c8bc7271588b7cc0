"""The replica with a gate in `add_text`: every add_text waits until the test opens the gate.

Served by the replica launcher (`Replica(app=...)`), in the replica's environment. It lets a test
hold a turn in its add_text phase for as long as it likes: `GET /gate/entered?timeout=S` answers
once an add_text is waiting at the gate, `POST /gate/release` opens it.

After `POST /gate/hold-cancel`, Gradio's `/cancel` route holds each request until
`POST /gate/release-cancel` (`GET /gate/cancel-held?timeout=S` answers once one is held): a
client's cancel then cannot complete, which is how a test proves that a second Ctrl-C does not
wait for the first one.
Everything else is the replica, unchanged (its `build` and its routes are wrapped, not copied).
"""

import asyncio
import functools
import sys
import threading
from pathlib import Path

REPLICA_DIR = Path(__file__).resolve().parents[2] / "qwen_space_adapter" / "replica"
sys.path.insert(0, str(REPLICA_DIR))

import app  # noqa: E402  (the replica app: starts its parent watchdog and signal handling)
import serving  # noqa: E402
from _serve import step_named  # noqa: E402

ENTERED = threading.Event()
RELEASE = threading.Event()
HOLD_CANCEL = threading.Event()
CANCEL_HELD = threading.Event()
CANCEL_RELEASE = threading.Event()
GATE_LIMIT = 120.0  # seconds an add_text waits at most, so a forgotten gate cannot hang a server


def build(settings):
    demo = original_build(settings)
    block_fn = step_named(demo, "add_text")
    inner = block_fn.fn

    @functools.wraps(inner)
    def gated(*args, **kwargs):
        ENTERED.set()
        RELEASE.wait(GATE_LIMIT)
        return inner(*args, **kwargs)

    block_fn.fn = gated
    return demo


def add_routes(server_app):
    original_routes(server_app)

    def entered(timeout: float = 10.0) -> dict:
        return {"entered": ENTERED.wait(timeout)}

    def release() -> dict:
        RELEASE.set()
        return {"released": True}

    def hold_cancel() -> dict:
        HOLD_CANCEL.set()
        return {"holding": True}

    def release_cancel() -> dict:
        CANCEL_RELEASE.set()
        return {"released": True}

    def cancel_held(timeout: float = 10.0) -> dict:
        return {"held": CANCEL_HELD.wait(timeout)}

    server_app.add_api_route("/gate/entered", entered, methods=["GET"])
    server_app.add_api_route("/gate/release", release, methods=["POST"])
    server_app.add_api_route("/gate/hold-cancel", hold_cancel, methods=["POST"])
    server_app.add_api_route("/gate/cancel-held", cancel_held, methods=["GET"])
    server_app.add_api_route("/gate/release-cancel", release_cancel, methods=["POST"])

    from gradio.data_classes import CancelBody

    (route,) = [r for r in server_app.router.routes if getattr(r, "path", None) == "/cancel"]
    original_cancel = route.endpoint

    async def held_cancel(body: CancelBody) -> dict:
        if HOLD_CANCEL.is_set():
            CANCEL_HELD.set()
            await asyncio.to_thread(CANCEL_RELEASE.wait, GATE_LIMIT)
        return await original_cancel(body)

    server_app.router.routes.remove(route)
    server_app.add_api_route("/cancel", held_cancel, methods=["POST"])


original_build, app.build = app.build, build
original_routes, serving.add_stats_routes = serving.add_stats_routes, add_routes

if __name__ == "__main__":
    app.main()
