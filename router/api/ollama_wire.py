"""Decode Ollama's native `/api/chat` and `/api/generate` bodies into `ChatRequest` dicts.

Pure functions over parsed JSON; `ChatRequest.model_validate` runs afterwards (the caller maps
its errors to Ollama's `{"error": "..."}` shape). What maps where:

    stream (default TRUE, as Ollama)    -> stream
    think true | false | low|medium|high -> reasoning_effort (true: the model's default;
                                           false: "low", since gpt-oss always reasons; the
                                           answer then carries no `thinking`)
    tools                               -> tools (the same function-tool shape)
    format "json" | {JSON schema}       -> response_format json_object | json_schema
    options.num_predict                 -> max_tokens (negative: no limit)
    options.temperature/top_p/top_k/stop/seed/num_ctx -> the same fields (num_ctx routes)
    keep_alive                          -> keep_alive (sent to local Ollama backends only)
    messages[].thinking                 -> the assistant turn's reasoning
    messages[].tool_calls (object args) -> tool_calls (ids kept, or made up stably)
    role "tool" + tool_name [+ tool_call_id] -> a tool message paired with its call
    generate: system + prompt           -> a system and a user message

Other `options` (repeat_penalty, num_gpu, ...) are ignored, as Ollama ignores options a model
does not use. What gpt-oss or a router cannot do is a 400 naming it: images, `raw` prompts,
`template`, `suffix`, `context` (the old token context: use /api/chat), `logprobs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.errors import InvalidRequest

LATEST = ":latest"
_EFFORTS = ("low", "medium", "high")
# ChatRequest fields back to the Ollama names clients sent, for error messages.
PARAM_NAMES = {"max_tokens": "options.num_predict", "temperature": "options.temperature",
               "top_p": "options.top_p", "top_k": "options.top_k", "stop": "options.stop",
               "seed": "options.seed", "num_ctx": "options.num_ctx",
               "response_format": "format", "reasoning_effort": "think"}


@dataclass(frozen=True, slots=True)
class Decoded:
    """A body translated for `ChatRequest.model_validate`, plus what the encoder needs."""

    data: dict[str, Any]
    model: str  # the name the client sent (echoed back in `model`)
    show_thinking: bool  # False when the client sent think: false
    stream: bool


def model_name(raw: Any, field: str = "model") -> str:
    """The model the client names; `name:latest` is `name`."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidRequest(f"{field} is required", param=field)
    name = raw.strip()
    return name[: -len(LATEST)] if name.lower().endswith(LATEST) else name


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    v = body.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise InvalidRequest(f"{key} must be true or false", param=key)
    return v


def _effort(think: Any) -> tuple[str | None, bool]:
    """(reasoning_effort, show thinking) for Ollama's `think`."""
    if think is None or think is True:
        return None, True
    if think is False:
        return "low", False
    if isinstance(think, str) and think in _EFFORTS:
        return think, True
    raise InvalidRequest(f'invalid think value: {str(think)[:40]!r} (must be "high", "medium", '
                         '"low", true, or false)', param="think")


def _format(fmt: Any) -> dict[str, Any] | None:
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "ollama_format", "schema": fmt}}
    raise InvalidRequest('format must be "json" or a JSON schema object', param="format")


def _options(body: dict[str, Any], out: dict[str, Any]) -> None:
    opts = body.get("options")
    if opts is None:
        return
    if not isinstance(opts, dict):
        raise InvalidRequest("options must be an object", param="options")
    predict = opts.get("num_predict")
    if isinstance(predict, int) and not isinstance(predict, bool) and predict <= 0:
        predict = None  # -1: no limit, -2: fill the context; 0 as unset
    if predict is not None:
        out["max_tokens"] = predict
    for key in ("temperature", "top_p", "top_k", "stop", "seed", "num_ctx"):
        if opts.get(key) is not None:
            out[key] = opts[key]


def _unsupported(body: dict[str, Any], where: str = "") -> None:
    images = body.get("images")
    if images:
        raise InvalidRequest(f"{where}images are not supported: gpt-oss is a text-only model",
                             param=f"{where}images")


