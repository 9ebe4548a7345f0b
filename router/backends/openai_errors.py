"""Context-window refusals in an OpenAI-style error object `{"error": {"code", "type",
"message"}}`, as an OpenAI-compatible server (a SageMaker container, vLLM, TGI, llama.cpp) sends
it: pure, no I/O, no vendor imports.

By field first: `code` "context_length_exceeded" (OpenAI's code; servers that copy it) or
`type` "exceed_context_size_error" (llama.cpp server, with the window in `n_ctx`). vLLM and TGI
send neither (vLLM: `type` "BadRequestError", `code` 400), so their words are matched by the
small table `CONTEXT_PATTERNS`, each entry citing its source and tested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from router.backends.context_errors import (
    LLAMA_SERVER_CONTEXT_TYPE,
    ContextMatch,
    ContextPattern,
    match_context,
)

CONTEXT_CODE = "context_length_exceeded"

CONTEXT_PATTERNS: tuple[ContextPattern, ...] = (
    # vLLM (and OpenAI's own wording): "This model's maximum context length is 16384 tokens.
    # However, you requested ..." and "'max_tokens' ... is too large: 8192. This model's
    # maximum context length is 8192 tokens and your request has 1210 input tokens"
    # (vllm-project/vllm#20409, opendatalab/MinerU#4868).
    ContextPattern(re.compile(r"maximum context length is (?P<window>\d+) tokens", re.I),
                   "vllm: maximum context length"),
    # vLLM input processor: "The decoder prompt (length 12324) is longer than the maximum
    # model length of 8192." (vLLM's processor ValueError, quoted in user reports).
    ContextPattern(re.compile(r"is longer than the maximum model length of (?P<window>\d+)",
                              re.I),
                   "vllm: prompt longer than max_model_len"),
    # Hugging Face TGI (SageMaker's HF LLM containers): "Input validation error: `inputs`
    # tokens + `max_new_tokens` must be <= 32768. Given: ..." (barun-saha/slide-deck-ai#44).
    ContextPattern(re.compile(r"`inputs` tokens \+ `max_new_tokens` must be <= (?P<window>\d+)",
                              re.I),
                   "tgi: inputs + max_new_tokens over the limit"),
)


@dataclass(frozen=True, slots=True)
class ErrorObject:
    """The fields of an OpenAI-style error that the mapping reads."""

    code: str | None = None  # only a string code: vLLM's integer 400 is no code
    type: str | None = None
    message: str = ""
    n_ctx: int | None = None  # llama.cpp server's window


def error_object(obj: Any) -> ErrorObject:
    """`{"error": {...}}` or a bare `{...}` error -> its fields (empty for any other shape)."""
    inner = obj.get("error") if isinstance(obj, dict) else None
    inner = inner if isinstance(inner, dict) else obj if isinstance(obj, dict) else {}
    code, kind, message, n_ctx = (inner.get("code"), inner.get("type"), inner.get("message"),
                                  inner.get("n_ctx"))
    return ErrorObject(code if isinstance(code, str) else None,
                       kind if isinstance(kind, str) else None,
                       message if isinstance(message, str) else "",
                       n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None)


def context_refusal(err: ErrorObject) -> ContextMatch | None:
    """A context-window refusal: by code, then type, then the text table; None otherwise."""
    if err.code == CONTEXT_CODE:
        return match_context(CONTEXT_PATTERNS, err.message) or ContextMatch(CONTEXT_CODE)
    if err.type == LLAMA_SERVER_CONTEXT_TYPE:
        return ContextMatch(LLAMA_SERVER_CONTEXT_TYPE, err.n_ctx)
    return match_context(CONTEXT_PATTERNS, err.message)
