"""Ollama's native API: /api/chat, /api/generate, /api/tags, /api/show, /api/ps, /api/version.

A codec over the service facade, like `api/openai_routes.py`: decode the dialect's body into a
`ChatRequest` (`api/ollama_wire.py`) plus a `ClientContext`, call `RouterService`, encode the
answer or the NDJSON stream (`api/ollama_encode.py`) or the error, always as Ollama's
`{"error": "message"}` with the status the router's error carries (400 bad input, 401/403
keys, 404 unknown model, 429/503 with Retry-After). Any backend may serve the request; the
client gets Ollama's format back. `stream` defaults to true, as in Ollama. Stream events that
arrive decoded together (`StreamEvent.ready_next`) go out in one body message (`Burst`).

Bodies are read as JSON whatever the Content-Type, as Ollama reads them (curl's `-d` sends
a form type, some clients none), except for requests with an `Origin` header: a browser must
send `application/json`, which needs a CORS preflight, so a web page's form cannot post chats
to a local router. `GET /`, `HEAD /` and `/api/version`
answer anyone (clients probe them); the model endpoints need what chat needs (a key, or open
loopback access).

Endpoints a router cannot serve answer 400 with a reason: model management (`/api/pull`,
`/api/push`, `/api/create`, `/api/copy`, `/api/delete`, `/api/blobs/...`: manage models on the
Ollama host itself) and embeddings (`/api/embed`, `/api/embeddings`: gpt-oss has none).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from router.api import ollama_models
from router.api.access import Access
from router.api.edge import client_context, meta_headers
from router.api.error_responses import from_validation_error
from router.api.ollama_encode import NDJSON, Encoder, Timing, error_line
from router.api.ollama_openapi import openapi_paths as openapi_paths
from router.api.ollama_wire import (
    Decoded,
    decode_chat,
    decode_generate,
    is_load_request,
    model_name,
    ollama_param,
)
from router.api.request_body import (
    CLIENT_GONE_OUTCOME,
    CLIENT_GONE_STATUS,
    OFFLOAD_BYTES,
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
from router.errors import BackendError, InvalidRequest, ModelNotFound, RouterError
from router.metrics import SlowClient
from router.service import ClientContext, OpenedStream, RouterService, error_outcome
from router.settings import RouterSettings
from router.types import ChatRequest

log = logging.getLogger("router.api")

OLLAMA_API_VERSION = "0.14.0"  # the Ollama API level this surface speaks
_MANAGE = ("pull", "push", "create", "copy", "delete")


def ollama_error(exc: BaseException, headers: Mapping[str, str] | None = None,
                 model: str | None = None, served: list[str] | None = None) -> Response:
    if isinstance(exc, ValidationError):
        exc = from_validation_error(exc)
    if not isinstance(exc, RouterError):
        log.error("unexpected error", exc_info=exc)
        exc = RouterError("the router hit an internal error; it has been logged",
                          code="internal_error")
    message = exc.message
    if isinstance(exc, InvalidRequest) and exc.param:
        message = message.replace(f"'{exc.param}'", f"'{ollama_param(exc.param)}'")
    if isinstance(exc, ModelNotFound) and model is not None:
        known = ", ".join(served or [])
        message = f'model "{model}" not found: this router serves {known}'
    out = dict(headers or {})
    retry_after = exc.retry_after
    if retry_after is None and exc.status in (429, 503):
        retry_after = 1.0
    if retry_after is not None:
        out["retry-after"] = str(max(1, math.ceil(retry_after)))
    return Response(orjson.dumps({"error": message}), status_code=exc.status,
                    media_type="application/json", headers=out)


def _decode(raw: bytes, generate: bool, depth: int, limits: Any) -> tuple[Decoded, ChatRequest]:
    body = parse_json(raw)
    check_depth(body, depth)
    decoded = decode_generate(body) if generate else decode_chat(body)
    check_counts(decoded.data, limits)
    return decoded, ChatRequest.model_validate(decoded.data)


def _decode_large(raw: bytes, generate: bool, depth: int, limits: Any
                  ) -> tuple[Decoded, ChatRequest]:
    return large_parse(lambda: _decode(raw, generate, depth, limits))


class OllamaRoutes:
    def __init__(self, service: RouterService, settings: RouterSettings) -> None:
        self.service = service
        self.limit = settings.max_body_bytes
        self.send_timeout_s = settings.send_timeout_s

    def _error(self, exc: BaseException, headers: Mapping[str, str] | None = None,
               model: str | None = None) -> Response:
        names = list(ollama_models.ollama_names(self.service).values())
        return ollama_error(exc, headers, model, names)

    async def _body(self, request: Request) -> bytes:
        if "origin" in request.headers:  # a browser: JSON only (needs a CORS preflight)
            check_content_type(request.headers.get("content-type"))
        return await read_body(request, self.limit)

    async def chat(self, request: Request) -> Response:
        return await self._answer(request, generate=False)

    async def generate(self, request: Request) -> Response:
        return await self._answer(request, generate=True)

    async def _answer(self, request: Request, *, generate: bool) -> Response:
        timing = Timing()
        client = client_context(request, dialect="ollama")
        model: str | None = None
        try:
            self.service.check_open_access(client)
            raw = await self._body(request)
            limits = body_limits(request, self.limit)
            depth = limits.max_json_depth
            if len(raw) > OFFLOAD_BYTES:
                decoded, parsed = await asyncio.to_thread(_decode_large, raw, generate, depth,
                                                          limits)
            else:
                body = parse_json(raw)
                if is_load_request(body, generate):
                    model = model_name(body.get("model"))
                    return self._load(model, body, client, generate)
                decoded, parsed = _decode(raw, generate, depth, limits)
            model = decoded.model
        except ClientGone:
            log.info("client disconnected before its request body was read (request %s)",
                     client.request_id)
            self.service.record_rejected(CLIENT_GONE_OUTCOME)
            return Response(status_code=CLIENT_GONE_STATUS)
        except (RouterError, ValidationError) as exc:
            self.service.record_rejected(
                error_outcome(exc) if isinstance(exc, RouterError) else "invalid_request")
            return self._error(exc, {"x-request-id": client.request_id}, model)
        enc = Encoder(decoded.model, chat=not generate, show_thinking=decoded.show_thinking,
                      timing=timing)
        try:
            if parsed.stream:
                return await self._stream(parsed, client, enc)
            done = await self.service.complete(parsed, client)
        except RouterError as exc:
            return self._error(exc, meta_headers(exc.meta, client.request_id), model)
        enc.model = done.served_model
        return Response(enc.whole(done.result), media_type="application/json",
                        headers=meta_headers(done.meta))

    def _load(self, name: str, body: dict[str, Any], client: ClientContext, generate: bool
              ) -> Response:
        """Ollama's load / unload call: the router loads nothing, it says the model is there."""
        self.service.authorize_client(client)
        if self.service.find_model(name) is None:
            raise ModelNotFound(f"model {name!r} not found", param="model")
        enc = Encoder(name, chat=not generate, show_thinking=True)
        unload = body.get("keep_alive") in (0, "0", "0s")
        return Response(enc.load(unload), media_type="application/json",
                        headers={"x-request-id": client.request_id})

    async def _stream(self, parsed: ChatRequest, client: ClientContext, enc: Encoder
                      ) -> Response:
        opened = await self.service.stream(parsed, client)
        enc.model = opened.served_model
        headers = meta_headers(opened.meta)
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        return TimedStreamingResponse(self._ndjson(opened, enc), media_type=NDJSON,
                                      headers=headers, send_timeout_s=self.send_timeout_s,
                                      on_stall=self._count_stall)

    def _count_stall(self) -> None:
        self.service.count_slow_client(SlowClient.SEND_TIMEOUT)

    async def _ndjson(self, opened: OpenedStream, enc: Encoder) -> AsyncIterator[bytes]:
        burst = Burst()  # events whose successor is already decoded go out with it
        add = burst.add
        try:
            async for event in opened:
                chunk = add(enc.line(event), event.ready_next)
                if chunk:
                    yield chunk
            if rest := burst.flush():
                yield rest
        except ClientStalled:
            opened.client_stalled()
        except BackendError as exc:
            yield burst.flush() + error_line(
                f"the upstream stream from '{opened.meta.backend}' broke after it "
                f"started: {exc.message}; the answer above is incomplete")
        finally:
            await opened.aclose()

    # -- models and probes ---------------------------------------------------------------

    def _authorized(self, request: Request) -> Response | None:
        client = client_context(request, dialect="ollama")
        try:
            self.service.authorize_client(client)
        except RouterError as exc:
            return ollama_error(exc, {"x-request-id": client.request_id})
        return None

    async def tags(self, request: Request) -> Response:
        denied = self._authorized(request)
        return denied or _json(ollama_models.tags(self.service))

    async def ps(self, request: Request) -> Response:
        denied = self._authorized(request)
        return denied or _json(ollama_models.ps(self.service))

    async def show(self, request: Request) -> Response:
        denied = self._authorized(request)
        if denied:
            return denied
        name: str | None = None
        try:
            body = parse_json(await self._body(request))
            raw = body.get("model") or body.get("name")
            name = model_name(raw)
            logical = self.service.find_model(name)
            if logical is None:
                raise ModelNotFound(f"model {name!r} not found", param="model")
        except ClientGone:
            return Response(status_code=CLIENT_GONE_STATUS)
        except RouterError as exc:
            return self._error(exc, model=name)
        return _json(ollama_models.show(self.service, logical))

    async def version(self, request: Request) -> Response:
        return _json({"version": OLLAMA_API_VERSION})

    async def root(self, request: Request) -> Response:
        return Response("Ollama is running", media_type="text/plain")

    async def unsupported(self, request: Request) -> Response:
        path = request.url.path
        what = path.removeprefix("/api/").split("/", 1)[0]
        if what in ("embed", "embeddings"):
            msg = (f"{path}: gpt-oss has no embeddings, so this router serves none; "
                   "use an embedding model on an Ollama host directly")
        else:
            msg = (f"{path}: this is hybrid-router, which does not manage models; "
                   f"run `ollama {what if what in _MANAGE else 'pull'}` on the Ollama host "
                   "itself")
        return ollama_error(InvalidRequest(msg, code="unsupported_endpoint"))


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def routes(service: RouterService, settings: RouterSettings, access: Access) -> list[BaseRoute]:
    """The dialect's routes, mounted by `router/app.py`."""
    r = OllamaRoutes(service, settings)
    out: list[BaseRoute] = [
        Route("/api/chat", r.chat, methods=["POST"]),
        Route("/api/generate", r.generate, methods=["POST"]),
        Route("/api/tags", r.tags, methods=["GET"]),
        Route("/api/show", r.show, methods=["POST"]),
        Route("/api/ps", r.ps, methods=["GET"]),
        Route("/api/version", r.version, methods=["GET"]),
        Route("/", r.root, methods=["GET", "HEAD"]),
        Route("/api/embed", r.unsupported, methods=["POST"]),
        Route("/api/embeddings", r.unsupported, methods=["POST"]),
        Route("/api/delete", r.unsupported, methods=["DELETE"]),
        Route("/api/blobs/{digest}", r.unsupported, methods=["HEAD", "POST"]),
    ]
    out += [Route(f"/api/{what}", r.unsupported, methods=["POST"]) for what in _MANAGE
            if what != "delete"]
    return out
