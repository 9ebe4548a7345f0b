"""Prompt-size estimate used for context-window routing.

No gpt-oss tokenizer ships offline here (o200k_harmony needs a download), so the estimate is
an approximation that errs on the large side: one token per 3 characters of text (English with
o200k averages about 4), plus 4 tokens of framing per message, plus the tool schemas. Over-
estimating sends a borderline prompt to a larger window; under-estimating would let Ollama
truncate it silently, which is the failure this check exists to prevent.
"""

from __future__ import annotations

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
                chars += len(str(t.function.parameters))
    return chars // CHARS_PER_TOKEN + PER_MESSAGE * n + 3
