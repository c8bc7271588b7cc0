"""The Space session of a conversation: one turn at a time on it, and what this process
remembers of its streams.

Gradio delivers a session's messages to whichever reader of that session asks first, so two
readers on one session steal each other's messages: `SessionGate` lets one turn run per session
at a time, and the turn's ending (`ending.py`) ends its reader before the gate opens for the
next turn. The session's memory: the events this process joined (`own_events`: any other live
event of the session is another client using it) and the last outputs of streams that ended
unfinished, and of unqueued generator steps, whose streams Gradio 4 never ends
(`unfinished_bases`: Gradio 4 may send a later stream's first update, or a later unqueued
step's result, as a diff against one of them). The config cache is `config_cache.py`, a
turn's client `clients.py`.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from .workers import Channel


class SessionGate:
    """One turn at a time on a Space session in this process, across tasks, threads and loops.

    A second turn on the same conversation waits here until the first is over, reader included;
    waiting is cancellable and bounded by the caller's deadlines.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = False
        self._waiters: list[Channel] = []

    async def acquire(self) -> None:
        while True:
            with self._lock:
                if not self._busy:
                    self._busy = True
                    return
                channel = Channel()
                self._waiters.append(channel)
            try:
                await channel.drain()
            finally:
                with self._lock:
                    if channel in self._waiters:
                        self._waiters.remove(channel)

    def release(self) -> None:
        with self._lock:
            self._busy = False
            waiters, self._waiters = self._waiters, []
        for channel in waiters:
            channel.put(None)


_GATES: weakref.WeakValueDictionary[tuple[str, str], SessionGate] = weakref.WeakValueDictionary()
_GATES_GUARD = threading.Lock()


def gate(url: str, session_hash: str) -> SessionGate:
    """The gate of one session of one Space (shared by every copy of the conversation)."""
    with _GATES_GUARD:
        found = _GATES.get((url, session_hash))
        if found is None:
            found = _GATES[(url, session_hash)] = SessionGate()
        return found


_UNFINISHED: dict[tuple[str, str], list[list[Any]]] = {}
_UNFINISHED_GUARD = threading.Lock()
UNFINISHED_KEPT = 6  # per session (a stopped turn leaves two); older ones are unlikely to be reused
UNFINISHED_SESSIONS = 1024


_OWN: dict[tuple[str, str], set[str]] = {}
OWN_SESSIONS = 4096


def own_events(url: str, session_hash: str) -> set[str]:
    """The ids of this session's events that this process joined (a live set, for the follower
    to add to): an event of the session not among them belongs to another client."""
    with _UNFINISHED_GUARD:
        key = (url, session_hash)
        found = _OWN.pop(key, None)
        if found is None:
            found = set()
        elif len(found) > 256:
            found.clear()  # only the session's recent events can still send anything
        _OWN[key] = found
        while len(_OWN) > OWN_SESSIONS:
            _OWN.pop(next(iter(_OWN)))
        return found


def unfinished_bases(url: str, session_hash: str) -> list[list[Any]]:
    """The last outputs of this session's streams that ended unfinished, newest first."""
    with _UNFINISHED_GUARD:
        return list(_UNFINISHED.get((url, session_hash), []))


def remember_unfinished(url: str, session_hash: str, outputs: list[Any] | None) -> None:
    """Keep the last outputs of a stream that the Space never ended (failed, left, or an
    unqueued generator's first yield): see `JobFollower._rebase`."""
    if outputs is None:
        return
    with _UNFINISHED_GUARD:
        kept = _UNFINISHED.pop((url, session_hash), [])
        _UNFINISHED[(url, session_hash)] = [list(outputs), *kept][:UNFINISHED_KEPT]
        while len(_UNFINISHED) > UNFINISHED_SESSIONS:
            _UNFINISHED.pop(next(iter(_UNFINISHED)))


def forget_sessions() -> None:
    """Drop what this process remembers of its sessions' streams (`state.reset`)."""
    with _UNFINISHED_GUARD:
        _UNFINISHED.clear()
        _OWN.clear()
