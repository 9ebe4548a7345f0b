"""Decode OpenAI Responses API requests: the body's fields, its input items, and the
translation of a conversation of items into Chat Completions messages.

`parse_request(body)` checks every top-level field (unknown or unsupported ones are a 400
naming them: built-in tools, `background`, `conversation`, `prompt`, `include`, ...), and
normalises the input into stored item form (ids assigned, text parts only):

    message               {type, id, role, status, content: [{type: input_text | output_text}]}
    reasoning             {type, id, summary, content: [{type: reasoning_text, text}]}
    function_call         {type, id, call_id, name, arguments (string), status}
    function_call_output  {type, id, call_id, output (string), status}

`to_messages(items, instructions)` turns a whole conversation (stored items, earlier outputs,
new input) into `ChatRequest` messages: `instructions` first as a system message, a reasoning
item becomes the `reasoning` of the assistant turn that follows it (gpt-oss needs its own
reasoning back inside a tool loop), consecutive function calls join one assistant turn, and a
function call output is a `tool` message. `chat_body(parsed, messages)` is the Chat
Completions dict `ChatRequest.model_validate` checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from router.errors import InvalidRequest
from router.ids import new_id

__all__ = ["ParsedRequest", "chat_body", "parse_request", "to_messages"]

ROLES = ("user", "system", "developer", "assistant")
TEXT_PARTS = ("input_text", "output_text", "text")
# Accepted and without effect on a gpt-oss answer (hints for OpenAI's own platform).
IGNORED = ("user", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
           "service_tier", "stream_options")
KNOWN = ("model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
         "max_output_tokens", "temperature", "top_p", "reasoning", "text", "metadata", "store",
         "previous_response_id", "stream", "include", "truncation", "background", "top_logprobs",
         *IGNORED)
# Present in the Responses API, not served by a router over gpt-oss.
UNSUPPORTED = {
    "conversation": "conversations are not stored by this router; use previous_response_id",
    "prompt": "stored prompt templates are not supported",
    "max_tool_calls": "max_tool_calls is not supported",
    "context_management": "context_management is not supported",
    "prompt_cache_options": "prompt_cache_options is not supported",
}


def _bad(message: str, param: str | None) -> InvalidRequest:
    return InvalidRequest(message, param=param)


@dataclass(slots=True)
class ParsedRequest:
    model: str
    items: list[dict[str, Any]]  # this request's input, in stored item form
    instructions: str | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    chat: dict[str, Any] = field(default_factory=dict)  # Chat Completions fields but messages
    echo: dict[str, Any] = field(default_factory=dict)  # fields the Response object repeats


def parse_request(body: dict[str, Any]) -> ParsedRequest:
    for key in body:
        if key in UNSUPPORTED and body[key] is not None:
            raise _bad(f"'{key}' is not supported by this router: {UNSUPPORTED[key]}.", key)
        if key not in KNOWN and key not in UNSUPPORTED:
            raise _bad(f"Unknown parameter: '{key}'.", key)
    if body.get("background"):
        raise _bad("'background' mode is not supported by this router: send the request "
                   "without it (stream it, if it takes long).", "background")
    include = body.get("include")
    if include:
        shown = ", ".join(repr(i) for i in include) if isinstance(include, list) else include
        raise _bad(f"'include' values are not supported by this router: {shown}.", "include")
    if body.get("truncation") not in (None, "disabled"):
        raise _bad("Only truncation 'disabled' is supported: the router does not drop "
                   "context.", "truncation")
    if body.get("top_logprobs") not in (None, 0):
        raise _bad("'top_logprobs' is not supported by this router.", "top_logprobs")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("Missing required parameter: 'model'.", "model")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad("Invalid type for 'instructions': expected string.", "instructions")
    prev = body.get("previous_response_id")
    if prev is not None and (not isinstance(prev, str) or not prev):
        raise _bad("Invalid 'previous_response_id': expected a response id.",
                   "previous_response_id")
    store = body.get("store", True)
    stream = body.get("stream", False)
    for name, value in (("store", store), ("stream", stream)):
        if value is not None and not isinstance(value, bool):
            raise _bad(f"Invalid type for '{name}': expected boolean.", name)
    parsed = ParsedRequest(model=model, items=input_items(body.get("input")),
                           instructions=instructions, stream=bool(stream),
                           store=store is not False, previous_response_id=prev)
    _options(body, parsed)
    return parsed


def _options(body: dict[str, Any], parsed: ParsedRequest) -> None:
    chat, echo = parsed.chat, parsed.echo
    for name in ("temperature", "top_p", "parallel_tool_calls", "metadata"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("Invalid type for 'tools': expected array.", "tools")
        chat["tools"] = [_tool(t, i) for i, t in enumerate(tools)] or None
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise _bad("Invalid type for 'reasoning': expected object.", "reasoning")
        if reasoning.get("effort") is not None:
            chat["reasoning_effort"] = reasoning["effort"]
    text = body.get("text")
    if text is not None:
        fmt = _text_format(text)
        if fmt is not None:
            chat["response_format"] = fmt
    echo.update(
        tools=tools or [], tool_choice=body.get("tool_choice") or "auto",
        parallel_tool_calls=body.get("parallel_tool_calls", True) is not False,
        temperature=body.get("temperature"), top_p=body.get("top_p"),
        max_output_tokens=body.get("max_output_tokens"),
        reasoning={"effort": (reasoning or {}).get("effort"),
                   "summary": (reasoning or {}).get("summary")},
        text=text if isinstance(text, dict) and text.get("format") else {
            "format": {"type": "text"}},
        metadata=body.get("metadata") or {}, user=body.get("user"),
    )


def _tool(tool: Any, i: int) -> dict[str, Any]:
    param = f"tools[{i}]"
    if not isinstance(tool, dict):
        raise _bad(f"Invalid type for '{param}': expected object.", param)
    kind = tool.get("type")
    if kind != "function":
        raise _bad(f"Tool type {kind!r} is not supported by this router: gpt-oss is served "
                   "with function tools only (built-in tools such as web_search, "
                   "file_search or computer_use run on OpenAI's platform).", f"{param}.type")
    fn = {k: tool[k] for k in ("name", "description", "parameters", "strict")
          if tool.get(k) is not None}
    return {"type": "function", "function": fn}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    kind = choice.get("type") if isinstance(choice, dict) else type(choice).__name__
    raise _bad(f"tool_choice {kind!r} is not supported: use 'auto', 'none', 'required' or "
               "{'type': 'function', 'name': ...}.", "tool_choice")


def _text_format(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, dict):
        raise _bad("Invalid type for 'text': expected object.", "text")
    if text.get("verbosity") not in (None, "medium"):
        raise _bad("'text.verbosity' other than 'medium' is not supported by this router.",
                   "text.verbosity")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _bad("Invalid type for 'text.format': expected object.", "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description")
                if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": spec}
    raise _bad(f"Invalid value for 'text.format.type': {kind!r} (text, json_object or "
               "json_schema).", "text.format.type")


# -- input items ---------------------------------------------------------------------------

def input_items(value: Any) -> list[dict[str, Any]]:
    """The request's `input` in stored item form (a string is one user message)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [_message("user", [{"type": "input_text", "text": value}])]
    if not isinstance(value, list):
        raise _bad("Invalid type for 'input': expected string or array.", "input")
    return [_item(item, f"input[{i}]") for i, item in enumerate(value)]


