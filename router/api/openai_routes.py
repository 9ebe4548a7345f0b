"""POST /v1/chat/completions (JSON and SSE), GET /v1/models, POST /v1/router/explain.

Parsing happens once, at the edge (`api/request_body.py`: content type, size limit, JSON,
limits, then `ChatRequest` validation); after that the request path works on typed values
only. Streams keep the contract of design §7: the status line and headers go out only after
the first event, so any earlier failure can still fail over; a later failure ends the stream
with an in-band `data: {"error": ...}` event and no `[DONE]`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from router.api.error_responses import error_response
from router.api.openai_wire import ChunkEncoder, completion_body, error_event
from router.api.request_body import (
    CLIENT_GONE_OUTCOME,
    CLIENT_GONE_STATUS,
    ClientGone,
    body_limits,
    lower_headers,
    read_chat_request,
    request_id,
)
from router.api.streaming import (
    CLIENT_CLOSED_STATUS,
    ClientStalled,
    StreamOutcome,
    TimedStreamingResponse,
)
from router.errors import BackendError, RouterError, Unauthorized
from router.executor import StreamSession
from router.ids import new_id
from router.metrics import SlowClient
from router.service import Prepared, RouterService, error_outcome
from router.types import ChatRequest, Usage

log = logging.getLogger("router.api")

LOOPBACK = ("127.", "::1", "localhost")


class ChatRoutes:
    def __init__(self, service: RouterService, max_body_bytes: int,
                 open_remote: bool = False, send_timeout_s: float = 30.0) -> None:
        self.service = service
        self.send_timeout_s = send_timeout_s
        self.limit = max_body_bytes
        self.open_remote = open_remote

    def check_open_access(self, request: Request) -> None:
        """No API keys configured means open access for loopback clients only."""
        if self.open_remote or not self.service.runtime.keys.is_open:
            return
        host = request.client.host if request.client else ""
        if not host.startswith(LOOPBACK):
            raise Unauthorized(
                "This router has no API keys configured, so it serves loopback clients only. "
                "Configure keys (hybrid-router keygen) or set ROUTER_OPEN_REMOTE=true.")

    async def chat_completions(self, request: Request) -> Response:
        headers = lower_headers(request)
        rid = request_id(headers)
        headers["x-request-id"] = rid
        base_headers = {"x-request-id": rid}
        prep: Prepared | None = None
        parsed: ChatRequest | None = None
        try:
            self.check_open_access(request)
            parsed = await read_chat_request(request, body_limits(request, self.limit))
            prep = await self.service.prepare(parsed, headers)
            base_headers["x-router-route"] = prep.plan.route
            base_headers["x-router-reason"] = prep.plan.reason
            if prep.plan.error is not None:
                raise prep.plan.error
        except ClientGone:
            return await self._client_gone(rid)
        except (RouterError, ValidationError) as exc:
            resp = error_response(exc, base_headers)
            await self.service.finish(prep, status=resp.status_code, outcome=_outcome(exc),
                                      request=parsed, request_id=rid)
            return resp
        if parsed.stream:
            return await self._stream(prep, base_headers)
        return await self._complete(prep, base_headers)

    async def _complete(self, prep: Prepared, headers: dict[str, str]) -> Response:
        runtime, ctx = prep.runtime, prep.ctx
        runtime.enter()
        try:
            result = await runtime.executor.chat(ctx, prep.plan)
        except RouterError as exc:
            headers["x-router-reason"] = ctx.reason or prep.plan.reason
            resp = error_response(exc, headers)
            await self.service.finish(prep, status=resp.status_code, outcome=_outcome(exc))
            return resp
        finally:
            runtime.leave()
        headers["x-router-backend"] = ctx.served_by or ""
        headers["x-router-reason"] = ctx.reason
        body = completion_body(result, completion_id=_completion_id(), created=int(time.time()),
                               model=ctx.facts.model)
        await self.service.finish(prep, status=200, outcome="ok", usage=result.usage)
        return Response(body, media_type="application/json", headers=headers)

    async def _stream(self, prep: Prepared, headers: dict[str, str]) -> Response:
        runtime, ctx = prep.runtime, prep.ctx
        runtime.enter()
        try:
            session = await runtime.executor.open_stream(ctx, prep.plan)
        except RouterError as exc:
            runtime.leave()
            headers["x-router-reason"] = ctx.reason or prep.plan.reason
            resp = error_response(exc, headers)
            await self.service.finish(prep, status=resp.status_code, outcome=_outcome(exc),
                                      stream=True)
            return resp
        except BaseException:
            runtime.leave()
            raise
        headers["x-router-backend"] = ctx.served_by or ""
        headers["x-router-reason"] = ctx.reason
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        return TimedStreamingResponse(self._sse(prep, session), media_type="text/event-stream",
                                      headers=headers, send_timeout_s=self.send_timeout_s,
                                      on_stall=self._count_stall)

    def _count_stall(self) -> None:
        self.service.metrics.count_slow_client(SlowClient.SEND_TIMEOUT)

    async def _sse(self, prep: Prepared, session: StreamSession) -> AsyncIterator[bytes]:
        ctx = prep.ctx
        enc = ChunkEncoder(completion_id=_completion_id(), created=int(time.time()),
                           model=ctx.facts.model, include_usage=ctx.request.include_usage)
        usage: Usage | None = None
        outcome: str = StreamOutcome.CLIENT_DISCONNECTED
        status = CLIENT_CLOSED_STATUS
        self.service.active_streams.add(session)
        try:
            async for event in session.events():
                if event.usage is not None:
                    usage = event.usage
                yield enc.encode(event)
            outcome, status = StreamOutcome.OK, 200
        except ClientStalled:
            outcome = StreamOutcome.CLIENT_STALLED
        except BackendError as exc:
            outcome, status = exc.code or "stream_error", 502
            yield error_event({"error": {
                "message": f"The upstream stream from '{session.candidate.backend}' broke after "
                           f"it started: {exc.message}. The answer above is incomplete.",
                "type": "api_error", "param": None, "code": exc.code or "stream_error"}})
        finally:
            self.service.active_streams.discard(session)
            await session.aclose()
            prep.runtime.leave()
            await self.service.finish(prep, status=status, outcome=outcome, usage=usage,
                                      stream=True)

    async def _client_gone(self, rid: str) -> Response:
        """The client left while sending its body: one line, one count, nobody to answer."""
        log.info("client disconnected before its request body was read (request %s)", rid)
        await self.service.finish(None, status=CLIENT_GONE_STATUS, outcome=CLIENT_GONE_OUTCOME,
                                  request_id=rid)
        return Response(status_code=CLIENT_GONE_STATUS)

    async def models(self, request: Request) -> Response:
        policy = self.service.policy
        served = {m for cfg in policy.backends.values() for m in cfg.models}
        data = [{"id": m, "object": "model", "created": 1754352000, "owned_by": "openai"}
                for m in policy.models if m in served]
        return Response(orjson.dumps({"object": "list", "data": data}),
                        media_type="application/json")

    async def explain(self, request: Request) -> Response:
        headers = lower_headers(request)
        try:
            self.check_open_access(request)
            parsed = await read_chat_request(request, body_limits(request, self.limit))
            prep = await self.service.prepare(parsed, headers, dry_run=True)
        except ClientGone:
            return await self._client_gone(request_id(headers))
        except (RouterError, ValidationError) as exc:
            return error_response(exc)
        return Response(orjson.dumps(plan_json(prep)), media_type="application/json")


def plan_json(prep: Prepared) -> dict[str, object]:
    p, ctx = prep.plan, prep.ctx
    return {
        "model": ctx.facts.model,
        "privacy": ctx.facts.privacy,
        "privacy_sources": list(ctx.privacy_sources),
        "estimated_prompt_tokens": ctx.facts.prompt_tokens,
        "needed_tokens": p.needed_tokens,
        "route": p.route,
        "reason": p.reason,
        "candidates": [
            {"backend": c.backend, "model_id": c.model_id, "local": c.local, "reason": c.reason,
             "estimated_wait_s": round(c.est_wait_s, 3), "max_wait_s": c.max_wait_s,
             "cold": c.cold}
            for c in p.candidates
        ],
        "excluded": [{"backend": e.backend, "reason": e.reason} for e in p.excluded],
        "warm": [{"backend": b, "model_id": m} for b, m in p.warm],
        "error": p.error.body()["error"] if p.error else None,
    }


def _completion_id() -> str:
    return new_id("chatcmpl")


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, RouterError):
        return error_outcome(exc)
    return "invalid_request"
