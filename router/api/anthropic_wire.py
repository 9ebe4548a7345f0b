"""Encode router results as Anthropic Messages JSON, SSE events and errors (orjson).

- `message_body`: `{id: "msg_...", type: "message", role: "assistant", model, content,
  stop_reason, stop_sequence, usage}`; content is a `thinking` block (gpt-oss's reasoning,
  `signature: ""`), then a `text` block, then `tool_use` blocks (`id` "toolu_...", `input` an
  object).
- `EventEncoder`: `message_start` (empty content, the estimated input tokens), `ping`, then per
  block `content_block_start` / `content_block_delta` (`thinking_delta`, `text_delta`,
  `input_json_delta`) / `content_block_stop` with its `index`, then `message_delta`
  (`stop_reason`, `stop_sequence`, usage) and `message_stop`. A stream that breaks after it
  started ends with `stream_error` (an `error` event) and no `message_stop`.
- `error_status_and_body`: `{"type": "error", "error": {"type", "message"}, "request_id"}`,
  the Anthropic error type chosen by status. The router's 503 (no capacity a request may use)
  stays a 503 with type `overloaded_error` (Anthropic's own overload status is 529, which
  generic HTTP clients and proxies do not know; the SDK retries both).

Stop reasons: `length` -> `max_tokens`, tool calls -> `tool_use`, `content_filter` ->
`refusal`, anything else `end_turn`. No backend reports which stop sequence matched, so
`stop_sequence` is always null and a stop sequence ends the turn as `end_turn`.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

from router.errors import RouterError
from router.types import ChatResult, StreamEvent, ToolCall, Usage

TOOL_ID_PREFIX = "toolu_"
_TOOL_ID_OK = re.compile(r"[A-Za-z0-9_-]{1,64}")

# Anthropic error types by HTTP status (anything else: api_error).
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 415: "invalid_request_error",
    429: "rate_limit_error", 500: "api_error", 502: "api_error", 503: "overloaded_error",
    504: "timeout_error", 529: "overloaded_error",
}


def tool_use_id(call_id: str) -> str:
    """A backend's tool-call id as an Anthropic `toolu_` id (stable: the same id maps the
    same way, so a conversation's tool_use and tool_result ids keep matching)."""
    if call_id.startswith(TOOL_ID_PREFIX) and _TOOL_ID_OK.fullmatch(call_id):
        return call_id
    candidate = TOOL_ID_PREFIX + call_id
    if _TOOL_ID_OK.fullmatch(candidate):
        return candidate
    return TOOL_ID_PREFIX + hashlib.sha256(call_id.encode()).hexdigest()[:24]


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's JSON arguments as the object Anthropic's `input` must be."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"_value": value}


def stop_reason(finish_reason: str | None, saw_tools: bool) -> str:
    if finish_reason == "length":
        return "max_tokens"
    if finish_reason == "tool_calls" or saw_tools:
        return "tool_use"
    if finish_reason == "content_filter":
        return "refusal"
    return "end_turn"


def usage_dict(u: Usage, input_tokens: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "input_tokens": u.prompt_tokens if input_tokens is None else input_tokens,
        "output_tokens": u.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    if u.reasoning_tokens is not None:
        d["output_tokens_details"] = {"thinking_tokens": u.reasoning_tokens}
    if u.estimated:
        d["estimated"] = True  # the router's estimate: the upstream reported no usage
    return d


def _tool_block(tc: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_use_id(tc.id), "name": tc.function.name,
            "input": tool_input(tc.function.arguments)}


def message_body(result: ChatResult, *, message_id: str, model: str) -> bytes:
    content: list[dict[str, Any]] = []
    if result.reasoning:
        content.append({"type": "thinking", "thinking": result.reasoning, "signature": ""})
    if result.content:
        content.append({"type": "text", "text": result.content})
    content.extend(_tool_block(tc) for tc in result.tool_calls)
    body = {
        "id": message_id, "type": "message", "role": "assistant", "model": model,
        "content": content,
        "stop_reason": stop_reason(result.finish_reason, bool(result.tool_calls)),
        "stop_sequence": None,
        "usage": usage_dict(result.usage),
    }
    return orjson.dumps(body)


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class EventEncoder:
    """Turns StreamEvents into Anthropic SSE events for one message."""

    def __init__(self, *, message_id: str, model: str, input_tokens: int) -> None:
        self.message_id = message_id
        self.model = model
        self.input_tokens = input_tokens
        self._started = False
        self._index = -1  # the current block's index
        self._open: str | None = None  # "thinking" or "text" while such a block is open
        self._saw_tools = False

    def _start(self) -> bytes:
        message: dict[str, Any] = {"id": self.message_id, "type": "message", "role": "assistant",
                                   "model": self.model, "content": [], "stop_reason": None,
                                   "stop_sequence": None,
                                   "usage": usage_dict(Usage(), input_tokens=self.input_tokens)}
        return (sse("message_start", {"type": "message_start", "message": message})
                + sse("ping", {"type": "ping"}))

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _delta(self, kind: str, delta: dict[str, Any]) -> bytes:
        out = b""
        if self._open != kind:
            out = self._close()
            self._index += 1
            self._open = kind
            block: dict[str, Any] = ({"type": "thinking", "thinking": "", "signature": ""}
                                     if kind == "thinking" else {"type": "text", "text": ""})
            out += sse("content_block_start", {"type": "content_block_start",
                                               "index": self._index, "content_block": block})
        return out + sse("content_block_delta", {"type": "content_block_delta",
                                                 "index": self._index, "delta": delta})

    def _tool(self, tc: ToolCall) -> bytes:
        out = self._close()
        self._index += 1
        self._saw_tools = True
        block = {"type": "tool_use", "id": tool_use_id(tc.id), "name": tc.function.name,
                 "input": {}}
        partial = orjson.dumps(tool_input(tc.function.arguments)).decode()
        i = self._index
        return (out
                + sse("content_block_start", {"type": "content_block_start", "index": i,
                                              "content_block": block})
                + sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                              "delta": {"type": "input_json_delta",
                                                        "partial_json": partial}})
                + sse("content_block_stop", {"type": "content_block_stop", "index": i}))

    def encode(self, ev: StreamEvent) -> bytes:
        out: list[bytes] = []
        if not self._started:
            self._started = True
            out.append(self._start())
        if ev.reasoning:
            out.append(self._delta("thinking", {"type": "thinking_delta",
                                                "thinking": ev.reasoning}))
        if ev.content:
            out.append(self._delta("text", {"type": "text_delta", "text": ev.content}))
        for tc in ev.tool_calls or ():
            out.append(self._tool(tc))
        if ev.finish_reason is not None:
            out.append(self._close())
            usage = usage_dict(ev.usage or Usage())
            if not usage["input_tokens"]:  # unknown: keep message_start's estimate
                del usage["input_tokens"]
            out.append(sse("message_delta", {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(ev.finish_reason, self._saw_tools),
                          "stop_sequence": None},
                "usage": usage}))
            out.append(sse("message_stop", {"type": "message_stop"}))
        return b"".join(out)


def error_body(kind: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return body


def error_status_and_body(exc: RouterError, request_id: str | None) -> tuple[int, bytes]:
    kind = ERROR_TYPES.get(exc.status, "api_error")
    return exc.status, orjson.dumps(error_body(kind, exc.message, request_id))


def stream_error(message: str, request_id: str | None = None) -> bytes:
    """The in-band `error` event that ends a broken stream (no message_stop follows)."""
    return sse("error", error_body("api_error", message, request_id))
