"""Ollama's context-window refusals, recognised for `ollama.py` (pure, no I/O).

Every request sets `truncate: false` (`ollama_wire.py`): without it Ollama (0.12.5+, the field
of `ChatRequest` in api/types.go) drops the oldest messages, or the runner cuts the prompt, to
fit the loaded `num_ctx` and answers a cut prompt as if whole. With it a prompt over the window
is refused before any output, as HTTP 400 `{"error": "<text>"}` (server/routes.go
`streamResponse`/`writeChatResponse` pass the runner's `api.StatusError` status and message on).

Ollama has no error code field, so the recognition is:
1. structured first: since Ollama runs GGML models on llama-server (ollama/ollama 9db4bdbad,
   2026-05), the error string is llama-server's own JSON error body relayed verbatim
   (llm/llama_server.go `statusErrorMessage`); its `error.type` `exceed_context_size_error`
   is the signal and `error.n_ctx` the window;
2. the text table `CONTEXT_PATTERNS` below, for the releases and runners that send words only.

Also its queue-full refusal (`BUSY_PATTERNS`, `is_busy`): a 503 that says the server's own
queue is full is load, not ill health, so `ollama.py` maps it to `BackendRateLimited` (which
never counts toward a local backend's breaker) instead of `BackendUnavailable`.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from router.backends.context_errors import (
    LLAMA_SERVER_CONTEXT_TYPE,
    ContextMatch,
    ContextPattern,
    match_context,
)

CONTEXT_PATTERNS: tuple[ContextPattern, ...] = (
    # runner/ollamarunner/runner.go and runner/llamarunner/runner.go `errorInputTooLong`
    # (Ollama 0.12.5 until the llama-server switch): NewSequence with truncate false and more
    # input tokens than num_ctx; the runner answers 400 with this text, Ollama relays it.
    ContextPattern(re.compile(r"input length exceeds the context length", re.I),
                   "runner: prompt over num_ctx with truncate false"),
    # llm/llama_server.go `completionPromptForRequest`: a prompt over num_ctx on a runner
    # without context shift, 400 (the path with truncation on; kept for hosts that ignore
    # the field).
    ContextPattern(re.compile(r"prompt is longer than the context length currently available",
                              re.I),
                   "llama-server runner: prompt over num_ctx, no context shift"),
    # llama.cpp tools/server: `request (N tokens) exceeds the available context size
    # (M tokens)` or `the request exceeds the available context size, try increasing it`,
    # when the relayed body is not the JSON object read structurally.
    ContextPattern(re.compile(r"exceeds the available context size"
                              r"(?: \((?P<window>\d+) tokens\))?", re.I),
                   "llama-server: prompt over n_ctx"),
    # x/mlxrunner/pipeline.go: `input length (N tokens) exceeds the model's maximum context
    # length (M tokens)` (MLX models, which never truncate).
    ContextPattern(re.compile(r"exceeds the model's maximum context length"
                              r"(?: \((?P<window>\d+) tokens\))?", re.I),
                   "mlx runner: prompt over the model's context length"),
)


BUSY_PATTERNS: tuple[re.Pattern[str], ...] = (
    # server/sched.go `ErrMaxQueue` ("server busy, please try again.  maximum pending requests
    # exceeded"): more than OLLAMA_MAX_QUEUE requests pending; server/routes.go answers it 503.
    re.compile(r"maximum pending requests exceeded", re.I),
    # The same error's first words, for a body cut short (the raw-text fallback keeps 200 bytes).
    re.compile(r"server busy, please try again", re.I),
)


def is_busy(status: int, text: str) -> bool:
    """Ollama's 503 for a full request queue (OLLAMA_MAX_QUEUE), by its text."""
    return status == 503 and any(p.search(text) for p in BUSY_PATTERNS)


def _llama_server_error(text: str) -> dict[str, Any] | None:
    """llama-server's `{"error": {...}}` body, when the error string is one."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        obj = orjson.loads(text[start:])
    except orjson.JSONDecodeError:
        return None
    inner = obj.get("error") if isinstance(obj, dict) else None
    return inner if isinstance(inner, dict) else None


def context_refusal(text: str) -> ContextMatch | None:
    """A context-window refusal in Ollama's error string, or None."""
    inner = _llama_server_error(text)
    if inner is not None and inner.get("type") == LLAMA_SERVER_CONTEXT_TYPE:
        n_ctx = inner.get("n_ctx")
        return ContextMatch("llama-server: exceed_context_size_error",
                            n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None)
    return match_context(CONTEXT_PATTERNS, text)
