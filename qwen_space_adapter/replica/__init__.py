"""A local replica of the Qwen2.5-1M-Demo Space, on the Space's own stack, for offline tests.

`Replica` starts it (in an environment of its own, built once per flavor and Python, cached) and
stops it with everything it spawned. Flavors (`flavors.py`): the hand-made app shaped like the
live Space (`app.py`, default), or the Qwen team's real UI, Qwen-Agent's `WebUI` from PyPI
(`qwen_app.py`), on Gradio 4 (release 0.0.11) or Gradio 5 (0.0.12 to 0.0.34), or Gradio 6's own
`gr.ChatInterface` (`gradio6_app.py`). All answer with the same deterministic model (`model.py`).
"""

from .env import ensure_env
from .flavors import Flavor, flavor
from .launcher import Replica, ReplicaSettings

__all__ = ["Flavor", "Replica", "ReplicaSettings", "ensure_env", "flavor"]
