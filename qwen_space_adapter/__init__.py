"""qwen_space_adapter: the Qwen2.5-1M-Demo Hugging Face Space as an async stream of text deltas.

    async for item in Qwen_Qwen_2_5M.create_async_generator("qwen-2.5-1m", messages):
        print(item, end="")

See the README and the docs site (docs/) for conversations, attachments, errors, the CLI and the
local replica.
"""

from .conversation import JsonConversation, generate_session_hash
from .errors import (
    AdapterBugError,
    APIChangedError,
    ConversationInUseError,
    InvalidRequestError,
    ModelNotSupportedError,
    QueueFullError,
    QwenSpaceError,
    RateLimitedError,
    ReplicaError,
    SpaceAppError,
    SpaceRestartedError,
    SpaceTimeoutError,
    SpaceUnavailableError,
    StreamInterruptedError,
)
from .events import QueueStatus, Reasoning, StreamEvent, Summary, TextRewritten
from .provider import Qwen_Qwen_2_5M

__version__ = "0.2.0"  # the one source: pyproject.toml reads it (setuptools dynamic)

__all__ = [
    "APIChangedError",
    "AdapterBugError",
    "ConversationInUseError",
    "InvalidRequestError",
    "JsonConversation",
    "ModelNotSupportedError",
    "QueueFullError",
    "QueueStatus",
    "QwenSpaceError",
    "Qwen_Qwen_2_5M",
    "RateLimitedError",
    "Reasoning",
    "ReplicaError",
    "SpaceAppError",
    "SpaceRestartedError",
    "SpaceTimeoutError",
    "SpaceUnavailableError",
    "StreamEvent",
    "StreamInterruptedError",
    "Summary",
    "TextRewritten",
    "generate_session_hash",
]
