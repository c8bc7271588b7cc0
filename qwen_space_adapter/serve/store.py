"""Which Space session holds which conversation: a small SQLite table, bounded, optionally on disk.

OpenAI clients send the whole history with every request; the Space keeps it in a session. After
answering, the server files the conversation under the digest of the history as the client will
send it back (the request's messages plus the answer). A request whose earlier messages hash to
a filed digest continues that session. SQLite because it is in the standard library, survives a
restart when given a file (`--sessions FILE`), and does the bounding (oldest used first out) in
one statement. Each operation is one short statement on a local file or in memory, so it runs
inline on the event loop (under a lock, since tests and the benchmark touch it from other threads).

`claim` takes a conversation out while a turn runs on it: a second request with the same history
arriving meanwhile finds nothing and starts a session of its own with that history as context.
Continuing the same session would be wrong for it: by then the Space's session also holds the first
request's question and answer, which the second client never saw.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

from .request import Message

DEFAULT_MAX_ENTRIES = 10_000


def history_key(messages: Sequence[Message]) -> str:
    """The digest of a history: roles, texts and attachments by content (sha256 of canonical JSON)."""
    data = json.dumps([m.canonical() for m in messages], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()


class SessionStore:
    """Conversations (the adapter's `JsonConversation.get_dict()`) by history digest, at most `max_entries`."""

    def __init__(self, path: str = ":memory:", max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.path = path
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS conversations ("
            " key TEXT PRIMARY KEY, conversation TEXT NOT NULL, used REAL NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS conversations_used ON conversations(used)")

    def claim(self, key: str) -> dict[str, Any] | None:
        """Take the conversation filed under `key` out of the store (None if there is none)."""
        with self._lock:
            row = self._db.execute("SELECT conversation FROM conversations WHERE key = ?", (key,)).fetchone()
            if row is not None:  # under the lock, so no other claim sees it in between
                self._db.execute("DELETE FROM conversations WHERE key = ?", (key,))
        if row is None:
            return None
        data: dict[str, Any] = json.loads(row[0])
        return data

    def put(self, key: str, conversation: dict[str, Any]) -> None:
        """File a conversation under `key`, dropping the least recently filed beyond the bound."""
        text = json.dumps(conversation, ensure_ascii=False)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO conversations (key, conversation, used) VALUES (?, ?, ?)",
                    (key, text, time.time()),
                )
                self._db.execute(
                    "DELETE FROM conversations WHERE key IN (SELECT key FROM conversations "
                    "ORDER BY used DESC, rowid DESC LIMIT -1 OFFSET ?)",
                    (self.max_entries,),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM conversations").fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._db.close()


__all__ = ["DEFAULT_MAX_ENTRIES", "SessionStore", "history_key"]
