"""SageMaker runtime simulator: an endpoint serving gpt-oss behind a vLLM-style container.

Routes (docs/protocols.md, SageMaker):
    POST /endpoints/{name}/invocations                  chat.completion JSON
    POST /endpoints/{name}/invocations-response-stream  event stream of `PayloadPart` frames whose
        raw bytes are SSE `data: {chunk}\\n\\n` ... `data: [DONE]\\n\\n`, cut at arbitrary byte
        positions (also inside multi-byte UTF-8 characters: the answer ends with `utf8_suffix`,
        " – café" by default); one part may hold several events (`split_parts`, `part_sizes`)
    POST /  with `X-Amz-Target: SageMaker.DescribeEndpoint`  control-plane readiness (JSON 1.1)
    /_sim/faults (POST, DELETE), GET /_sim/stats, POST /_sim/reset     (as every simulator)

Reasoning is returned as `reasoning` or `reasoning_content` (`reasoning_field`). Unknown endpoint:
400 ValidationError. Errors: status + `x-amzn-ErrorType: <Code>:` + `{"Message": ...}` (ModelError
adds OriginalStatusCode, OriginalMessage, LogStreamArn). Faults (script.py vocabulary) as SageMaker
shapes:

    status            400 ValidationError, 424 ModelError (OriginalStatusCode = `original_status`,
                      default 500), 429 ThrottlingException, 500 InternalFailure, 503
                      ServiceUnavailable, other statuses InternalFailure; `error_code` overrides
                      the code (ModelNotReadyException, InternalDependencyException, ...)
    reset / hang      abort the connection / never answer (before any header)
    slow_first_token  wait `delay_s` before the first token
    cut / stall       stream: abort the connection / go silent after `after_tokens` tokens
    malformed         stream: a frame with a bad CRC after `after_tokens` tokens
    midstream_error   stream: `midstream_style` after `after_tokens` tokens: a ModelStreamError or
                      InternalStreamFailure exception frame, or an SSE `data: {"error": ...}`
    no_terminator     stream: every token, then neither a finish chunk nor `[DONE]`
    context_exceeded  ModelError 424, OriginalStatusCode 400, OriginalMessage = the container's
                      JSON `{"error": {"code": "context_length_exceeded", ...}}`
    content_filter    200 with no content and finish_reason "content_filter" (OpenAI's shape)
    reject_prefill    ModelError 424, OriginalStatusCode 400 (vLLM's error body) for a request
                      ending in an assistant message; echo_prefill, flap: as script.py says

A prompt + max_tokens over `context_window` (`--context-window`, vLLM's max_model_len) is the
context_exceeded ModelError with vLLM's full sentence (window and counts). A final assistant
message is continued (`prefill.py`). Service time: `--answer-tokens`, `--seed`, `--prefill-tps`,
`--batch-slowdown` (`service_time.py`; decode slowed by the requests in flight).

Non-stream requests treat cut as reset, stall as hang and malformed as a non-JSON 200 body; the
other stream-only faults do not apply to them. Faults and stats are keyed by the body's `model`
(falling back to the endpoint name); `GET /_sim/stats` adds `last_request` (endpoint, inference
component, target variant, body) so tests can check what a client sent.

This module owns the HTTP side (handlers, faults in their HTTP form, `PayloadPart` framing,
`create_app`, `main`); the bodies and error details are built by `sagemaker_wire.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from typing import Any

import orjson
from aiohttp import web

from router_simulators import eventstream, service_time
from router_simulators.prefill import PREFILL_REJECTED_OPENAI, is_prefill
from router_simulators.sagemaker_wire import (
    FINISH,
    STATUS_CODES,
    SageMakerFault,
    answer,
    completion_body,
    context_exceeded_error,
    context_overflow,
    malformed_part,
    model_error_fields,
    prefill_rejected_error,
    sse_error,
    stream_events,
    stream_exception_payload,
    upstream_error,
)
from router_simulators.sagemaker_wire import SageMakerSimConfig as SageMakerSimConfig
from router_simulators.script import Fault, FaultQueue, SimStats
from router_simulators.server import run_forever
from router_simulators.service_time import ServiceTime

FAULTS_KEY = web.AppKey("faults", FaultQueue)
STATS_KEY = web.AppKey("stats", SimStats)


CONFIG_KEY = web.AppKey("config", SageMakerSimConfig)
LAST_KEY: web.AppKey[dict[str, Any]] = web.AppKey("last_request", dict)


def error_response(status: int, code: str, message: str, retry_after: float | None = None,
                   **extra: Any) -> web.Response:
    body = orjson.dumps({"Message": message, **extra})
    headers = {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.sagemaker/"}
    if retry_after is not None:
        headers["Retry-After"] = f"{retry_after:g}"
    return web.Response(status=status, body=body, headers=headers, content_type="application/json")


def _status_error(fault: Fault, endpoint: str, cfg: SageMakerSimConfig) -> web.Response:
    extra = fault if isinstance(fault, SageMakerFault) else SageMakerFault(kind="status")
    code = extra.error_code or STATUS_CODES.get(fault.status, "InternalFailure")
    if code != "ModelError":
        return error_response(fault.status, code, f"simulated {code}", fault.retry_after)
    orig = extra.original_status or 500
    return _model_error(endpoint, cfg, orig, upstream_error(orig), fault.status)


def _model_error(
    endpoint: str, cfg: SageMakerSimConfig, orig: int, inner: dict[str, Any], status: int = 424
) -> web.Response:
    message, extra = model_error_fields(endpoint, cfg.region, cfg.account, orig, inner)
    return error_response(status, "ModelError", message, **extra)


def context_exceeded(endpoint: str, cfg: SageMakerSimConfig) -> web.Response:
    return _model_error(endpoint, cfg, 400, context_exceeded_error())


async def _wait_closed(request: web.Request, limit_s: float = 600.0) -> None:
    """Keep the socket open, sending nothing, until the client goes away (hang / stall)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(0.02)


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