def _message(role: str, content: list[dict[str, Any]], item_id: str | None = None
             ) -> dict[str, Any]:
    return {"type": "message", "id": item_id or new_id("msg"), "role": role,
            "status": "completed", "content": content}


def _text(value: Any, param: str, parts: tuple[str, ...], out_type: str) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [_part(out_type, value)]
    if not isinstance(value, list):
        raise _bad(f"Invalid type for '{param}': expected string or array.", param)
    out = []
    for j, part in enumerate(value):
        p = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in parts:
            raise _bad(f"Content part type {kind!r} is not supported: gpt-oss is text-only "
                       f"({', '.join(parts)}).", f"{p}.type")
        if not isinstance(part.get("text"), str):
            raise _bad(f"Missing required parameter: '{p}.text'.", f"{p}.text")
        out.append(_part(out_type, part["text"]))
    return out


def _part(kind: str, text: str) -> dict[str, Any]:
    if kind == "output_text":
        return {"type": "output_text", "text": text, "annotations": []}
    return {"type": kind, "text": text}


def _str(item: dict[str, Any], name: str, param: str, default: str | None = None) -> str:
    value = item.get(name, default)
    if not isinstance(value, str) or (not value and default is None):
        raise _bad(f"Missing required parameter: '{param}.{name}'.", f"{param}.{name}")
    return value


