"""An answer the Space takes back in its last update (cleared or shortened) is announced with a
`TextRewritten`, and what the caller shows is the answer the conversation records. Real server."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from qwen_space_adapter import Qwen_Qwen_2_5M, TextRewritten
from qwen_space_adapter.deltas import answer_text

pytestmark = pytest.mark.anyio
APPS = Path(__file__).parent / "apps"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(("mode", "final"), [("clear", ""), ("shorten", "This answer")])
async def test_an_answer_taken_back_is_rewritten_for_the_caller(qwen_replica_factory, mode, final, anyio_backend):
    replica = qwen_replica_factory(app=str(APPS / "takes_back.py"), extra_args=["--mode", mode])
    shown, rewrites, conversation = "", [], None
    with anyio.fail_after(60):
        async for item in Qwen_Qwen_2_5M.create_async_generator(
            "", [{"role": "user", "content": "hi"}], space=replica.url, return_conversation=True
        ):
            if isinstance(item, str):
                shown += item
            elif isinstance(item, TextRewritten):
                assert item.previous == shown
                shown = item.text
                rewrites.append(item)
            elif hasattr(item, "get_dict"):
                conversation = item
    assert rewrites and rewrites[-1].previous.startswith("This answer will")
    assert shown == final
    assert conversation is not None and (answer_text(conversation.chatbot) or "") == final
