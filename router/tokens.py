"""Prompt-size estimate used for context-window routing.

No gpt-oss tokenizer ships offline here (o200k_harmony needs a download), so the estimate is
an approximation that errs on the large side: one token per 3 characters of text (English with
o200k averages about 4), plus 4 tokens of framing per message, plus the tool schemas. Over-
estimating sends a borderline prompt to a larger window; under-estimating would let Ollama
truncate it silently, which is the failure this check exists to prevent.

Tool schemas are client data of any shape: their size is counted by an iterative walk (never
recursion, never `str()` of the whole tree), at least as large as their JSON text.
"""

from __future__ import annotations

from typing import Any

from router.types import ChatRequest

CHARS_PER_TOKEN = 3
PER_MESSAGE = 4


def estimate_prompt_tokens(request: ChatRequest) -> int:
    chars = 0
    n = 0
    for m in request.messages:
        n += 1
        if m.content:
            chars += len(m.content)
        if m.reasoning:
            chars += len(m.reasoning)
        if m.tool_calls:
            for tc in m.tool_calls:
                chars += len(tc.function.name) + len(tc.function.arguments)
    if request.tools:
        for t in request.tools:
            chars += len(t.function.name) + len(t.function.description or "")
            if t.function.parameters:
                chars += json_chars(t.function.parameters)
    return chars // CHARS_PER_TOKEN + PER_MESSAGE * n + 3


def json_chars(value: Any) -> int:
    """An upper bound of the length of `value` as compact JSON, computed without recursion.

    Strings count their length plus quotes (escapes can only make the real text longer than
    the characters the model reads); every container, key and separator counts its punctuation.
    """
    total = 0
    stack: list[Any] = [value]
    pop, push = stack.pop, stack.append
    while stack:
        node = pop()
        if isinstance(node, str):
            total += len(node) + 2
        elif isinstance(node, dict):
            total += 2 + 2 * len(node)  # braces, one ':' and one ',' per item
            for k, v in node.items():
                total += len(str(k)) + 2
                push(v)
        elif isinstance(node, list | tuple):
            total += 2 + 2 * len(node)  # brackets and a separator per item
            for v in node:
                push(v)
        else:
            total += len(str(node)) if node is not None else 4
    return total