class _PartWriter:
    """Cuts the SSE byte stream into PayloadPart frames at deterministic, arbitrary positions."""

    def __init__(self, resp: web.StreamResponse, cfg: SageMakerSimConfig) -> None:
        self._resp, self._cfg = resp, cfg
        self._sizes = itertools.cycle(cfg.part_sizes or (1 << 20,))
        self._size = next(self._sizes)
        self._buf = b""

    async def _part(self, data: bytes) -> None:
        await self._resp.write(eventstream.event("PayloadPart", data, "application/octet-stream"))

    async def write(self, data: bytes) -> None:
        if not self._cfg.split_parts:
            await self._part(data)
            return
        self._buf += data
        while len(self._buf) >= self._size:
            part, self._buf = self._buf[: self._size], self._buf[self._size :]
            self._size = next(self._sizes)
            await self._part(part)
        if self._cfg.token_delay_s > 0:
            await self.flush()

    async def flush(self) -> None:
        if self._buf:
            part, self._buf = self._buf, b""
            await self._part(part)


async def _pre_output(request: web.Request, fault: Fault | None, endpoint: str,
                      cfg: SageMakerSimConfig, stream: bool) -> web.StreamResponse | None:
    """Faults that act before any output; returns the response to send, if one."""
    if fault is None:
        return None
    kind = fault.kind
    if kind == "status":
        return _status_error(fault, endpoint, cfg)
    if kind == "context_exceeded":
        return context_exceeded(endpoint, cfg)
    if kind == "reject_prefill":
        return _model_error(endpoint, cfg, 400, prefill_rejected_error(PREFILL_REJECTED_OPENAI))
    if kind == "reset" or (kind == "cut" and not stream):
        _abort(request)
        return web.Response(status=500)
    if kind == "hang" or (kind == "stall" and not stream):
        await _wait_closed(request)
        return web.Response(status=500)
    if kind == "slow_first_token":
        await asyncio.sleep(fault.delay_s)
    return None


async def _prefill(cfg: SageMakerSimConfig, prompt_tokens: int) -> None:
    wait = ServiceTime(prefill_tps=cfg.prefill_tps).prefill_s(prompt_tokens)
    if wait > 0:
        await asyncio.sleep(wait)


_Begun = tuple[str, dict[str, Any], str, Fault | None]


