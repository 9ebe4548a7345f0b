"""Ollama's `/api/chat` wire format: the request body and tool calls in answers (pure, no I/O).

Requests carry `model`, `messages` (assistant reasoning as `thinking`, tool-call arguments as
JSON objects, tool results with `tool_name` and `tool_call_id`), `tools`, `think` (gpt-oss
effort), `options` (temperature, top_p, top_k, seed, stop, num_predict, num_ctx), `format` and
`keep_alive`, and always `truncate: false`: Ollama (0.12.5+, `ChatRequest.Truncate` in its
api/types.go) otherwise drops the oldest messages or cuts the prompt to fit the loaded `num_ctx`
and answers the cut prompt; with it a prompt over the window is refused (HTTP 400, recognised in
`ollama_errors.py`) and the executor moves it to a larger window. Older Ollama ignores the
field. A trailing assistant message is sent as it is: Ollama continues it (prefill; for gpt-oss
its harmony parser starts in the final channel after an assistant message with content,
harmony/harmonyparser.go `AddImplicitStartOrPrefill`). A request's own `num_ctx` and
`keep_alive` (from Ollama-native clients) win over the backend config's. Typed request fields go
through `base.plain` first, so the builder only meets JSON values; the backend runs it through
`base.build_request` (`OllamaBackend.prepare`).
"""

from __future__ import annotations

import random
import string
from typing import Any

import orjson

from router.backends.base import BackendCall, plain
from router.backends.configs import OllamaConfig
from router.errors import BackendRejected
from router.types import ChatRequest, FunctionCall, Message, ToolCall

_ID_CHARS = string.ascii_lowercase + string.digits


def _call_id() -> str:
    return "call_" + "".join(random.choices(_ID_CHARS, k=8))


def _args_object(arguments: str) -> dict[str, Any]:
    try:
        args = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise BackendRejected(
            "tool call arguments must be a JSON object for Ollama", param="messages"
        )
    return args


def _messages(msgs: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for m in msgs:
        role = m.role
        if role == "assistant":
            d: dict[str, Any] = {"role": "assistant", "content": m.content or ""}
            if m.reasoning:
                d["thinking"] = m.reasoning
            if m.tool_calls:
                calls = []
                for i, tc in enumerate(m.tool_calls):
                    names[tc.id] = tc.function.name
                    fn = {"index": i, "name": tc.function.name,
                          "arguments": _args_object(tc.function.arguments)}
                    calls.append({"id": tc.id, "function": fn})
                d["tool_calls"] = calls
        elif role == "tool":
            d = {"role": "tool", "content": m.content or ""}
            name = names.get(m.tool_call_id or "") or m.name
            if name:
                d["tool_name"] = name
            if m.tool_call_id:
                d["tool_call_id"] = m.tool_call_id
        else:
            d = {"role": "system" if role == "developer" else role, "content": m.content or ""}
        out.append(d)
    return out


def tool_calls(raw: Any) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for tc in raw or ():
        fn = tc.get("function") or {}
        args = fn.get("arguments")
        if not isinstance(args, str):
            args = orjson.dumps(args if args is not None else {}).decode()
        calls.append(ToolCall.model_construct(
            id=tc.get("id") or _call_id(), type="function",
            function=FunctionCall.model_construct(name=str(fn.get("name") or ""), arguments=args),
        ))
    return calls


def _options(req: ChatRequest, config: OllamaConfig) -> dict[str, Any]:
    values = {"temperature": req.temperature, "top_p": req.top_p, "top_k": req.top_k,
              "seed": req.seed, "stop": plain(req.stop) if req.stop else None,
              "num_predict": req.max_tokens, "num_ctx": req.num_ctx or config.num_ctx or None}
    return {k: v for k, v in values.items() if v is not None}


def build_payload(call: BackendCall, config: OllamaConfig, stream: bool) -> bytes:
    """The `/api/chat` body for one attempt."""
    req: ChatRequest = call.request
    body: dict[str, Any] = {"model": call.model_id, "messages": _messages(req.messages),
                            "stream": stream, "truncate": False}
    if req.tools and plain(req.tool_choice) != "none":
        body["tools"] = plain(req.tools)
    if req.reasoning_effort:
        body["think"] = req.reasoning_effort
    opts = _options(req, config)
    if opts:
        body["options"] = opts
    rf = plain(req.response_format)
    if isinstance(rf, dict):
        if rf.get("type") == "json_object":
            body["format"] = "json"
        elif rf.get("type") == "json_schema":
            spec = rf.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            body["format"] = schema if isinstance(schema, dict) else "json"
    keep_alive = req.keep_alive if req.keep_alive is not None else config.keep_alive
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    return orjson.dumps(body)