def _common(body: dict[str, Any], messages: list[dict[str, Any]]) -> Decoded:
    if body.get("logprobs"):
        raise InvalidRequest("logprobs are not supported by this router", param="logprobs")
    model = model_name(body.get("model"))
    effort, show = _effort(body.get("think"))
    stream = _bool(body, "stream", True)
    data: dict[str, Any] = {"model": model, "messages": messages, "stream": stream,
                            "include_usage": True}
    if effort is not None:
        data["reasoning_effort"] = effort
    if body.get("tools"):
        data["tools"] = body["tools"]
    fmt = _format(body.get("format"))
    if fmt is not None:
        data["response_format"] = fmt
    _options(body, data)
    if body.get("keep_alive") is not None:
        data["keep_alive"] = body["keep_alive"]
    return Decoded(data, model, show, stream)


class _Pairing:
    """Tool results to the tool calls they answer: by `tool_call_id` when it names a pending
    call, else by `tool_name`, else in order (Ollama clients often send neither id)."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, str]] = []  # (id, name) of unanswered calls

    def calls(self, raw: Any, turn: int) -> list[dict[str, Any]]:
        if not isinstance(raw, list):
            raise InvalidRequest(f"messages[{turn}].tool_calls must be an array",
                                 param=f"messages[{turn}].tool_calls")
        self.pending = []
        out = []
        for i, tc in enumerate(raw):
            fn = tc.get("function") if isinstance(tc, dict) else None
            if not isinstance(fn, dict):
                raise InvalidRequest(f"messages[{turn}].tool_calls[{i}].function must be an "
                                     "object", param=f"messages[{turn}].tool_calls[{i}]")
            given = tc.get("id")
            call_id = given if isinstance(given, str) and given else f"call_{turn}_{i}"
            args = fn.get("arguments")
            out.append({"id": call_id, "type": "function", "function": {
                "name": fn.get("name"), "arguments": {} if args is None else args}})
            self.pending.append((call_id, str(fn.get("name"))))
        return out

    def answer(self, given: Any, name: Any, turn: int) -> str:
        pick = next((p for p in self.pending if p[0] == given), None)
        if pick is None and isinstance(name, str):
            pick = next((p for p in self.pending if p[1] == name), None)
        if pick is None and self.pending:
            pick = self.pending[0]
        if pick is not None:
            self.pending.remove(pick)
            return pick[0]
        if isinstance(given, str) and given:
            return given
        raise InvalidRequest(f"messages[{turn}] is a tool result with no tool call before it "
                             "to answer", param=f"messages[{turn}]")


def chat_messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise InvalidRequest("messages must be an array", param="messages")
    pairing = _Pairing()
    out: list[dict[str, Any]] = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise InvalidRequest(f"messages[{i}] must be an object", param=f"messages[{i}]")
        _unsupported(m, f"messages[{i}].")
        role = m.get("role")
        msg: dict[str, Any] = {"role": role, "content": m.get("content")}
        if role == "assistant":
            if m.get("thinking"):
                msg["reasoning"] = m["thinking"]
            if m.get("tool_calls"):
                msg["tool_calls"] = pairing.calls(m["tool_calls"], i)
        elif role == "tool":
            msg["tool_call_id"] = pairing.answer(m.get("tool_call_id"), m.get("tool_name"), i)
            if isinstance(m.get("tool_name"), str):
                msg["name"] = m["tool_name"]
        out.append(msg)
    return out


def decode_chat(body: dict[str, Any]) -> Decoded:
    _unsupported(body)
    return _common(body, chat_messages(body.get("messages")))


def decode_generate(body: dict[str, Any]) -> Decoded:
    _unsupported(body)
    if body.get("raw"):
        raise InvalidRequest("raw prompts are not supported: the router applies gpt-oss's "
                             "chat format itself (send a plain prompt, or use /api/chat)",
                             param="raw")
    for key, why in (("suffix", "gpt-oss has no fill-in-the-middle mode"),
                     ("template", "the router applies gpt-oss's own template"),
                     ("context", "send the conversation to /api/chat instead")):
        if body.get(key):
            raise InvalidRequest(f"{key} is not supported: {why}", param=key)
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": body["system"]})
    messages.append({"role": "user", "content": body.get("prompt")})
    return _common(body, messages)


def is_load_request(body: dict[str, Any], generate: bool) -> bool:
    """Ollama's load/unload call: no prompt (generate) or no messages (chat)."""
    if generate:
        return not body.get("prompt") and not body.get("system") and not body.get("images")
    return body.get("messages") in (None, [])


def ollama_param(param: str | None) -> str | None:
    """A ChatRequest parameter path in the names the Ollama client used."""
    if not param:
        return param
    head, sep, rest = param.partition(".")
    base, bracket, tail = head.partition("[")
    name = PARAM_NAMES.get(base)
    return f"{name}{bracket}{tail}{sep}{rest}" if name else param
