"""Anthropic Messages API: POST /v1/messages, POST /v1/messages/count_tokens.

A codec over the service facade, like `api/openai_routes.py`: read the body at the edge
(`api/request_body.py`: content type, size, JSON, counts, depth), translate it to a
`ChatRequest` (`api/anthropic_decode.py`), call `RouterService` with the `ClientContext`
(`X-Privacy`, `x-api-key` or `Authorization`: the router's keys and privacy markers work as on
every surface; `anthropic-version` and `anthropic-beta` headers are accepted and ignored), and
encode the answer, the event stream or the error in Anthropic's shape (`api/anthropic_wire.py`).

Every response carries `request-id` (Anthropic's header) next to `x-request-id` and the
`x-router-*` headers. Errors are `{"type": "error", "error": {"type", "message"}}` with the
router's status (401, 403, 404, 413, 429 and 503 keep `Retry-After` where the router sets it);
nothing unexpected ever leaves as a stack trace. A stream's status line goes out only after its
first event; a later failure ends it with an `error` event and no `message_stop`. Events that
arrive decoded together (`StreamEvent.ready_next`) go out in one body message (`Burst`).

`count_tokens` answers `{"input_tokens": N}` with the router's own estimate (`router/tokens.py`,
the number context-window routing uses; it errs on the large side).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from router.api.access import Access
from router.api.anthropic_decode import to_chat
from router.api.anthropic_wire import (
    EventEncoder,
    error_status_and_body,
    message_body,
    stream_error,
)
from router.api.edge import client_context, meta_headers
from router.api.error_responses import from_validation_error
from router.api.request_body import (
    CLIENT_GONE_OUTCOME,
    CLIENT_GONE_STATUS,
    OFFLOAD_BYTES,
    BodyLimits,
    ClientGone,
    body_limits,
    check_content_type,
    check_counts,
    check_depth,
    large_parse,
    parse_json,
    read_body,
)
from router.api.streaming import Burst, ClientStalled, TimedStreamingResponse
from router.errors import BackendError, RouterError
from router.ids import new_id
from router.metrics import SlowClient
from router.route_meta import RouteMeta
from router.service import ClientContext, OpenedStream, RouterService, error_outcome
from router.settings import RouterSettings
from router.tokens import estimate_prompt_tokens
from router.types import ChatRequest

log = logging.getLogger("router.api")

DIALECT = "anthropic"
JSON = "application/json"
Endpoint = Callable[[Request], Awaitable[Response]]


def decode(raw: bytes, limits: BodyLimits, *, count_only: bool = False) -> ChatRequest:
    """Bytes of an Anthropic body to a validated `ChatRequest`."""
    data = parse_json(raw)
    check_counts({k: data[k] for k in ("messages", "tools") if k in data}, limits)
    check_depth(data, limits.max_json_depth)
    chat = to_chat(data, count_only=count_only)
    check_counts(chat, limits)
    return ChatRequest.model_validate(chat)


def _decode_large(raw: bytes, limits: BodyLimits, count_only: bool) -> ChatRequest:
    # The same bound on parsed trees in memory as the other surfaces.
    return large_parse(lambda: decode(raw, limits, count_only=count_only))


def error_response(exc: BaseException, request_id: str,
                   meta: RouteMeta | None = None) -> Response:
    """Any failure as Anthropic's error body, with the router's status and headers."""
    if isinstance(exc, ValidationError):
        exc = from_validation_error(exc)
    if not isinstance(exc, RouterError):
        log.error("unexpected error", exc_info=exc)
        exc = RouterError("The router hit an internal error; it has been logged.",
                          code="internal_error")
    headers = meta_headers(meta, request_id) or {"x-request-id": request_id}
    headers["request-id"] = headers.get("x-request-id", request_id)
    retry_after = exc.retry_after
    if retry_after is None and exc.status in (429, 503):
        retry_after = 1.0  # 429 and 503 always say when to come back
    if retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
    status, body = error_status_and_body(exc, headers["request-id"])
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _with_request_id(headers: dict[str, str]) -> dict[str, str]:
    headers["request-id"] = headers["x-request-id"]
    return headers


class MessagesRoutes:
    def __init__(self, service: RouterService, max_body_bytes: int,
                 send_timeout_s: float = 30.0) -> None:
        self.service = service
        self.limit = max_body_bytes
        self.send_timeout_s = send_timeout_s

    async def _read(self, request: Request, client: ClientContext,
                    count_only: bool = False) -> ChatRequest:
        self.service.check_open_access(client)  # before the body: no keys, loopback only
        limits = body_limits(request, self.limit)
        check_content_type(request.headers.get("content-type"))
        raw = await read_body(request, limits.max_body_bytes)
        if len(raw) > OFFLOAD_BYTES:
            return await asyncio.to_thread(_decode_large, raw, limits, count_only)
        return decode(raw, limits, count_only=count_only)

    def _rejected(self, exc: BaseException, client: ClientContext) -> Response:
        if isinstance(exc, ClientGone):
            log.info("client disconnected before its request body was read (request %s)",
                     client.request_id)
            self.service.record_rejected(CLIENT_GONE_OUTCOME)
            return Response(status_code=CLIENT_GONE_STATUS)
        outcome = error_outcome(exc) if isinstance(exc, RouterError) else "invalid_request"
        self.service.record_rejected(outcome)
        return error_response(exc, client.request_id)

    async def messages(self, request: Request) -> Response:
        client = client_context(request, dialect=DIALECT)
        try:
            parsed = await self._read(request, client)
        except (ClientGone, RouterError, ValidationError) as exc:
            return self._rejected(exc, client)
        try:
            if parsed.stream:
                return await self._stream(parsed, client)
            done = await self.service.complete(parsed, client)
        except RouterError as exc:
            return error_response(exc, client.request_id, exc.meta)
        body = message_body(done.result, message_id=new_id("msg"), model=done.served_model)
        return Response(body, media_type=JSON, headers=_with_request_id(meta_headers(done.meta)))

    async def _stream(self, parsed: ChatRequest, client: ClientContext) -> Response:
        opened = await self.service.stream(parsed, client)
        headers = _with_request_id(meta_headers(opened.meta))
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        enc = EventEncoder(message_id=new_id("msg"), model=opened.served_model,
                           input_tokens=estimate_prompt_tokens(parsed))
        return TimedStreamingResponse(self._sse(opened, enc), media_type="text/event-stream",
                                      headers=headers, send_timeout_s=self.send_timeout_s,
                                      on_stall=self._count_stall)

    def _count_stall(self) -> None:
        self.service.count_slow_client(SlowClient.SEND_TIMEOUT)

    async def _sse(self, opened: OpenedStream, enc: EventEncoder) -> AsyncIterator[bytes]:
        burst = Burst()  # events whose successor is already decoded go out with it
        add = burst.add
        try:
            async for event in opened:
                data = add(enc.encode(event), event.ready_next)
                if data is not None:
                    yield data
            if rest := burst.flush():
                yield rest
        except ClientStalled:
            opened.client_stalled()
        except BackendError as exc:
            yield burst.flush() + stream_error(
                f"The upstream stream from '{opened.meta.backend}' broke after it started: "
                f"{exc.message}. The answer above is incomplete.", opened.meta.request_id)
        finally:
            await opened.aclose()

    async def count_tokens(self, request: Request) -> Response:
        client = client_context(request, dialect=DIALECT)
        try:
            self.service.authorize_client(client)
            parsed = await self._read(request, client, count_only=True)
        except (ClientGone, RouterError, ValidationError) as exc:
            return self._rejected(exc, client)
        body = orjson.dumps({"input_tokens": estimate_prompt_tokens(parsed)})
        return Response(body, media_type=JSON,
                        headers=_with_request_id({"x-request-id": client.request_id}))


def _guarded(endpoint: Endpoint) -> Endpoint:
    """Nothing unexpected leaves this surface in another dialect's shape."""
    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as exc:  # noqa: BLE001 - logged, answered as a generic api_error
            rid = client_context(request, dialect=DIALECT).request_id
            return error_response(exc, rid)

    guarded.__name__ = getattr(endpoint, "__name__", "endpoint")
    return guarded


