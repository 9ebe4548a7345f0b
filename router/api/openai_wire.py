"""Encode router results as OpenAI Chat Completions JSON and SSE chunks (orjson, no validation).

The surface speaks one dialect whatever served the request: reasoning as `message.reasoning`
/ `delta.reasoning`, tool calls with string `arguments`, `usage`, `finish_reason`, and `model`
naming the model that served it, as its backend names it. Usage the router estimated (the
upstream reported none) carries `"estimated": true`; usage is never a block of zeros.
"""

from __future__ import annotations

from typing import Any

import orjson

from router.types import ChatResult, StreamEvent, ToolCall, Usage

DONE = b"data: [DONE]\n\n"


def usage_dict(u: Usage) -> dict[str, Any]:
    d: dict[str, Any] = {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }
    if u.reasoning_tokens is not None:
        d["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    if u.estimated:
        d["estimated"] = True
    return d


def _tool_call(tc: ToolCall, index: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": tc.id,
        "type": "function",
        "function": {"name": tc.function.name, "arguments": tc.function.arguments},
    }
    if index is not None:
        d["index"] = index
    return d


def completion_body(result: ChatResult, *, completion_id: str, created: int, model: str) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": result.content}
    if result.reasoning:
        message["reasoning"] = result.reasoning
    if result.tool_calls:
        message["tool_calls"] = [_tool_call(tc) for tc in result.tool_calls]
        if not result.content:
            message["content"] = None
    elif message["content"] is None:
        message["content"] = ""
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_hybrid_router",
        "choices": [
            {"index": 0, "message": message, "logprobs": None,
             "finish_reason": result.finish_reason}
        ],
        "usage": usage_dict(result.usage),
    }
    return orjson.dumps(body)


class ChunkEncoder:
    """Turns StreamEvents into `data: {chunk}` SSE lines for one response."""

    def __init__(self, *, completion_id: str, created: int, model: str, include_usage: bool):
        self._prefix = (
            b'data: {"id":' + orjson.dumps(completion_id)
            + b',"object":"chat.completion.chunk","created":' + str(created).encode()
            + b',"model":' + orjson.dumps(model)
            + b',"system_fingerprint":"fp_hybrid_router","choices":'
        )
        self.include_usage = include_usage
        self._tool_index = 0
        self._started = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._prefix + orjson.dumps([choice]) + b"}\n\n"

    def encode(self, ev: StreamEvent) -> bytes:
        out = []
        if not self._started:
            self._started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        if ev.reasoning:
            out.append(self._chunk({"reasoning": ev.reasoning}))
        if ev.content:
            out.append(self._chunk({"content": ev.content}))
        if ev.tool_calls:
            calls = []
            for tc in ev.tool_calls:
                calls.append(_tool_call(tc, self._tool_index))
                self._tool_index += 1
            out.append(self._chunk({"tool_calls": calls}))
        if ev.finish_reason is not None:
            finish = "tool_calls" if self._tool_index and ev.finish_reason == "stop" else (
                ev.finish_reason)
            out.append(self._chunk({}, finish))
            if self.include_usage and ev.usage is not None:  # never zeros for "unknown"
                out.append(self._prefix + b"[],\"usage\":" + orjson.dumps(usage_dict(ev.usage))
                           + b"}\n\n")
            out.append(DONE)
        return b"".join(out)


def error_event(body: dict[str, Any]) -> bytes:
    """The in-band error that ends a broken stream (no [DONE] follows)."""
    return b"data: " + orjson.dumps(body) + b"\n\n"