async def _begin(request: web.Request) -> _Begun | web.Response:
    cfg = request.app[CONFIG_KEY]
    endpoint = request.match_info["name"]
    if endpoint not in cfg.endpoints:
        return error_response(400, "ValidationError",
                              f"Endpoint {endpoint} of account {cfg.account} not found.")
    try:
        body = orjson.loads(await request.read())
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise ValueError("'messages' is required")
    except ValueError as exc:
        inner = {"error": {"message": str(exc), "type": "BadRequestError", "code": 400}}
        return _model_error(endpoint, cfg, 400, inner)
    model = str(body.get("model") or endpoint)
    overflow = context_overflow(body, cfg.context_window)
    if overflow is not None:
        return _model_error(endpoint, cfg, 400, overflow)
    request.app[LAST_KEY].clear()
    request.app[LAST_KEY].update(
        endpoint=endpoint, body=body,
        inference_component=request.headers.get("X-Amzn-SageMaker-Inference-Component"),
        target_variant=request.headers.get("X-Amzn-SageMaker-Target-Variant"),
    )
    fault = request.app[FAULTS_KEY].take(model, is_prefill(body["messages"]))
    stats = request.app[STATS_KEY]
    stats.begin(model)
    if fault is not None:
        stats.faults_applied += 1
    return endpoint, body, model, fault


async def invocations(request: web.Request) -> web.StreamResponse:
    begun = await _begin(request)
    if isinstance(begun, web.Response):
        return begun
    endpoint, body, _model, fault = begun
    cfg, stats = request.app[CONFIG_KEY], request.app[STATS_KEY]
    ok = False
    try:
        early = await _pre_output(request, fault, endpoint, cfg, stream=False)
        if early is not None:
            return early
        if fault is not None and fault.kind == "malformed":
            return web.Response(body=b'{"choices": [', content_type="application/json")
        a = answer(body, endpoint, cfg.utf8_suffix, fault, cfg.answer_lengths)
        await _prefill(cfg, a.script.prompt_tokens)
        out = completion_body(a, cfg.reasoning_field)
        ok = True
        return web.Response(body=orjson.dumps(out), content_type="application/json",
                            headers={"x-Amzn-Invoked-Production-Variant": "AllTraffic"})
    finally:
        stats.end(completed=ok)


async def _stream_fault(request: web.Request, writer: _PartWriter, resp: web.StreamResponse,
                        fault: Fault, cfg: SageMakerSimConfig) -> None:
    await writer.flush()
    if fault.kind == "cut":
        _abort(request)
    elif fault.kind == "stall":
        await _wait_closed(request)
    elif fault.kind == "malformed":
        await resp.write(malformed_part())
    elif cfg.midstream_style == "sse":
        await writer.write(sse_error())
        await writer.flush()
    else:
        payload = stream_exception_payload(cfg.midstream_style)
        await resp.write(eventstream.exception(cfg.midstream_style, payload))


async def invocations_stream(request: web.Request) -> web.StreamResponse:
    begun = await _begin(request)
    if isinstance(begun, web.Response):
        return begun
    endpoint, body, _model, fault = begun
    cfg, stats = request.app[CONFIG_KEY], request.app[STATS_KEY]
    ok = False
    try:
        early = await _pre_output(request, fault, endpoint, cfg, stream=True)
        if early is not None:
            return early
        resp = web.StreamResponse(headers={
            "Content-Type": "application/vnd.amazon.eventstream",
            "X-Amzn-SageMaker-Content-Type": "text/event-stream",
            "x-Amzn-Invoked-Production-Variant": "AllTraffic"})
        await resp.prepare(request)
        a = answer(body, endpoint, cfg.utf8_suffix, fault, cfg.answer_lengths)
        await _prefill(cfg, a.script.prompt_tokens)
        service = ServiceTime(cfg.token_delay_s, cfg.prefill_tps, cfg.batch_slowdown)
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        writer, tokens = _PartWriter(resp, cfg), 0
        mid = {"cut", "stall", "malformed", "midstream_error"}
        for is_token, data in stream_events(a, cfg.reasoning_field, usage):
            if fault is not None and fault.kind in mid and tokens >= fault.after_tokens:
                await _stream_fault(request, writer, resp, fault, cfg)
                return resp
            if data == FINISH:
                if fault is not None and fault.kind == "no_terminator":
                    break
                continue
            if is_token:
                tokens += 1
                if cfg.token_delay_s > 0:
                    await asyncio.sleep(service.token_s(stats.in_flight))
            await writer.write(data)
        await writer.flush()
        await resp.write_eof()
        ok = fault is None or fault.kind != "no_terminator"
        return resp
    except (ConnectionResetError, ConnectionError):
        return web.Response(status=500)
    finally:
        stats.end(completed=ok)


