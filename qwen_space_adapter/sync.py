"""The synchronous twins of the async API, for scripts and notebooks.

Each call runs the async stream on an event loop of its own, in a helper thread (an anyio
blocking portal), and hands items back one by one. That works the same outside any event loop
and inside a running one (Jupyter, an async web framework), with no `nest_asyncio` patching of
the caller's loop. Leaving the loop early closes the stream, which cancels the job on the Space.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from anyio.from_thread import start_blocking_portal


def iterate(factory: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
    """Iterate `factory(*args, **kwargs)` (which returns an async iterator) synchronously.

    The factory is called here, in the caller's thread, so bad input raises at the call, before
    any thread or request exists.
    """
    return _drive(factory(*args, **kwargs))


def _drive(stream: Any) -> Iterator[Any]:
    with start_blocking_portal() as portal:
        try:
            while True:
                try:
                    item = portal.call(stream.__anext__)
                except StopAsyncIteration:
                    return
                yield item
        finally:
            portal.call(stream.aclose)
