"""Fixed strings of the Space's answer text and how its errors are quoted, defined once for the
adapter and the replica.

Why a module of its own, with nothing but the standard library: the replica loads it by path inside its own
environment (gradio 4 or 5, none of the adapter's dependencies), and the adapter's delta
tracker reads the same strings, so the two can never drift apart.
"""

from __future__ import annotations

import ast

THINKING = "Qwen is thinking..."
"""The placeholder the Space shows while the model prefills the context."""

SUMMARY_MARKER = "\n<summary>"
"""Where the Space's generation details begin after the answer text."""


def unquote(text: str) -> str:
    """Gradio 4 sends a `gr.Error` message as its `repr()`, quotes included: take them off."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(value, str):
            return value
    return text


__all__ = ["SUMMARY_MARKER", "THINKING", "unquote"]
