"""POST /v1/chat/completions (JSON and SSE), GET /v1/models[/{id}], POST /v1/router/explain.

The OpenAI surface is a codec over the service facade: it reads the body once, at the edge
(`api/request_body.py`: content type, size limit, JSON, limits, then `ChatRequest`
validation), hands the typed request and a `ClientContext` to `RouterService`, and encodes
the answer (`api/openai_wire.py`) or the error (`api/error_responses.py`). Streams keep
their contract: the status line and headers go out only after the first event (the service
returns the stream only then, so any earlier failure can still fail over); a later failure
ends the stream with an in-band `data: {"error": ...}` event and no `[DONE]`. Events that
arrive decoded together (`StreamEvent.ready_next`) go out in one body message (`Burst`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from router.api.edge import client_context, meta_headers
from router.api.error_responses import error_response
from router.api.openai_wire import ChunkEncoder, completion_body, error_event
from router.api.request_body import (
    CLIENT_GONE_OUTCOME,
    CLIENT_GONE_STATUS,
    ClientGone,
    body_limits,
    read_chat_request,
)
from router.api.streaming import Burst, ClientStalled, TimedStreamingResponse
from router.errors import BackendError, ModelNotFound, RouterError
from router.ids import new_id
from router.metrics import SlowClient
from router.service import ClientContext, OpenedStream, RouterService, error_outcome
from router.types import ChatRequest

log = logging.getLogger("router.api")


class ChatRoutes:
    def __init__(self, service: RouterService, max_body_bytes: int,
                 send_timeout_s: float = 30.0) -> None:
        self.service = service
        self.send_timeout_s = send_timeout_s
        self.limit = max_body_bytes

    async def _read(self, request: Request, client: ClientContext) -> ChatRequest:
        self.service.check_open_access(client)  # before the body: no keys, loopback only
        return await read_chat_request(request, body_limits(request, self.limit))

    async def chat_completions(self, request: Request) -> Response:
        client = client_context(request)
        try:
            parsed = await self._read(request, client)
        except ClientGone:
            return self._client_gone(client.request_id)
        except (RouterError, ValidationError) as exc:
            self.service.record_rejected(_outcome(exc))
            return error_response(exc, {"x-request-id": client.request_id})
        try:
            if parsed.stream:
                return await self._stream(parsed, client)
            done = await self.service.complete(parsed, client)
        except RouterError as exc:
            return error_response(exc, meta_headers(exc.meta, client.request_id))
        body = completion_body(done.result, completion_id=_completion_id(),
                               created=int(time.time()), model=done.served_model)
        return Response(body, media_type="application/json", headers=meta_headers(done.meta))

    async def _stream(self, parsed: ChatRequest, client: ClientContext) -> Response:
        opened = await self.service.stream(parsed, client)
        headers = meta_headers(opened.meta)
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        return TimedStreamingResponse(self._sse(opened), media_type="text/event-stream",
                                      headers=headers, send_timeout_s=self.send_timeout_s,
                                      on_stall=self._count_stall)

    def _count_stall(self) -> None:
        self.service.count_slow_client(SlowClient.SEND_TIMEOUT)

    async def _sse(self, opened: OpenedStream) -> AsyncIterator[bytes]:
        enc = ChunkEncoder(completion_id=_completion_id(), created=int(time.time()),
                           model=opened.served_model, include_usage=opened.include_usage)
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
            yield burst.flush() + error_event({"error": {
                "message": f"The upstream stream from '{opened.meta.backend}' broke after "
                           f"it started: {exc.message}. The answer above is incomplete.",
                "type": "api_error", "param": None, "code": exc.code or "stream_error"}})
        finally:
            await opened.aclose()

    def _client_gone(self, rid: str) -> Response:
        """The client left while sending its body: one line, one count, nobody to answer."""
        log.info("client disconnected before its request body was read (request %s)", rid)
        self.service.record_rejected(CLIENT_GONE_OUTCOME)
        return Response(status_code=CLIENT_GONE_STATUS)

    async def models(self, request: Request) -> Response:
        """Every name a client may send, per served logical model (`service/model_names.py`)."""
        data = [_model_entry(name) for name in self.service.model_names()]
        return Response(orjson.dumps({"object": "list", "data": data}),
                        media_type="application/json")

    async def model(self, request: Request) -> Response:
        """GET /v1/models/{id}: any name chat accepts for a served model; else OpenAI's 404."""
        name = str(request.path_params["model_id"])
        if not name:
            raise HTTPException(status_code=404)  # `/v1/models/`: the app's plain JSON 404
        listed = {n.lower(): n for n in self.service.model_names()}
        if name.lower() in listed:
            return Response(orjson.dumps(_model_entry(listed[name.lower()])),
                            media_type="application/json")
        if self.service.find_model(name) is not None:
            return Response(orjson.dumps(_model_entry(name)), media_type="application/json")
        known = ", ".join(self.service.served_models())
        return error_response(ModelNotFound(
            f"The model '{name}' does not exist. Known models: {known}", param="model"))

    async def explain(self, request: Request) -> Response:
        client = client_context(request)
        try:
            parsed = await self._read(request, client)
            view = await self.service.explain(parsed, client)
        except ClientGone:
            return self._client_gone(client.request_id)
        except (RouterError, ValidationError) as exc:
            return error_response(exc)
        return Response(orjson.dumps(view), media_type="application/json")


def _model_entry(name: str) -> dict[str, object]:
    # `created`: gpt-oss's release day (2025-08-05), the same for every name.
    return {"id": name, "object": "model", "created": 1754352000, "owned_by": "openai"}


def _completion_id() -> str:
    return new_id("chatcmpl")


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, RouterError):
        return error_outcome(exc)
    return "invalid_request"
