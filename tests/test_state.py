"""The process-wide state is listed in one place (`state.py`), and `state.reset()` drops it.

A cache that is not listed is one a newcomer cannot find and a test cannot reset: the scan
below fails when a module-level container or memoised function appears that `state.CACHES`
does not name.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from qwen_space_adapter import Qwen_Qwen_2_5M, config_cache, session, state
from qwen_space_adapter import _gc_internals as gci

PACKAGE = Path(__file__).resolve().parent.parent / "qwen_space_adapter"
EMPTY_CALLS = {
    "set",
    "dict",
    "list",
    "WeakValueDictionary",
    "WeakSet",
    "WeakKeyDictionary",
    "SimpleQueue",
    "Queue",
    "deque",
    "OrderedDict",
    "defaultdict",
}


def _module_caches() -> set[tuple[str, str]]:
    """(module, name) of every module-level empty container and memoised function."""
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign | ast.AnnAssign):
                value = node.value
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                literal = isinstance(value, ast.Dict | ast.List | ast.Set) and not (
                    value.keys if isinstance(value, ast.Dict) else value.elts
                )
                call = (
                    isinstance(value, ast.Call)
                    and not value.args
                    and (getattr(value.func, "attr", None) or getattr(value.func, "id", None)) in EMPTY_CALLS
                )
                if literal or call:
                    found |= {(module, ast.unparse(t)) for t in targets}
            elif isinstance(node, ast.FunctionDef) and any("cache" in ast.unparse(d) for d in node.decorator_list):
                found.add((module, node.name))
    return found


def test_every_process_wide_cache_is_listed():
    unlisted = _module_caches() - set(state.CACHES)
    assert not unlisted, f"process-wide state missing from qwen_space_adapter/state.py: {sorted(unlisted)}"


def test_every_listed_cache_exists_and_is_documented():
    doc = state.__doc__ or ""
    for module, name in state.CACHES:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name} is listed but gone"
        short = module.removeprefix("qwen_space_adapter.")
        assert name in doc and short in doc, f"{module}.{name} is not described in state.py's docstring"


@pytest.mark.anyio
async def test_reset_drops_what_a_conversation_left(qwen_replica):
    url = qwen_replica.url
    conv = None
    async for item in Qwen_Qwen_2_5M.create_async_generator(
        "qwen-2.5-1m", [{"role": "user", "content": "hello"}], space=url, return_conversation=True
    ):
        if not isinstance(item, str) and hasattr(item, "session_hash"):
            conv = item
    assert conv is not None
    assert config_cache._INFO and gci.tap_supported.cache_info().currsize
    assert session._OWN  # the turn's events are remembered as this process's own

    assert state.reset()
    assert not config_cache._INFO and not config_cache._INFO_LOCKS
    assert not session._OWN and not session._UNFINISHED
    assert gci.tap_supported.cache_info().currsize == 0
    # Nothing is lost: the conversation continues after the reset (its config fetched again).
    text = ""
    async for item in Qwen_Qwen_2_5M.create_async_generator(
        "qwen-2.5-1m", [{"role": "user", "content": "again"}], space=url, conversation=conv
    ):
        if isinstance(item, str):
            text += item
    assert "again" in text
