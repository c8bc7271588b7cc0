"""`qwen-space serve`: the Space as an OpenAI-compatible HTTP API, with real streaming and sessions.

Modules, one job each: `request` (parse and check a chat request), `store` (which Space session
holds which conversation, in SQLite), `turns` (one answer: pick the session, run the adapter,
file the result), `chunks` (adapter items to OpenAI chunks), `errors` (adapter errors to HTTP
statuses), `app` (the ASGI app), `server` (uvicorn, signals, a background server for tests),
`command` (the CLI subcommand). Only `server` needs uvicorn (the `serve` extra).
See docs/serving.md.
"""

from .app import ServeApp
from .store import SessionStore
from .turns import Context

__all__ = ["Context", "ServeApp", "SessionStore"]
