"""Anthropic Messages request bodies -> the router's Chat Completions request dict.

`to_chat(body)` turns a parsed `/v1/messages` body into the dict `ChatRequest` validates; every
refusal is an `InvalidRequest` naming the Anthropic field (`messages[2].content[0].type`).

    Anthropic                              router (`ChatRequest`)
    system (string or text blocks)         a leading system message
    text blocks                            message content (joined)
    tool_use {id, name, input}             assistant tool_calls (arguments: the input's JSON)
    tool_result {tool_use_id, content,     a tool message; `is_error` prefixes "Error: "
                 is_error}
    thinking {thinking, signature}         the assistant turn's `reasoning` (signature ignored)
    redacted_thinking                      ignored (nothing a non-Anthropic model can read)
    image / document / other blocks        400: gpt-oss is text-only
    tools [{name, description,             function tools; server tools (web_search_*,
            input_schema}]                 bash_*, computer_*, ...) are a 400
    tool_choice auto | any | tool | none   auto | required | that function | none;
                                           disable_parallel_tool_use -> parallel_tool_calls
    stop_sequences, temperature, top_p     stop, temperature, top_p
    top_k                                  passed only if `ChatRequest` has the field
    metadata {user_id, ...}                user (user_id) and metadata (string values)
    thinking enabled {budget_tokens}       reasoning_effort: < 4096 low, < 16384 medium,
                                           else high; disabled -> low; adaptive -> medium
    output_config {effort, format}         effort overrides `thinking` (xhigh/max -> high);
                                           format json_schema -> response_format json_schema

`cache_control` on blocks and tools, `anthropic-beta` features and other Claude-only top-level
fields are ignored: they change nothing a router can do. Anthropic's metadata has no privacy
key; `X-Privacy` and key defaults are the markers, and a `metadata.privacy` sent anyway is
honoured like the other dialects' (it can only make a request more private).
"""

from __future__ import annotations

from typing import Any

import orjson

from router.errors import InvalidRequest
from router.types import ChatRequest

LOW_BUDGET = 4096  # budget_tokens below this: low effort
MEDIUM_BUDGET = 16384  # below this: medium; at or above: high
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
_TEXT_ONLY = ("image", "document", "search_result", "container_upload")
_CUSTOM_TOOL_TYPES = (None, "custom")


def _bad(message: str, param: str | None) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def _need(body: dict[str, Any], key: str, kind: type, what: str, where: str = "") -> Any:
    value = body.get(key)
    param = f"{where}.{key}" if where else key
    if value is None:
        raise _bad(f"Missing required parameter: '{param}'.", param)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _bad(f"Invalid type for '{param}': expected {what}.", param)
    return value


def _text_blocks(value: Any, param: str) -> str:
    """A string, or a list of text blocks joined (system, tool_result content)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _bad(f"Invalid type for '{param}': expected a string or an array of text "
                   "blocks.", param)
    out: list[str] = []
    for i, block in enumerate(value):
        where = f"{param}[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind in _TEXT_ONLY:
            raise _text_only(kind, where)
        if kind != "text":
            raise _bad(f"Invalid value for '{where}.type': expected 'text'.", f"{where}.type")
        out.append(_need(block, "text", str, "string", where))
    return "".join(out)


def _text_only(kind: Any, where: str) -> InvalidRequest:
    return _bad(f"'{where}' is a {kind} block: gpt-oss is text-only, so only text, tool_use, "
                "tool_result and thinking blocks are supported.", f"{where}.type")


def _tool_result(block: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = _need(block, "tool_use_id", str, "string", where)
    content = block.get("content")
    text = "" if content is None else _text_blocks(content, f"{where}.content")
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise _bad(f"Invalid type for '{where}.is_error': expected boolean.", f"{where}.is_error")
    if is_error:
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _tool_use(block: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = _need(block, "id", str, "string", where)
    name = _need(block, "name", str, "string", where)
    args = block.get("input", {})
    if not isinstance(args, dict):
        raise _bad(f"Invalid type for '{where}.input': expected object.", f"{where}.input")
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(args).decode()}}


def _blocks(content: list[Any], role: str, where: str
            ) -> tuple[list[str], list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """A message's blocks sorted into texts, reasoning, tool calls and tool results."""
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(block, dict) or not isinstance(kind, str):
            raise _bad(f"Missing required parameter: '{at}.type'.", f"{at}.type")
        if kind == "text":
            texts.append(_need(block, "text", str, "string", at))
        elif kind == "redacted_thinking":
            continue
        elif kind in _TEXT_ONLY:
            raise _text_only(kind, at)
        elif role == "assistant" and kind == "tool_use":
            calls.append(_tool_use(block, at))
        elif role == "assistant" and kind == "thinking":
            reasoning.append(_need(block, "thinking", str, "string", at))
        elif role == "user" and kind == "tool_result":
            results.append(_tool_result(block, at))
        else:
            raise _bad(f"Unsupported content block type '{kind[:64]}' at '{at}' in a {role} "
                       "message.", f"{at}.type")
    return texts, reasoning, calls, results


