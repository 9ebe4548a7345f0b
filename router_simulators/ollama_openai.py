"""Ollama simulator, OpenAI-compatible surface (docs/protocols.md, Ollama): `POST
/v1/chat/completions`
(whole `chat.completion` bodies, or `chat.completion.chunk` SSE ending in `data: [DONE]`, with a
usage chunk when `stream_options.include_usage`) and `GET /v1/models`.

Reasoning goes out as `reasoning` (Ollama's field), effort comes from `reasoning_effort` or
`reasoning.effort`; errors use OpenAI's `{"error": {...}}` shape. Residency, slots, faults and
the fault-aware writers are shared with the native API (`ollama_state.py`); the app itself is
built in `ollama.py`.
"""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
from aiohttp import web

from router_simulators.ollama_state import JSON_TYPE, SIM_KEY, Fail, call_id, json_body
from router_simulators.prefill import is_prefill, scripted_answer
from router_simulators.script import Script


def _oai_err(e: Fail) -> web.Response:
    typ = {400: "invalid_request_error", 404: "not_found_error"}.get(e.status, "api_error")
    headers = {"Retry-After": f"{e.retry_after:g}"} if e.retry_after is not None else None
    body = {"error": {"message": e.message, "type": typ, "param": None, "code": None}}
    return web.Response(body=orjson.dumps(body), status=e.status, content_type=JSON_TYPE,
                        headers=headers)


def _v1_effort(data: dict[str, Any]) -> str:
    effort = data.get("reasoning_effort")
    if effort is None and isinstance(data.get("reasoning"), dict):
        effort = data["reasoning"].get("effort")
    if effort is None:
        return "medium"
    if effort in ("low", "medium", "high"):
        return str(effort)
    raise Fail(400, f"invalid reasoning value: '{effort}' (must be \"high\", \"medium\", "
                    '"low", or "none")')


def _v1_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise Fail(400, "[] is too short - 'messages'")
    for msg in messages:
        if not isinstance(msg, dict):
            raise Fail(400, "invalid message format")
        for tc in msg.get("tool_calls") or []:
            try:
                orjson.loads((tc.get("function") or {}).get("arguments") or "{}")
            except (orjson.JSONDecodeError, TypeError, AttributeError):
                raise Fail(400, "invalid tool call arguments") from None
    return messages


def _v1_calls(s: Script) -> list[dict[str, Any]]:
    if s.tool_call is None:
        return []
    name, args = s.tool_call
    return [{"id": call_id(), "index": 0, "type": "function",
             "function": {"name": name, "arguments": orjson.dumps(args).decode()}}]


async def v1_chat(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    try:
        data = await json_body(request)
        m = sim.lookup(data.get("model"))
        effort = _v1_effort(data)
        messages = _v1_messages(data.get("messages"))
        mt = data.get("max_tokens")
        f = sim.take_fault(m.tag, is_prefill(messages))
        s = scripted_answer(messages, data.get("tools"), effort,
                            mt if isinstance(mt, int) and mt > 0 else None,
                            echo=f is not None and f.kind == "echo_prefill",
                            lengths=sim.cfg.answer_lengths, model=m.tag)
        if await sim.pre_fault(request, f, m.tag):
            return web.Response()
        sem, _ = await sim.acquire(m, None)
    except Fail as e:
        return _oai_err(e)
    ok = False
    delay = sim.pace(m)
    head = {"id": f"chatcmpl-{random.randint(0, 999)}", "created": int(time.time()),
            "model": m.tag, "system_fingerprint": "fp_ollama"}
    usage = {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
             "total_tokens": s.prompt_tokens + s.completion_tokens}
    finish = s.finish_reason
    try:
        await sim.prefill(s)
        if not data.get("stream"):
            msg: dict[str, Any] = {"role": "assistant", "content": "".join(s.content)}
            if s.reasoning:
                msg["reasoning"] = "".join(s.reasoning)
            if s.tool_call:
                msg["tool_calls"] = _v1_calls(s)
            if f is not None and f.kind == "no_terminator":
                finish = None  # type: ignore[assignment]
            body = orjson.dumps({**head, "object": "chat.completion", "choices": [
                {"index": 0, "message": msg, "finish_reason": finish}], "usage": usage})
            resp = await sim.whole(request, body, f, delay * s.completion_tokens)
            ok = f is None or f.kind == "slow_first_token"
            return resp

        def chunk(delta: dict[str, Any], fin: str | None = None) -> bytes:
            return b"data: " + orjson.dumps({**head, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": delta, "finish_reason": fin}]}) + b"\n\n"

        lines = [chunk({"role": "assistant", "content": "", "reasoning": t}) for t in s.reasoning]
        lines += [chunk({"role": "assistant", "content": t}) for t in s.content]
        if s.tool_call:
            lines.append(chunk({"role": "assistant", "content": "", "tool_calls": _v1_calls(s)}))
        final = chunk({}, finish)
        if (data.get("stream_options") or {}).get("include_usage"):
            final += b"data: " + orjson.dumps({**head, "object": "chat.completion.chunk",
                                               "choices": [], "usage": usage}) + b"\n\n"
        final += b"data: [DONE]\n\n"
        err = {"error": {"message": "simulated error mid-stream", "type": "api_error",
                         "param": None, "code": None}}
        sresp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await sresp.prepare(request)
        ok = await sim.emit(request, sresp, lines, final, f,
                            b"data: " + orjson.dumps(err) + b"\n\n", b"data: {oops\n\n", m)
        return sresp
    except Fail as e:
        return _oai_err(e)
    finally:
        sim.release(m, sem, 300.0, ok)


async def v1_models(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    return web.json_response({"object": "list", "data": [
        {"id": tag, "object": "model", "created": 1754413200, "owned_by": "library"}
        for tag in sim.models]})
