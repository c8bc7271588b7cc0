"""A local replica of the Qwen2.5-1M-Demo Space on the Space's own stack, for offline tests.

`Replica` starts it (in an environment of its own, built once and cached) and stops it with
everything it spawned. See `app.py` for what it imitates and `model.py` for how it answers.
"""

from .env import ensure_env
from .launcher import Replica, ReplicaSettings

__all__ = ["Replica", "ReplicaSettings", "ensure_env"]
