"""The shape of a backend's table of context-window refusals that a vendor signals only in text.

A backend maps errors by exception type, error code or error type first; only where the vendor
says "the prompt does not fit the window" in words alone does it keep a small module-level
table of `ContextPattern`s (each with a comment citing where the text comes from, and a test)
and call `match_context` on the message. A pattern may name a group `window` (the refusing
backend's window in tokens, when the text says it). Pure: no I/O, no vendor imports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# llama-server's JSON error `type` for a prompt over n_ctx (Ollama relays it; OpenAI-style
# servers built on llama.cpp send it too), read structurally before any text table.
LLAMA_SERVER_CONTEXT_TYPE = "exceed_context_size_error"


@dataclass(frozen=True, slots=True)
class ContextPattern:
    pattern: re.Pattern[str]
    meaning: str  # what the vendor means, in words (for the docs and test ids)


@dataclass(frozen=True, slots=True)
class ContextMatch:
    meaning: str
    window: int | None = None  # the refusing backend's window, when the text names it


def window_of(m: re.Match[str]) -> int | None:
    """The `window` group of a match as an int, or None when absent or not a number."""
    value = m.groupdict().get("window")
    return int(value) if value and value.isdigit() else None


def match_context(table: tuple[ContextPattern, ...], text: str) -> ContextMatch | None:
    """The first entry of `table` found in `text`, or None."""
    for entry in table:
        m = entry.pattern.search(text)
        if m is not None:
            return ContextMatch(entry.meaning, window_of(m))
    return None


def window_note(window: int | None) -> str:
    """A suffix for the error message naming the refusing window, when known."""
    return f" (window {window} tokens)" if window else ""