def _turn(message: Any, i: int) -> list[dict[str, Any]]:
    """One Anthropic message as one or more router messages."""
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise _bad(f"Invalid type for '{where}': expected object.", where)
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise _bad(f"Invalid value for '{where}.role': expected 'user' or 'assistant'.",
                   f"{where}.role")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _bad(f"Invalid type for '{where}.content': expected a string or an array of "
                   "content blocks.", f"{where}.content")
    texts, reasoning, calls, results = _blocks(content, role, where)
    if role == "user":
        out = list(results)
        if texts or not results:
            out.append({"role": "user", "content": "".join(texts)})
        return out
    turn: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        turn["tool_calls"] = calls
    if reasoning:
        turn["reasoning"] = "".join(reasoning)
    if turn["content"] is None and not calls:
        turn["content"] = ""
    return [turn]


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("Invalid type for 'tools': expected array.", "tools")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _bad(f"Invalid type for '{where}': expected object.", where)
        kind = tool.get("type")
        if kind not in _CUSTOM_TOOL_TYPES:
            shown = str(kind)[:64]
            raise _bad(f"'{where}' is Anthropic's server tool '{shown}': the router serves "
                       "gpt-oss, which only calls custom tools (name, description, "
                       "input_schema) that the client runs.", f"{where}.type")
        name = _need(tool, "name", str, "string", where)
        schema = _need(tool, "input_schema", dict, "object", where)
        fn: dict[str, Any] = {"name": name, "parameters": schema}
        if tool.get("description") is not None:
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        raise _bad("Invalid type for 'tool_choice': expected object.", "tool_choice")
    kind = choice.get("type")
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool":
        name = _need(choice, "name", str, "string", "tool_choice")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise _bad("Invalid value for 'tool_choice.type': expected 'auto', 'any', 'tool' or "
                   "'none'.", "tool_choice.type")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        chat["parallel_tool_calls"] = False


def effort_for(thinking: Any) -> str | None:
    """The reasoning effort a `thinking` config asks for (None: the router's default)."""
    if thinking is None:
        return None
    if not isinstance(thinking, dict):
        raise _bad("Invalid type for 'thinking': expected object.", "thinking")
    kind = thinking.get("type")
    if kind == "disabled":
        return "low"
    if kind == "adaptive":
        return "medium"
    if kind != "enabled":
        raise _bad("Invalid value for 'thinking.type': expected 'enabled', 'disabled' or "
                   "'adaptive'.", "thinking.type")
    budget = _need(thinking, "budget_tokens", int, "integer", "thinking")
    if budget < LOW_BUDGET:
        return "low"
    return "medium" if budget < MEDIUM_BUDGET else "high"


def _output_config(config: Any, chat: dict[str, Any]) -> None:
    if not isinstance(config, dict):
        raise _bad("Invalid type for 'output_config': expected object.", "output_config")
    effort = config.get("effort")
    if effort is not None:
        if effort not in _EFFORTS:
            raise _bad("Invalid value for 'output_config.effort': expected 'low', 'medium', "
                       "'high', 'xhigh' or 'max'.", "output_config.effort")
        chat["reasoning_effort"] = _EFFORTS[effort]
    fmt = config.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
            raise _bad("Invalid value for 'output_config.format.type': expected "
                       "'json_schema'.", "output_config.format.type")
        schema = _need(fmt, "schema", dict, "object", "output_config.format")
        chat["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "output", "schema": schema}}


def _metadata(metadata: Any, chat: dict[str, Any]) -> None:
    if not isinstance(metadata, dict):
        raise _bad("Invalid type for 'metadata': expected object.", "metadata")
    kept = {k: v for k, v in metadata.items() if v is not None}
    user = kept.get("user_id")
    if user is not None:
        if not isinstance(user, str):
            raise _bad("Invalid type for 'metadata.user_id': expected string.",
                       "metadata.user_id")
        chat["user"] = user
    if kept:
        chat["metadata"] = kept


def to_chat(body: dict[str, Any], *, count_only: bool = False) -> dict[str, Any]:
    """A `/v1/messages` body (or a count_tokens body when `count_only`) as a ChatRequest dict."""
    model = _need(body, "model", str, "string")
    if not count_only:
        _need(body, "max_tokens", int, "integer")
    messages = _need(body, "messages", list, "array")
    if not messages:
        raise _bad("Invalid 'messages': must not be empty.", "messages")
    chat: dict[str, Any] = {"model": model, "messages": []}
    system = body.get("system")
    if system is not None:
        chat["messages"].append({"role": "system", "content": _text_blocks(system, "system")})
    for i, message in enumerate(messages):
        chat["messages"].extend(_turn(message, i))
    _options(body, chat)
    return chat


def _options(body: dict[str, Any], chat: dict[str, Any]) -> None:
    """Everything but the model and the messages."""
    if body.get("mcp_servers"):
        raise _bad("'mcp_servers' is not supported: the router cannot reach MCP servers for "
                   "the model; run the MCP client on your side and pass its tools.",
                   "mcp_servers")
    if body.get("tools") is not None:
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], chat)
    effort = effort_for(body.get("thinking"))
    if effort is not None:
        chat["reasoning_effort"] = effort
    if body.get("output_config") is not None:
        _output_config(body["output_config"], chat)
    if body.get("metadata") is not None:
        _metadata(body["metadata"], chat)
    if body.get("stop_sequences") is not None:
        chat["stop"] = body["stop_sequences"]
    for key in ("max_tokens", "temperature", "top_p", "stream"):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("top_k") is not None and "top_k" in ChatRequest.model_fields:
        chat["top_k"] = body["top_k"]
    if chat.get("stream") is True:
        chat["include_usage"] = True
