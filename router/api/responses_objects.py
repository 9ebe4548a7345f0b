"""Encode router results as OpenAI Responses API objects (plain dicts; orjson serialises them).

`output_items(result)` gives a non-streamed answer's output in order: one `reasoning` item
(gpt-oss's reasoning as `reasoning_text` content, `summary` empty), one assistant `message`
with `output_text` (left out when the turn is only tool calls), then one `function_call` item
per tool call (`call_id` is the tool call's id, `arguments` a JSON string).
`response_object(...)` wraps output and usage in the Response object, with the request fields
the SDKs read back (`tools`, `tool_choice`, `text`, `reasoning`, ...). `status` comes from the
finish reason: `length` is `incomplete` with reason `max_output_tokens`, `content_filter`
`incomplete` with reason `content_filter`, anything else `completed`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from router.ids import new_id
from router.types import ChatResult, ToolCall, Usage

__all__ = ["Status", "function_call_item", "message_item", "output_items", "reasoning_item",
           "reasoning_text_of", "response_object", "status_for", "usage_object"]


class Status(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    INCOMPLETE = "incomplete"
    FAILED = "failed"


_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def status_for(finish_reason: str | None) -> tuple[Status, dict[str, str] | None]:
    reason = _INCOMPLETE.get(finish_reason or "")
    if reason is not None:
        return Status.INCOMPLETE, {"reason": reason}
    return Status.COMPLETED, None


def reasoning_item(text: str, item_id: str | None = None) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if text else []
    return {"type": "reasoning", "id": item_id or new_id("rs"), "summary": [],
            "content": content}


def message_item(text: str, status: Status = Status.COMPLETED, item_id: str | None = None
                 ) -> dict[str, Any]:
    return {"type": "message", "id": item_id or new_id("msg"), "status": status.value,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [],
                         "logprobs": []}]}


def function_call_item(call: ToolCall, item_id: str | None = None,
                       status: Status = Status.COMPLETED) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id or new_id("fc"), "call_id": call.id,
            "name": call.function.name, "arguments": call.function.arguments,
            "status": status.value}


def output_items(result: ChatResult) -> list[dict[str, Any]]:
    status, _ = status_for(result.finish_reason)
    items: list[dict[str, Any]] = []
    if result.reasoning:
        items.append(reasoning_item(result.reasoning))
    if result.content or not result.tool_calls:
        items.append(message_item(result.content or "", status))
    items.extend(function_call_item(tc) for tc in result.tool_calls)
    return items


def usage_object(usage: Usage | None, reasoning_text: str = "") -> dict[str, Any] | None:
    """The Response's `usage` (None when unknown, never zeros); a router estimate is marked
    `"estimated": true`."""
    if usage is None:
        return None
    u = usage
    reasoning = u.reasoning_tokens
    if reasoning is None:
        # Not reported separately by this backend: estimated at about 4 characters a token.
        reasoning = min(u.completion_tokens, (len(reasoning_text) + 3) // 4)
    out: dict[str, Any] = {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": u.prompt_tokens + u.completion_tokens}
    if u.estimated:
        out["estimated"] = True
    return out


def response_object(*, response_id: str, created_at: int, model: str, status: Status,
                    output: list[dict[str, Any]], echo: dict[str, Any],
                    instructions: str | None, previous_response_id: str | None, store: bool,
                    usage: dict[str, Any] | None = None,
                    incomplete_details: dict[str, str] | None = None,
                    error: dict[str, Any] | None = None,
                    completed_at: int | None = None) -> dict[str, Any]:
    return {
        "id": response_id, "object": "response", "created_at": created_at,
        "status": status.value, "background": False, "error": error,
        "incomplete_details": incomplete_details, "instructions": instructions,
        "max_output_tokens": echo.get("max_output_tokens"), "max_tool_calls": None,
        "model": model, "output": output,
        "parallel_tool_calls": echo.get("parallel_tool_calls", True),
        "previous_response_id": previous_response_id,
        "reasoning": echo.get("reasoning") or {"effort": None, "summary": None},
        "service_tier": "default", "store": store,
        "temperature": echo.get("temperature"),
        "text": echo.get("text") or {"format": {"type": "text"}},
        "tool_choice": echo.get("tool_choice", "auto"), "tools": echo.get("tools") or [],
        "top_logprobs": 0, "top_p": echo.get("top_p"), "truncation": "disabled",
        "usage": usage, "user": echo.get("user"), "metadata": echo.get("metadata") or {},
        "completed_at": completed_at,
    }


def reasoning_text_of(output: list[dict[str, Any]]) -> str:
    """The reasoning text of an output (for the reasoning-token estimate)."""
    return "".join(p.get("text", "") for item in output if item.get("type") == "reasoning"
                   for p in item.get("content") or [])
