"""Everything the adapter keeps for the life of a process, listed in one place, with one reset.

Why a list: process-wide state is invisible where it is used, so it must be visible here, each
entry with what bounds it. Why a reset: tests that change what a Space serves, and a long-lived
process that wants a clean slate, need every cache dropped at once, not the one they remember.
`tests/test_state.py` fails when a module-level cache appears that this list does not name.

The state, where it lives, what it holds, and what bounds it:

- `config_cache._INFO`, `_INFO_LOCKS`, `_FLIGHTS`: each target's config, API info and page; one
  fetch at a time per target; callers waiting for a first fetch. `SPACES_KEPT` targets; a
  flight ends with its fetch.
- `session._GATES`: one gate per session in use. Weak: gone with the last turn using it.
- `session._UNFINISHED`, `_OWN`: the last outputs of streams left unfinished; the events of a
  session this process joined. `UNFINISHED_SESSIONS` x `UNFINISHED_KEPT`; `OWN_SESSIONS`.
- `clients._OPEN`: the clients of turns not ended yet, and its exit hook (threading's, before any
  thread is joined) that cuts their readers. Weak: a client leaves it when its turn's ending closes it.
- `ending._RUNNING`: turn endings running in the background. Each ends within its bounds; the
  interpreter's exit waits `EXIT_GRACE` for them.
- `workers._tasks`, `_unstarted`, the workers and their starter: idle daemon threads (a cache).
  An idle worker ends after `IDLE` s.
- `_gc_internals.tap_supported`, `join_supported`: whether gradio_client's internals are the
  ones the adapter uses. One flag each.
- `target._tls_context`: one verifying TLS context.
- `replica.launcher._LIVE`, its SIGTERM and atexit hooks: replicas this process started, stopped
  at exit or on SIGTERM. Weak; the hooks are installed once.
- `replica.replay.load`: transcripts a replica process replays, read once. 8 files.
- `cli._HARD_EXIT_HOOKS`: what a second Ctrl-C stops before the process exits. One per command.
"""

from __future__ import annotations

from . import _gc_internals as gci
from . import config_cache, ending, session, target
from .replica import replay

# (module, attribute) of every process-wide cache, as the table above lists it.
CACHES: tuple[tuple[str, str], ...] = (
    ("qwen_space_adapter.config_cache", "_INFO"),
    ("qwen_space_adapter.config_cache", "_INFO_LOCKS"),
    ("qwen_space_adapter.config_cache", "_FLIGHTS"),
    ("qwen_space_adapter.session", "_GATES"),
    ("qwen_space_adapter.session", "_UNFINISHED"),
    ("qwen_space_adapter.session", "_OWN"),
    ("qwen_space_adapter.clients", "_OPEN"),
    ("qwen_space_adapter.ending", "_RUNNING"),
    ("qwen_space_adapter.workers", "_tasks"),
    ("qwen_space_adapter.workers", "_unstarted"),
    ("qwen_space_adapter._gc_internals", "tap_supported"),
    ("qwen_space_adapter._gc_internals", "join_supported"),
    ("qwen_space_adapter.target", "_tls_context"),
    ("qwen_space_adapter.replica.launcher", "_LIVE"),
    ("qwen_space_adapter.replica.replay", "load"),
    ("qwen_space_adapter.cli", "_HARD_EXIT_HOOKS"),
)


def reset(timeout: float = 30.0) -> bool:
    """Drop every cache of this process: configs, session memories, capability flags, the TLS
    context. Waits first (up to `timeout` s) for turn endings still running, since they use the
    memories; whether they all ended. Workers and live replicas are left: they are threads and
    processes, not data, and end by themselves."""
    ended = ending.wait_all(timeout)
    config_cache.forget_spaces()
    session.forget_sessions()
    gci.tap_supported.cache_clear()
    gci.join_supported.cache_clear()
    target._tls_context.cache_clear()
    replay.load.cache_clear()
    return ended
