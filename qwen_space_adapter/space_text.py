"""Fixed strings of the Space's answer text, defined once for the adapter and the replica.

Why a module of its own, with no imports: the replica loads it by path inside its own
environment (gradio 4 or 5, none of the adapter's dependencies), and the adapter's delta
tracker reads the same strings, so the two can never drift apart.
"""

from __future__ import annotations

THINKING = "Qwen is thinking..."
"""The placeholder the Space shows while the model prefills the context."""

SUMMARY_MARKER = "\n<summary>"
"""Where the Space's generation details begin after the answer text."""

__all__ = ["SUMMARY_MARKER", "THINKING"]