def routes(service: RouterService, settings: RouterSettings, access: Access) -> list[BaseRoute]:
    """The dialect's routes, mounted by `router/app.py` (keys are checked by the service, so
    a bad key is a 401 in Anthropic's shape, not the `access` wrapper's OpenAI one)."""
    api = MessagesRoutes(service, settings.max_body_bytes, settings.send_timeout_s)
    return [
        Route("/v1/messages", _guarded(api.messages), methods=["POST"]),
        Route("/v1/messages/count_tokens", _guarded(api.count_tokens), methods=["POST"]),
    ]


# -- OpenAPI ---------------------------------------------------------------------------------

_STATUSES = {400: "Invalid request.", 401: "Missing or invalid API key.",
             403: "The key may not do this.", 404: "Unknown model.",
             413: "The body is over the size limit.", 415: "Not a JSON body.",
             429: "Rate limited (Retry-After).", 500: "Internal error.",
             502: "Upstream failure.",
             503: "No capacity this request may use (overloaded_error, Retry-After).",
             504: "Deadline exceeded (timeout_error)."}
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["type", "error"],
    "properties": {"type": {"const": "error"}, "request_id": {"type": "string"},
                   "error": {"type": "object", "required": ["type", "message"],
                             "properties": {"type": {"type": "string"},
                                            "message": {"type": "string"}}}}}
