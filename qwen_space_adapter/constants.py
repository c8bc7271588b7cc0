"""Every default, limit and exit code of the adapter, defined once.

Why one module: the same number written in two places drifts (a CLI default that differs from
the API's, a README that quotes a limit the code no longer has). Modules import what they use
from here; the docs quote these names. Internal bounds that only one module reasons about (how
long an ending waits for a reader, say) stay next to that reasoning.
"""

from __future__ import annotations

# The Space.
DEFAULT_SPACE_ID = "Qwen/Qwen2.5-1M-Demo"
DEFAULT_SPACE_URL = "https://qwen-qwen2-5-1m-demo.hf.space"
DEFAULT_MODEL = "qwen-2.5-1m-demo"  # the provider's one model
MODEL_ALIASES = {"qwen-2.5-1m": DEFAULT_MODEL}
CLI_MODEL = "qwen-2.5-1m"  # the name the CLIs and the harness send (an alias of DEFAULT_MODEL)

# Deadlines (seconds) and retries: the defaults of `create_async_generator`'s options.
DEFAULT_FIRST_TOKEN_TIMEOUT = 600.0  # a 1M-token prefill takes minutes on the live Space
DEFAULT_IDLE_TIMEOUT = 120.0
DEFAULT_CONNECT_TIMEOUT = 30.0  # every plain request (config, join, upload...) in total
DEFAULT_MAX_RETRIES = 2
DEFAULT_RETRY_BACKOFF = 0.5

# Limits: refused before anything is sent (or, for an update, as it arrives).
MAX_SECONDS = 24 * 60 * 60.0  # the longest deadline an option takes
MAX_RETRIES = 10
MAX_RETRY_BACKOFF = 60.0
MAX_FILE_BYTES = 16 * 1024 * 1024  # one attachment
MAX_UPDATE_BYTES = 32 * 1024 * 1024  # one server message (gradio_client's reader is quadratic past it)

# Exit codes of `qwen-space` and `qwen-space-harness`.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
