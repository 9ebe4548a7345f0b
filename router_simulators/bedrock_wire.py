"""Pure half of the Bedrock simulator: request checks, script inputs and response bodies.

`check_converse` returns the ValidationException message a real service would send (or None);
`converse_to_script_input` / `invoke_to_script_input` turn a Converse or an InvokeModel (OpenAI)
body into the role/content dicts, tools, effort and max tokens `script.build_script` takes;
`converse_body` / `converse_events` / `invoke_body` / `invoke_deltas` render a `Script` in each
API's response shape; `midstream_exception` picks the in-stream exception for a fault.
No aiohttp here: `bedrock.py` owns the HTTP side.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

import orjson

from router_simulators.script import Fault, Script

# Non-stream error code by HTTP status (a fault's `error_type` overrides it).
ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}

# In-stream exception member names (lower camel case, docs/protocols.md, AWS event-stream encoding)
# for midstream_error.
_STREAM_ERRORS = {429: "throttlingException", 503: "serviceUnavailableException"}

ScriptInput = tuple[list[dict[str, Any]], list[dict[str, Any]] | None, str | None, int | None]


def midstream_exception(fault: Fault) -> tuple[str, dict[str, Any]]:
    """(exception member, payload): the fault's `error_type` if set (e.g. `validationException`),
    else 429 -> throttlingException, 503 -> serviceUnavailableException, anything else ->
    modelStreamErrorException with `originalStatusCode` (`original_status`, else the status)."""
    name = getattr(fault, "error_type", None) or _STREAM_ERRORS.get(fault.status)
    if name is None:
        return "modelStreamErrorException", {
            "message": "simulated model stream error",
            "originalStatusCode": getattr(fault, "original_status", fault.status),
            "originalMessage": "upstream model failed",
        }
    return str(name), {"message": f"simulated {name}"}


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def check_converse(body: dict[str, Any]) -> str | None:  # noqa: C901 - one flat list of rules
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "The messages field is required and must not be empty."
    has_tools = bool((body.get("toolConfig") or {}).get("tools"))
    previous_tool_ids: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return f"messages.{i}.role must be user or assistant"
        if (i == 0 and role != "user") or (i > 0 and messages[i - 1].get("role") == role):
            return "A conversation must start with a user message and alternate between user " \
                   "and assistant roles."
        blocks = _blocks(message)
        if not blocks:
            return f"The content field in the Message object at messages.{i} is empty."
        tool_ids: set[str] = set()
        for j, block in enumerate(blocks):
            if "text" in block and not str(block["text"]).strip():
                return f"The text field in the ContentBlock object at messages.{i}.content.{j} " \
                       "is blank."
            reasoning = (block.get("reasoningContent") or {}).get("reasoningText") or {}
            if "signature" in reasoning:
                return "This model doesn't support the reasoningContent.reasoningText.signature " \
                       "field."
            if ("toolUse" in block or "toolResult" in block) and not has_tools:
                return "The toolConfig field must be defined when using toolUse and toolResult " \
                       "content blocks."
            if "toolUse" in block:
                tool_ids.add(str(block["toolUse"].get("toolUseId")))
            if "toolResult" in block and block["toolResult"].get("toolUseId") not in \
                    previous_tool_ids:
                return f"messages.{i}.content.{j}: toolResult does not match any toolUse of the " \
                       "previous turn."
        previous_tool_ids = tool_ids
    return None


def _text_of(blocks: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    for block in blocks:
        if "text" in block:
            parts.append(str(block["text"]))
        elif "json" in block:
            parts.append(orjson.dumps(block["json"]).decode())
    return "".join(parts)


def converse_to_script_input(body: dict[str, Any]) -> ScriptInput:
    messages: list[dict[str, Any]] = []
    system = _text_of([b for b in body.get("system") or [] if isinstance(b, dict)])
    if system:
        messages.append({"role": "system", "content": system})
    for message in body.get("messages") or []:
        blocks = _blocks(message)
        results = [b["toolResult"] for b in blocks if "toolResult" in b]
        for result in results:
            messages.append({"role": "tool", "tool_call_id": result.get("toolUseId"),
                             "content": _text_of(list(result.get("content") or []))})
        text = _text_of([b for b in blocks if "text" in b])
        if text or not results:
            messages.append({"role": message.get("role"), "content": text})
    tool_config = body.get("toolConfig") or {}
    tools = [{"name": t["toolSpec"]["name"],
              "parameters": (t["toolSpec"].get("inputSchema") or {}).get("json")}
             for t in tool_config.get("tools") or [] if "toolSpec" in t] or None
    chosen = ((tool_config.get("toolChoice") or {}).get("tool") or {}).get("name")
    if tools and chosen:
        tools.sort(key=lambda t: t["name"] != chosen)
    effort = (body.get("additionalModelRequestFields") or {}).get("reasoning_effort")
    max_tokens = (body.get("inferenceConfig") or {}).get("maxTokens")
    return messages, tools, effort, max_tokens


def invoke_to_script_input(body: dict[str, Any]) -> ScriptInput:
    messages: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        messages.append({**message, "content": content})
    tools = [t.get("function", t) for t in body.get("tools") or []] or None
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    return messages, tools, body.get("reasoning_effort"), max_tokens


# ---- responses ---------------------------------------------------------------------------


def tool_use_id(name: str, args: dict[str, Any]) -> str:
    return "tooluse_" + hashlib.sha256(name.encode() + orjson.dumps(args)).hexdigest()[:22]


STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
FILTERED_TEXT = "Sorry, the model cannot answer this question."


def converse_usage(script: Script) -> dict[str, int]:
    return {"inputTokens": script.prompt_tokens, "outputTokens": script.completion_tokens,
            "totalTokens": script.prompt_tokens + script.completion_tokens}


def converse_body(script: Script, filtered: bool = False) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if script.reasoning:
        text = "".join(script.reasoning)
        content.append({"reasoningContent": {"reasoningText": {"text": text}}})
    if script.content:
        content.append({"text": "".join(script.content)})
    if script.tool_call:
        name, args = script.tool_call
        use = {"toolUseId": tool_use_id(name, args), "name": name, "input": args}
        content.append({"toolUse": use})
    stop = STOP_REASONS[script.finish_reason]
    if filtered:
        content, stop = [{"text": FILTERED_TEXT}], "guardrail_intervened"
    return {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
            "usage": converse_usage(script), "metrics": {"latencyMs": 1}}


def converse_events(script: Script) -> list[tuple[str, dict[str, Any]]]:
    """(event type, payload) per frame between messageStart and messageStop; one token each."""
    frames: list[tuple[str, dict[str, Any]]] = []
    index = 0
    for tokens, key in ((script.reasoning, "reasoning"), (script.content, "text")):
        if not tokens:
            continue
        for tok in tokens:
            delta = {"reasoningContent": {"text": tok}} if key == "reasoning" else {"text": tok}
            frames.append(("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
        frames.append(("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    if script.tool_call:
        name, args = script.tool_call
        start = {"toolUse": {"toolUseId": tool_use_id(name, args), "name": name}}
        frames.append(("contentBlockStart", {"contentBlockIndex": index, "start": start}))
        raw = orjson.dumps(args).decode()
        for part in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
            delta = {"toolUse": {"input": part}}
            frames.append(("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
        frames.append(("contentBlockStop", {"contentBlockIndex": index}))
    return frames


def openai_usage(script: Script) -> dict[str, int]:
    return {"prompt_tokens": script.prompt_tokens, "completion_tokens": script.completion_tokens,
            "total_tokens": script.prompt_tokens + script.completion_tokens}


def _openai_tool_call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"id": tool_use_id(name, args), "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(args).decode()}}


def invoke_body(script: Script, model_id: str, filtered: bool = False) -> dict[str, Any]:
    """InvokeModel answer: chat.completion with reasoning inline as <reasoning>...</reasoning>."""
    text = "".join(script.content)
    if script.reasoning:
        text = f"<reasoning>{''.join(script.reasoning)}</reasoning>{text}"
    message: dict[str, Any] = {"role": "assistant", "content": text}
    finish = script.finish_reason
    if script.tool_call:
        message["tool_calls"] = [_openai_tool_call(*script.tool_call)]
    if filtered:
        message, finish = {"role": "assistant", "content": ""}, "content_filter"
    return {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion",
            "created": int(time.time()), "model": model_id,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": openai_usage(script)}


def invoke_deltas(script: Script, reasoning_field: bool) -> list[dict[str, Any]]:
    """chat.completion.chunk deltas, one per token; reasoning tagged in content or as a field."""
    deltas: list[dict[str, Any]] = []
    last = len(script.reasoning) - 1
    for i, tok in enumerate(script.reasoning):
        if reasoning_field:
            deltas.append({"reasoning": tok})
        else:
            opened = ("<reasoning>" if i == 0 else "") + tok
            deltas.append({"content": opened + ("</reasoning>" if i == last else "")})
    deltas.extend({"content": tok} for tok in script.content)
    if script.tool_call:
        deltas.append({"tool_calls": [{"index": 0, **_openai_tool_call(*script.tool_call)}]})
    if deltas:
        deltas[0] = {"role": "assistant", **deltas[0]}
    return deltas


def context_message(prompt_tokens: int, window: int) -> str:
    """A prompt over `context_window`: Bedrock's own sentence (verified in public reports),
    then the counts (the simulator's addition: real Bedrock's wording for them is unverified)."""
    return (f"Input is too long for requested model. The input length ({prompt_tokens} tokens "
            f"with maxTokens) exceeds the model's context window of {window} tokens.")