_HEADERS = [
    {"name": "X-Privacy", "in": "header", "required": False,
     "schema": {"type": "string", "enum": ["private", "standard"]},
     "description": "Marks the request private (served only by local backends)."},
    {"name": "anthropic-version", "in": "header", "required": False,
     "schema": {"type": "string"}, "description": "Accepted and ignored."},
]


def _op(op_id: str, summary: str, ok: dict[str, Any]) -> dict[str, Any]:
    errors = {str(s): {"description": d, "content": {JSON: {"schema": _ERROR_SCHEMA}}}
              for s, d in _STATUSES.items()}
    return {"operationId": op_id, "summary": summary, "parameters": _HEADERS,
            "requestBody": {"required": True, "content": {JSON: {"schema": {
                "type": "object", "required": ["model", "messages"],
                "properties": {"model": {"type": "string"}, "messages": {"type": "array"},
                               "max_tokens": {"type": "integer", "minimum": 1}}}}}},
            "responses": {"200": ok, **errors}}


def openapi_paths() -> dict[str, Any]:
    """The dialect's paths for `/openapi.json` (merged by `api/openapi.py`)."""
    message = {"type": "object", "required": ["id", "type", "role", "model", "content",
                                              "stop_reason", "usage"],
               "properties": {"id": {"type": "string"}, "type": {"const": "message"},
                              "role": {"const": "assistant"}, "model": {"type": "string"},
                              "content": {"type": "array"},
                              "stop_reason": {"type": ["string", "null"]},
                              "stop_sequence": {"type": ["string", "null"]},
                              "usage": {"type": "object"}}}
    sse = {"type": "object", "required": ["event", "data"],
           "properties": {"event": {"type": "string"}, "data": {"type": "string"}}}
    create = _op("createMessage", "Anthropic Messages (max_tokens is required)", {
        "description": "The message: JSON, or server-sent events when `stream` is true.",
        "content": {JSON: {"schema": message}, "text/event-stream": {"schema": sse}}})
    count = _op("countMessageTokens", "Anthropic token count (the router's estimate)", {
        "description": "The estimated input tokens.",
        "content": {JSON: {"schema": {"type": "object", "required": ["input_tokens"],
                                      "properties": {"input_tokens": {"type": "integer"}}}}}})
    return {"/v1/messages": {"post": create}, "/v1/messages/count_tokens": {"post": count}}

