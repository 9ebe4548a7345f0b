"""Simulator of the Amazon Bedrock runtime for gpt-oss, reached by real boto3 via `endpoint_url`.

Routes (docs/protocols.md, Bedrock Converse and AWS event-stream encoding): `POST
/model/{modelId}/converse`, `/converse-stream`, `/invoke`,
`/invoke-with-response-stream`; the id arrives URL-encoded (`openai.gpt-oss-20b-1%3A0`).

- Converse: JSON `{output.message.content[reasoningContent|text|toolUse], stopReason, usage,
  metrics}`; ConverseStream: one event-stream frame per token (chunked transfer encoding).
- Invoke: OpenAI `chat.completion` with reasoning inline as `<reasoning>…</reasoning>` before the
  answer; InvokeModelWithResponseStream: `chunk` events `{"bytes": base64(chat.completion.chunk)}`
  (reasoning as tagged `delta.content`, or `delta.reasoning` with `invoke_reasoning="field"`).
- Errors before output: status, `x-amzn-ErrorType: <Code>:http://internal.amazon.com/coral/...`,
  body `{"message": ...}` (+ `originalStatusCode` for ModelErrorException). In-stream errors are
  exception frames with lower-camel names (`throttlingException`, `modelStreamErrorException`).
- Request checks that real Converse makes and the backend must satisfy: roles alternate starting
  with user, no empty content, no `reasoningText.signature` (gpt-oss), toolUse/toolResult need
  `toolConfig`, each toolResult answers a toolUse of the previous turn, prompt fits the window.

Faults: the `script.py` vocabulary. Bedrock-specific optional fields on a posted fault:
`error_type` (override the exception name, e.g. `ModelNotReadyException`) and `original_status`
(ModelErrorException / modelStreamErrorException `originalStatusCode`, default 500).
A prompt (plus maxTokens) over `context_window` (`--context-window`): 400 ValidationException
"Input is too long for requested model. The input length (N tokens with maxTokens) exceeds ..."
(`context_message`). Prefill (a final assistant turn) is continued (`prefill.py`);
`reject_prefill` answers Bedrock's ValidationException about the last turn. Service time flags
(`service_time.py`): `--answer-tokens`, `--seed`, `--prefill-tps`, `--batch-slowdown`.
`context_exceeded`: 400 ValidationException before output for converse/invoke; for
converse-stream a `messageStop` with stopReason `model_context_window_exceeded` and no output.
`content_filter`: stopReason `guardrail_intervened` (finish_reason `content_filter` on invoke).

The last request (body, model id, operation, headers) is kept on `app[STATE]` for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from router_simulators import eventstream, service_time
from router_simulators.bedrock_wire import (
    ERROR_TYPES,
    STOP_REASONS,
    check_converse,
    context_message,
    converse_body,
    converse_events,
    converse_to_script_input,
    converse_usage,
    invoke_body,
    invoke_deltas,
    invoke_to_script_input,
    midstream_exception,
    openai_usage,
)
from router_simulators.prefill import BEDROCK_PREFILL_REJECTED, is_prefill, scripted_answer
from router_simulators.script import Fault, FaultQueue, Script, SimStats, prompt_token_count
from router_simulators.server import run_forever
from router_simulators.service_time import AnswerLengths, ServiceTime

KNOWN_MODELS = ("openai.gpt-oss-20b-1:0", "openai.gpt-oss-120b-1:0")
_CORAL = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
_DEFAULT_ERROR = "InternalServerException"
_STREAM_FAULTS = ("cut", "stall", "malformed", "midstream_error")


@dataclass
class BedrockSimConfig:
    token_delay_s: float = 0.0
    models: tuple[str, ...] = KNOWN_MODELS
    context_window: int = 128_000
    # service time (service_time.py): answer lengths, prefill rate, batched-decode slowdown
    answer_lengths: AnswerLengths = field(default_factory=AnswerLengths)
    prefill_tps: float = 0.0
    batch_slowdown: float = 0.0

    def service(self) -> ServiceTime:
        return ServiceTime(self.token_delay_s, self.prefill_tps, self.batch_slowdown)
    invoke_reasoning: str = "tags"  # "tags" (<reasoning> in content) or "field" (delta.reasoning)


@dataclass
class SimState:
    config: BedrockSimConfig
    faults: FaultQueue = field(default_factory=FaultQueue)
    stats: SimStats = field(default_factory=SimStats)
    last_request: dict[str, Any] | None = None
    last_model: str | None = None
    last_operation: str | None = None
    last_headers: dict[str, str] = field(default_factory=dict)


STATE = web.AppKey("bedrock_sim_state", SimState)


class _Abort(Exception):
    """The handler closed the connection on purpose (reset/cut)."""


def _error(code: str, status: int, message: str, **extra: Any) -> web.Response:
    headers = {"x-amzn-ErrorType": code + _CORAL, "x-amzn-RequestId": str(uuid.uuid4())}
    if extra.get("retry_after") is not None:
        headers["Retry-After"] = f"{extra.pop('retry_after'):g}"
    extra.pop("retry_after", None)
    body = {"message": message, **extra}
    return web.Response(status=status, body=orjson.dumps(body), headers=headers,
                        content_type="application/json")


def _fault_error(fault: Fault) -> web.Response:
    code = getattr(fault, "error_type", None) or ERROR_TYPES.get(fault.status, _DEFAULT_ERROR)
    extra: dict[str, Any] = {"retry_after": fault.retry_after}
    if code == "ModelErrorException":
        extra["originalStatusCode"] = getattr(fault, "original_status", 500)
        extra["resourceName"] = "gpt-oss"
    return _error(code, fault.status, f"simulated {code}", **extra)


def _closed(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def _wait_until_closed(request: web.Request) -> None:
    while not _closed(request):
        await asyncio.sleep(0.05)


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
    raise _Abort


async def _open_stream(request: web.Request, extra: dict[str, str]) -> web.StreamResponse:
    headers = {"Content-Type": "application/vnd.amazon.eventstream",
               "x-amzn-RequestId": str(uuid.uuid4()), **extra}
    resp = web.StreamResponse(status=200, headers=headers)
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    return resp


async def _send_frames(request: web.Request, resp: web.StreamResponse, frames: list[bytes],
                       tokens: list[bool], fault: Fault | None, mid_error: bytes | None,
                       final: list[bytes]) -> None:
    """Write frames one by one, applying a stream fault once `after_tokens` tokens are out
    (or at the terminator, if the answer is shorter than that)."""
    state = request.app[STATE]
    service = state.config.service()
    sent = 0
    kind = fault.kind if fault is not None else ""
    first = True
    items = [*zip(frames, tokens, strict=True), *[(f, False) for f in final]]
    for i, (data, is_token) in enumerate(items):
        fires = fault is not None and kind in _STREAM_FAULTS and (
            (is_token and sent >= fault.after_tokens) or i == len(frames))
        if fires:
            if kind == "cut":
                await resp.write(data[: len(data) // 2])
                _abort(request)
            if kind == "stall":
                await _wait_until_closed(request)
                raise _Abort
            if kind == "malformed":
                await resp.write(data[:-4] + bytes(b ^ 0xFF for b in data[-4:]))
                return
            await resp.write(mid_error or b"")
            return
        if is_token and first and kind == "slow_first_token" and fault is not None:
            await asyncio.sleep(fault.delay_s)
        if is_token:
            first = False
            sent += 1
            delay = service.token_s(state.stats.in_flight)
            if delay > 0:
                await asyncio.sleep(delay)
        await resp.write(data)


async def _handle(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    op = request.match_info["op"]
    model_id = unquote(request.match_info["modelId"])
    try:
        body = await request.json(loads=orjson.loads)
    except ValueError:
        return _error("SerializationException", 400, "request body is not valid JSON")
    if not isinstance(body, dict):
        return _error("ValidationException", 400, "request body must be a JSON object")
    state.last_request, state.last_model, state.last_operation = body, model_id, op
    state.last_headers = dict(request.headers)
    state.stats.begin(model_id)
    completed = False
    try:
        resp = await _dispatch(request, state, op, model_id, body)
        completed = 200 <= resp.status < 300
        return resp
    except _Abort:
        # the transport is gone; aiohttp needs a response object it will fail to write
        return web.Response(status=500)
    finally:
        state.stats.end(completed)


async def _dispatch(request: web.Request, state: SimState, op: str, model_id: str,
                    body: dict[str, Any]) -> web.StreamResponse:
    if model_id not in state.config.models:
        return _error("ResourceNotFoundException", 404, f"The model {model_id} does not exist.")
    converse = op.startswith("converse")
    problem = check_converse(body) if converse else None
    if problem is not None:
        return _error("ValidationException", 400, problem)
    messages, tools, effort, max_tokens = (
        converse_to_script_input(body) if converse else invoke_to_script_input(body))
    prompt_tokens = prompt_token_count(messages)
    window = state.config.context_window
    if prompt_tokens + (max_tokens or 0) > window:
        return _error("ValidationException", 400, context_message(prompt_tokens, window))
    prefill = is_prefill(messages)
    fault = state.faults.take(model_id, prefill)
    if fault is not None:
        state.stats.faults_applied += 1
        streaming = op.endswith("stream")
        early = await _early_fault(request, fault, streaming=streaming, converse=converse)
        if early is not None:
            return early
    script = scripted_answer(messages, tools, effort, max_tokens,
                             echo=fault is not None and fault.kind == "echo_prefill",
                             lengths=state.config.answer_lengths, model=model_id)
    wait = state.config.service().prefill_s(script.prompt_tokens)
    if wait > 0:
        await asyncio.sleep(wait)
    filtered = fault is not None and fault.kind == "content_filter"
    if op == "converse":
        return web.json_response(converse_body(script, filtered), dumps=_dumps,
                                 headers={"x-amzn-RequestId": str(uuid.uuid4())})
    if op == "invoke":
        return web.json_response(invoke_body(script, model_id, filtered), dumps=_dumps,
                                 headers={"x-amzn-RequestId": str(uuid.uuid4())})
    if op == "converse-stream":
        return await _converse_stream(request, script, fault)
    return await _invoke_stream(request, state, script, model_id, fault)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


async def _early_fault(request: web.Request, fault: Fault, *, streaming: bool,
                       converse: bool) -> web.StreamResponse | None:
    if fault.kind == "status":
        return _fault_error(fault)
    if fault.kind == "reject_prefill":
        return _error("ValidationException", 400, BEDROCK_PREFILL_REJECTED)
    if fault.kind == "reset":
        _abort(request)
    if fault.kind == "hang":
        await _wait_until_closed(request)
        raise _Abort
    if fault.kind == "slow_first_token" and not streaming:
        await asyncio.sleep(fault.delay_s)
    if fault.kind == "context_exceeded" and not (streaming and converse):
        return _error("ValidationException", 400, "Input is too long for requested model.")
    return None


async def _converse_stream(request: web.Request, script: Script,
                           fault: Fault | None) -> web.StreamResponse:
    kind = fault.kind if fault is not None else ""
    stop = STOP_REASONS[script.finish_reason]
    events = converse_events(script)
    if kind == "context_exceeded":
        events, stop = [], "model_context_window_exceeded"
    if kind == "content_filter" and fault is not None:
        deltas = [i for i, e in enumerate(events) if e[0] == "contentBlockDelta"]
        if fault.after_tokens < len(deltas):
            events = events[: deltas[fault.after_tokens]]
        stop = "guardrail_intervened"
    frames = [eventstream.event(k, orjson.dumps(p)) for k, p in events]
    tokens = [k == "contentBlockDelta" for k, _ in events]
    metadata = {"usage": converse_usage(script), "metrics": {"latencyMs": 1}}
    final = [eventstream.event("messageStop", orjson.dumps({"stopReason": stop})),
             eventstream.event("metadata", orjson.dumps(metadata))]
    if kind == "no_terminator":
        final = []
    mid = None
    if kind == "midstream_error" and fault is not None:
        name, payload = midstream_exception(fault)
        mid = eventstream.exception(name, orjson.dumps(payload))
    resp = await _open_stream(request, {})
    await resp.write(eventstream.event("messageStart", b'{"role":"assistant"}'))
    await _send_frames(request, resp, frames, tokens, fault, mid, final)
    await resp.write_eof()
    return resp


async def _invoke_stream(request: web.Request, state: SimState, script: Script, model_id: str,
                         fault: Fault | None) -> web.StreamResponse:
    cid, created = "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_id,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return eventstream.event("chunk", orjson.dumps(
            {"bytes": base64.b64encode(orjson.dumps(obj)).decode()}))

    kind = fault.kind if fault is not None else ""
    deltas = invoke_deltas(script, state.config.invoke_reasoning == "field")
    finish = script.finish_reason
    if kind == "content_filter" and fault is not None:
        deltas, finish = deltas[: fault.after_tokens], "content_filter"
    usage = openai_usage(script)
    metrics = {"inputTokenCount": script.prompt_tokens,
               "outputTokenCount": script.completion_tokens,
               "invocationLatency": 1, "firstByteLatency": 1}
    final = [] if kind == "no_terminator" else [
        chunk({}, finish, usage=usage, **{"amazon-bedrock-invocationMetrics": metrics})]
    mid = None
    if kind == "midstream_error" and fault is not None:
        name, payload = midstream_exception(fault)
        mid = eventstream.exception(name, orjson.dumps(payload))
    resp = await _open_stream(request, {"X-Amzn-Bedrock-Content-Type": "application/json"})
    await _send_frames(request, resp, [chunk(d) for d in deltas], [True] * len(deltas), fault,
                       mid, final)
    await resp.write_eof()
    return resp


async def _post_faults(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        faults = []
        for raw in body.get("faults", []):
            d = dict(raw)
            extras = {k: d.pop(k) for k in ("error_type", "original_status") if k in d}
            fault = Fault.from_dict(d)
            for k, v in extras.items():
                setattr(fault, k, v)
            faults.append(fault)
    except (ValueError, TypeError, AttributeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    request.app[STATE].faults.add(faults)
    return web.json_response({"queued": len(faults)})


async def _delete_faults(request: web.Request) -> web.Response:
    request.app[STATE].faults.clear()
    return web.json_response({"cleared": True})


async def _get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats.as_dict())


async def _post_reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.faults.clear()
    state.stats.reset()
    state.last_request = state.last_model = state.last_operation = None
    return web.json_response({"reset": True})


def create_app(config: BedrockSimConfig | None = None) -> web.Application:
    app = web.Application()
    app[STATE] = SimState(config or BedrockSimConfig())
    app.router.add_post(
        r"/model/{modelId}/{op:converse|converse-stream|invoke|invoke-with-response-stream}",
        _handle)
    app.router.add_post("/_sim/faults", _post_faults)
    app.router.add_delete("/_sim/faults", _delete_faults)
    app.router.add_get("/_sim/stats", _get_stats)
    app.router.add_post("/_sim/reset", _post_reset)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="Amazon Bedrock runtime simulator (gpt-oss)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens")
    parser.add_argument("--context-window", type=int, default=128_000,
                        help="prompt + maxTokens limit in tokens (ValidationException above it)")
    service_time.add_flags(parser)
    args = parser.parse_args()
    lengths, prefill_tps, slowdown = service_time.from_args(args)
    cfg = BedrockSimConfig(token_delay_s=args.token_delay, context_window=args.context_window,
                           answer_lengths=lengths, prefill_tps=prefill_tps,
                           batch_slowdown=slowdown)
    run_forever(create_app(cfg), args.host, args.port)


if __name__ == "__main__":
    main()
