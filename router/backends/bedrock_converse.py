"""Pure translation between the router's Chat Completions types and Bedrock Converse shapes.

No I/O and no boto3 here (docs/protocols.md, Bedrock Converse); `bedrock.py` owns the transport and
the errors.

Request: system/developer -> `system[].text`; user -> text blocks; assistant -> reasoning as
`reasoningContent.reasoningText.text` (never a signature: gpt-oss rejects it; and only for the
assistant turns after the last user message, i.e. the tool loop in progress: the harmony rule of
docs/protocols.md, Bedrock Converse: the harmony format drops analysis once a final answer was
given), text, `toolUse` (arguments
string -> input object); an assistant turn with neither text nor tool calls is dropped
(Converse rejects empty content, and a reasoning-only turn is not sent); tool results -> a user
message of `toolResult` blocks; consecutive same-role turns are merged (Converse requires
user/assistant alternation). Tool schemas lose `$schema`, `$id`, `additionalProperties`, `strict`.
tool_choice: auto -> `auto`, required -> `any`, a named function -> `tool`, any other shape -> no
toolChoice (the mapping is total over whatever the request type holds), none -> no toolConfig
unless the history holds toolUse/toolResult blocks (Converse then requires toolConfig, so the
tools are sent without a toolChoice). History tool calls whose tool is not in `tools` get a
minimal spec. `reasoning_effort` -> `additionalModelRequestFields.reasoning_effort` (flat field).
Not forwarded (no Converse equivalent): seed, response_format, parallel_tool_calls, user.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

import orjson

from router.backends.base import plain
from router.errors import ToolArgumentsError as ToolArgumentsError
from router.tokens import estimate_prompt_tokens
from router.types import ChatRequest, ChatResult, FunctionCall, Message, ToolCall, Usage

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
MALFORMED_STOPS = frozenset({"malformed_model_output", "malformed_tool_use"})
CONTEXT_STOP = "model_context_window_exceeded"

_SCHEMA_DROP = frozenset({"$schema", "$id", "additionalProperties", "strict"})
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
_ALNUM = string.ascii_lowercase + string.digits


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ALNUM) for _ in range(8))


def clean_schema(schema: Any) -> Any:
    """Drop the keywords gpt-oss on Bedrock rejects, at every level (not inside property maps)."""
    if isinstance(schema, list):
        return [clean_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_DROP:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: clean_schema(sub) for name, sub in value.items()}
        else:
            out[key] = clean_schema(value)
    return out


def _tool_input(call: ToolCall) -> dict[str, Any]:
    raw = call.function.arguments.strip() or "{}"
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ToolArgumentsError(f"tool call {call.id} has arguments that are not JSON") from exc
    if not isinstance(value, dict):
        raise ToolArgumentsError(f"tool call {call.id} has arguments that are not a JSON object")
    return value


def _assistant_blocks(m: Message, keep_reasoning: bool) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if m.content and m.content.strip():
        blocks.append({"text": m.content})
    for call in m.tool_calls or []:
        blocks.append({"toolUse": {"toolUseId": call.id, "name": call.function.name,
                                   "input": _tool_input(call)}})
    if blocks and m.reasoning and keep_reasoning:
        blocks.insert(0, {"reasoningContent": {"reasoningText": {"text": m.reasoning}}})
    return blocks


def converse_messages(messages: list[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, alternating messages) for a conversation."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    for i, m in enumerate(messages):
        if m.role in ("system", "developer"):
            if m.content and m.content.strip():
                system.append({"text": m.content})
            continue
        if m.role == "assistant":
            role, blocks = "assistant", _assistant_blocks(m, keep_reasoning=i > last_user)
        elif m.role == "tool":
            result = {"toolUseId": m.tool_call_id or "", "status": "success",
                      "content": [{"text": m.content if m.content else "(no output)"}]}
            role, blocks = "user", [{"toolResult": result}]
        else:
            role = "user"
            blocks = [{"text": m.content}] if m.content and m.content.strip() else []
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _history_tools(turns: list[dict[str, Any]]) -> tuple[bool, list[str]]:
    names: list[str] = []
    used = False
    for turn in turns:
        for block in turn["content"]:
            if "toolResult" in block:
                used = True
            if "toolUse" in block:
                used = True
                if block["toolUse"]["name"] not in names:
                    names.append(block["toolUse"]["name"])
    return used, names


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    """Total over any shape: a string mode, `{"type": "function", "function": {"name": ...}}`
    (or the flat `{"type": "function", "name": ...}`), as a dict or a typed model. Anything
    else maps to no toolChoice (Converse's default, auto) rather than an error."""
    choice = plain(choice)
    if choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else choice.get("name")
        if isinstance(name, str) and name:
            return {"tool": {"name": name}}
    return None


def _tool_config(request: ChatRequest, turns: list[dict[str, Any]]) -> dict[str, Any] | None:
    history_uses_tools, history_names = _history_tools(turns)
    specs: list[dict[str, Any]] = []
    for tool in request.tools or []:
        fn = tool.function
        spec: dict[str, Any] = {"name": fn.name, "inputSchema": {"json": clean_schema(
            fn.parameters or {"type": "object", "properties": {}})}}
        if fn.description:
            spec["description"] = fn.description
        specs.append({"toolSpec": spec})
    known = {s["toolSpec"]["name"] for s in specs}
    for name in history_names:
        if name not in known:
            specs.append({"toolSpec": {"name": name, "inputSchema": {
                "json": {"type": "object", "properties": {}}}}})
    if not specs or (plain(request.tool_choice) == "none" and not history_uses_tools):
        return None
    config: dict[str, Any] = {"tools": specs}
    choice = _tool_choice(request.tool_choice) if request.tools else None
    if choice is not None:
        config["toolChoice"] = choice
    return config


def converse_request(request: ChatRequest, model_id: str) -> dict[str, Any]:
    """Keyword arguments for `client.converse` / `client.converse_stream`."""
    system, turns = converse_messages(request.messages)
    kwargs: dict[str, Any] = {"modelId": model_id, "messages": turns}
    if system:
        kwargs["system"] = system
    inference: dict[str, Any] = {}
    if request.max_tokens is not None:
        inference["maxTokens"] = request.max_tokens
    if request.temperature is not None:
        inference["temperature"] = request.temperature
    if request.top_p is not None:
        inference["topP"] = request.top_p
    if request.stop:
        stop = plain(request.stop)
        inference["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if inference:
        kwargs["inferenceConfig"] = inference
    tool_config = _tool_config(request, turns)
    if tool_config is not None:
        kwargs["toolConfig"] = tool_config
    if request.reasoning_effort is not None:
        kwargs["additionalModelRequestFields"] = {"reasoning_effort": request.reasoning_effort}
    return kwargs


# One size estimate for the whole router (router/tokens.py), so the planner and this
# backend's pre-check agree.
estimate_tokens = estimate_prompt_tokens


def finish_reason(stop_reason: str | None, has_tool_calls: bool) -> str:
    finish = STOP_REASONS.get(stop_reason or "", "stop")
    return "tool_calls" if has_tool_calls and finish == "stop" else finish


def usage_of(raw: dict[str, Any] | None) -> Usage:
    raw = raw or {}
    return Usage(prompt_tokens=int(raw.get("inputTokens") or 0),
                 completion_tokens=int(raw.get("outputTokens") or 0))


def tool_call(tool_id: str | None, name: str, arguments: str) -> ToolCall:
    return ToolCall(id=tool_id or new_call_id(),
                    function=FunctionCall(name=name, arguments=arguments or "{}"))


def parse_converse(response: dict[str, Any]) -> tuple[ChatResult, str | None]:
    """(result, raw stopReason) for a Converse response; the caller decides what to raise."""
    content = (((response.get("output") or {}).get("message") or {}).get("content")) or []
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for block in content:
        if "text" in block:
            texts.append(block["text"])
        elif "reasoningContent" in block:
            text = (block["reasoningContent"].get("reasoningText") or {}).get("text")
            if text:
                reasoning.append(text)
        elif "toolUse" in block:
            use = block["toolUse"]
            calls.append(tool_call(use.get("toolUseId"), use.get("name", ""),
                                   orjson.dumps(use.get("input") or {}).decode()))
    stop = response.get("stopReason")
    result = ChatResult(
        content="".join(texts) if texts or not calls else None,
        reasoning="".join(reasoning) or None,
        tool_calls=calls,
        finish_reason=finish_reason(stop, bool(calls)),
        usage=usage_of(response.get("usage")),
    )
    return result, stop