async def control_plane(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG_KEY]
    target = request.headers.get("X-Amz-Target", "")

    def err(code: str, msg: str) -> web.Response:
        return web.Response(status=400, body=orjson.dumps({"__type": code, "message": msg}),
                            content_type="application/x-amz-json-1.1")

    if target != "SageMaker.DescribeEndpoint":
        return err("UnknownOperationException", f"{target or 'no target'} is not simulated")
    name = str(orjson.loads(await request.read() or b"{}").get("EndpointName", ""))
    if name not in cfg.endpoints:
        return err("ValidationException", f'Could not find endpoint "{name}".')
    now = time.time()
    out = {"EndpointName": name, "EndpointArn": f"arn:aws:sagemaker:{cfg.region}:{cfg.account}:"
           f"endpoint/{name}", "EndpointConfigName": f"{name}-config",
           "EndpointStatus": cfg.endpoint_status, "CreationTime": now, "LastModifiedTime": now}
    return web.Response(body=orjson.dumps(out), content_type="application/x-amz-json-1.1")


async def post_faults(request: web.Request) -> web.Response:
    try:
        data = orjson.loads(await request.read())
        faults = [SageMakerFault.from_dict(d) for d in data["faults"]]
    except (ValueError, KeyError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    request.app[FAULTS_KEY].add(list(faults))
    return web.json_response({"queued": len(faults)})


async def delete_faults(request: web.Request) -> web.Response:
    request.app[FAULTS_KEY].clear()
    return web.json_response({"cleared": True})


async def get_stats(request: web.Request) -> web.Response:
    out = request.app[STATS_KEY].as_dict()
    out["last_request"] = request.app[LAST_KEY].copy()
    return web.Response(body=orjson.dumps(out), content_type="application/json")


async def post_reset(request: web.Request) -> web.Response:
    request.app[FAULTS_KEY].clear()
    request.app[STATS_KEY].reset()
    request.app[LAST_KEY].clear()
    return web.json_response({"reset": True})


def create_app(config: SageMakerSimConfig | None = None) -> web.Application:
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app[CONFIG_KEY] = config or SageMakerSimConfig()
    app[FAULTS_KEY] = FaultQueue()
    app[STATS_KEY] = SimStats()
    app[LAST_KEY] = {}
    app.router.add_post("/endpoints/{name}/invocations", invocations)
    app.router.add_post("/endpoints/{name}/invocations-response-stream", invocations_stream)
    app.router.add_post("/", control_plane)
    app.router.add_post("/_sim/faults", post_faults)
    app.router.add_delete("/_sim/faults", delete_faults)
    app.router.add_get("/_sim/stats", get_stats)
    app.router.add_post("/_sim/reset", post_reset)
    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m router_simulators.sagemaker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--endpoint", action="append", help="endpoint name (repeatable)")
    p.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens")
    p.add_argument("--reasoning-field", choices=("reasoning", "reasoning_content"),
                   default="reasoning")
    p.add_argument("--no-split", action="store_true", help="one PayloadPart per SSE event")
    p.add_argument("--context-window", type=int, default=131072,
                   help="max_model_len: prompt + max_tokens above it answers a 400")
    service_time.add_flags(p)
    args = p.parse_args(argv)
    lengths, prefill_tps, slowdown = service_time.from_args(args)
    cfg = SageMakerSimConfig(
        endpoints=tuple(args.endpoint or ("gpt-oss-20b-endpoint",)),
        token_delay_s=args.token_delay, reasoning_field=args.reasoning_field,
        split_parts=not args.no_split, context_window=args.context_window,
        answer_lengths=lengths, prefill_tps=prefill_tps, batch_slowdown=slowdown,
    )
    run_forever(create_app(cfg), args.host, args.port)


if __name__ == "__main__":
    main()