def _item(item: Any, param: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _bad(f"Invalid type for '{param}': expected object.", param)
    kind = item.get("type") or ("message" if "role" in item else None)
    given_id = item.get("id") if isinstance(item.get("id"), str) and item.get("id") else None
    if kind == "message":
        role = item.get("role")
        if role not in ROLES:
            raise _bad(f"Invalid value for '{param}.role': {role!r} ({', '.join(ROLES)}).",
                       f"{param}.role")
        out_type = "output_text" if role == "assistant" else "input_text"
        content = _text(item.get("content"), f"{param}.content", TEXT_PARTS, out_type)
        return _message(str(role), content, given_id)
    if kind == "reasoning":
        return _reasoning(item, param, given_id)
    if kind == "function_call":
        args = item.get("arguments", "{}")
        if isinstance(args, dict):
            args = orjson.dumps(args).decode()
        if not isinstance(args, str):
            raise _bad(f"Invalid type for '{param}.arguments': expected string.",
                       f"{param}.arguments")
        return {"type": "function_call", "id": given_id or new_id("fc"),
                "call_id": _str(item, "call_id", param), "name": _str(item, "name", param),
                "arguments": args, "status": "completed"}
    if kind == "function_call_output":
        output = item.get("output")
        if not isinstance(output, str):
            parts = _text(output, f"{param}.output", TEXT_PARTS, "input_text")
            output = "".join(p["text"] for p in parts)
        return {"type": "function_call_output", "id": given_id or new_id("fco"),
                "call_id": _str(item, "call_id", param), "output": output,
                "status": "completed"}
    if kind == "item_reference":
        raise _bad("'item_reference' input items are not supported: send the items, or "
                   "continue with previous_response_id.", f"{param}.type")
    raise _bad(f"Input item type {kind!r} is not supported by this router (message, "
               "reasoning, function_call, function_call_output).", f"{param}.type")


def _reasoning(item: dict[str, Any], param: str, given_id: str | None) -> dict[str, Any]:
    texts: list[str] = []
    for name, part_type in (("content", "reasoning_text"), ("summary", "summary_text")):
        parts = item.get(name) or []
        if not isinstance(parts, list):
            raise _bad(f"Invalid type for '{param}.{name}': expected array.", f"{param}.{name}")
        for j, part in enumerate(parts):
            if not isinstance(part, dict) or not isinstance(part.get("text"), str):
                raise _bad(f"Missing required parameter: '{param}.{name}[{j}].text'.",
                           f"{param}.{name}[{j}].text")
            if part.get("type") not in (part_type, None):
                raise _bad(f"Invalid value for '{param}.{name}[{j}].type': expected "
                           f"'{part_type}'.", f"{param}.{name}[{j}].type")
        if parts and not texts:  # the full reasoning text wins over a summary of it
            texts = [p["text"] for p in parts]
    return {"type": "reasoning", "id": given_id or new_id("rs"), "summary": [],
            "content": [{"type": "reasoning_text", "text": t} for t in texts]}


# -- items -> Chat Completions messages ----------------------------------------------------

def to_messages(items: list[dict[str, Any]], instructions: str | None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    reasoning: str | None = None
    for item in items:
        kind = item.get("type")
        if kind == "reasoning":
            text = "".join(p.get("text", "") for p in item.get("content") or [])
            reasoning = text if reasoning is None else reasoning + text
        elif kind == "message":
            text = "".join(p.get("text", "") for p in item.get("content") or [])
            msg: dict[str, Any] = {"role": item["role"], "content": text}
            if item["role"] == "assistant" and reasoning:
                msg["reasoning"] = reasoning
            messages.append(msg)
            reasoning = None
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and reasoning is None:
                last.setdefault("tool_calls", []).append(call)
            else:
                msg = {"role": "assistant", "content": None, "tool_calls": [call]}
                if reasoning:
                    msg["reasoning"] = reasoning
                messages.append(msg)
            reasoning = None
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": item["output"]})
            reasoning = None
    return messages


def chat_body(parsed: ParsedRequest, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {**parsed.chat, "model": parsed.model, "messages": messages,
            "stream": parsed.stream, "include_usage": parsed.stream}


# Chat Completions parameter names in validation errors, as the Responses API spells them.
PARAM_NAMES = {"max_tokens": "max_output_tokens", "response_format": "text.format",
               "reasoning_effort": "reasoning.effort", "messages": "input"}


def responses_param(param: str | None) -> str | None:
    if param is None:
        return None
    head, sep, rest = param.partition(".")
    base, bracket, index = head.partition("[")
    if base in PARAM_NAMES:
        return PARAM_NAMES[base] + bracket + index + sep + rest
    if base == "tools" and rest.startswith("function."):
        return head + "." + rest.removeprefix("function.")
    return param
