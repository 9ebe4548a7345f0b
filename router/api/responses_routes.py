"""OpenAI Responses API: POST /v1/responses, GET and DELETE /v1/responses/{id},
GET /v1/responses/{id}/input_items.

A codec over the service facade, like `api/openai_routes.py`: decode the body
(`responses_wire.py`) into a `ChatRequest` plus a `ClientContext`, call `RouterService`,
encode the answer (`responses_objects.py`) or the event stream (`responses_events.py`), and
errors in OpenAI's error shape (`api/error_responses.py`). Stream events that arrive decoded
together (`StreamEvent.ready_next`) go out in one body message (`Burst`).

State: with `store` (the default) the response and the whole conversation it answered are
kept in the service's response store (`responses_ttl_s`, `responses_max_bytes`), so a
follow-up's `previous_response_id` rebuilds the conversation as stored inputs + stored
outputs + new input, on any replica sharing the state store. An unknown, expired or foreign id
is a 404 naming it. A follow-up of a private response is private whatever its own markers say
(`ClientContext.private_sources = ("previous_response",)`, shown by audit and explain).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from router.api.access import Access
from router.api.edge import client_context, meta_headers
from router.api.error_responses import error_response, from_validation_error
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
from router.api.responses_events import ResponseEvents
from router.api.responses_objects import (
    output_items,
    reasoning_text_of,
    response_object,
    status_for,
    usage_object,
)
from router.api.responses_openapi import openapi_paths as openapi_paths
from router.api.responses_wire import (
    ParsedRequest,
    chat_body,
    parse_request,
    responses_param,
    to_messages,
)
from router.api.streaming import Burst, ClientStalled, TimedStreamingResponse
from router.errors import BackendError, InvalidRequest, RouterError
from router.ids import new_id
from router.metrics import SlowClient
from router.service import (
    ClientContext,
    OpenedStream,
    ResponseStore,
    RouterService,
    StoredResponse,
    error_outcome,
)
from router.settings import RouterSettings
from router.types import ChatRequest

__all__ = ["ResponsesRoutes", "openapi_paths", "routes"]

T = TypeVar("T")
log = logging.getLogger("router.api")

PRIVATE = "private"
PREVIOUS_RESPONSE = "previous_response"  # the privacy source of a continued private response
MAX_LIST = 100


def _not_found(response_id: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(f"Response with id '{response_id}' not found (unknown, expired, or "
                          "not stored).", param=param, code="response_not_found", status=404)


@dataclasses.dataclass(slots=True)
class _Turn:
    """One decoded request: what the service gets and what the stored record keeps."""

    parsed: ParsedRequest
    request: ChatRequest
    client: ClientContext
    conversation: list[dict[str, Any]]  # the whole input: stored turns + this input


class ResponsesRoutes:
    def __init__(self, service: RouterService, settings: RouterSettings) -> None:
        self.service = service
        self.limit = settings.max_body_bytes
        self.send_timeout_s = settings.send_timeout_s
        self.store: ResponseStore = service.response_store(
            ttl_s=settings.responses_ttl_s, max_bytes=settings.responses_max_bytes)

    # -- POST /v1/responses ------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        client = client_context(request, dialect="responses")
        try:
            turn = await self._decode(request, client)
        except ClientGone:
            log.info("client disconnected before its request body was read (request %s)",
                     client.request_id)
            self.service.record_rejected(CLIENT_GONE_OUTCOME)
            return Response(status_code=CLIENT_GONE_STATUS)
        except (RouterError, ValidationError) as exc:
            self.service.record_rejected(_outcome(exc))
            return error_response(_in_dialect(exc), {"x-request-id": client.request_id})
        try:
            if turn.parsed.stream:
                return await self._stream(turn)
            done = await self.service.complete(turn.request, turn.client)
        except RouterError as exc:
            return error_response(exc, meta_headers(exc.meta, client.request_id))
        parsed = turn.parsed
        status, incomplete = status_for(done.result.finish_reason)
        output = output_items(done.result)
        body = response_object(
            response_id=new_id("resp"), created_at=int(time.time()), model=done.served_model,
            status=status, output=output, echo=parsed.echo, instructions=parsed.instructions,
            previous_response_id=parsed.previous_response_id, store=parsed.store,
            usage=usage_object(done.result.usage, reasoning_text_of(output)),
            incomplete_details=incomplete, completed_at=int(time.time()))
        await self._keep(turn, body, done.privacy)
        return Response(orjson.dumps(body), media_type="application/json",
                        headers=meta_headers(done.meta))

    async def _decode(self, request: Request, client: ClientContext) -> _Turn:
        self.service.check_open_access(client)  # before the body: no keys, loopback only
        limits = body_limits(request, self.limit)
        check_content_type(request.headers.get("content-type"))
        raw = await read_body(request, limits.max_body_bytes)

        def decode() -> Any:
            body = parse_json(raw)
            check_depth(body, limits.max_json_depth)
            return parse_request(body)

        parsed = await _cpu(len(raw), decode)
        conversation = parsed.items
        if parsed.previous_response_id is not None:
            previous = await self.store.load(parsed.previous_response_id, client)
            if previous is None:
                raise _not_found(parsed.previous_response_id, "previous_response_id")
            conversation = [*previous.input_items, *previous.response.get("output", []),
                            *parsed.items]
            if previous.privacy == PRIVATE:
                client = dataclasses.replace(
                    client, private_sources=(*client.private_sources, PREVIOUS_RESPONSE))
        def validate() -> ChatRequest:
            chat = chat_body(parsed, to_messages(conversation, parsed.instructions))
            check_counts(chat, limits)
            return ChatRequest.model_validate(chat)

        return _Turn(parsed, await _cpu(len(raw), validate), client, conversation)

    async def _keep(self, turn: _Turn, body: dict[str, Any], privacy: str) -> None:
        if not turn.parsed.store:
            return
        record = StoredResponse(body, turn.conversation, privacy)
        if not await self.store.save(body["id"], record, turn.client):
            log.warning("response %s not stored: over responses_max_bytes", body["id"])

    # -- streaming ---------------------------------------------------------------------------

    async def _stream(self, turn: _Turn) -> Response:
        opened = await self.service.stream(turn.request, turn.client)
        headers = meta_headers(opened.meta)
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        return TimedStreamingResponse(self._sse(turn, opened), media_type="text/event-stream",
                                      headers=headers, send_timeout_s=self.send_timeout_s,
                                      on_stall=self._count_stall)

    def _count_stall(self) -> None:
        self.service.count_slow_client(SlowClient.SEND_TIMEOUT)

    async def _sse(self, turn: _Turn, opened: OpenedStream) -> AsyncIterator[bytes]:
        parsed = turn.parsed
        events = ResponseEvents(
            response_id=new_id("resp"), created_at=int(time.time()), model=opened.served_model,
            echo=parsed.echo, instructions=parsed.instructions,
            previous_response_id=parsed.previous_response_id, store=parsed.store)
        burst = Burst()  # events whose successor is already decoded go out with it
        add = burst.add
        try:
            yield events.start()
            async for event in opened:
                chunk = events.encode(event)
                if event.finish_reason is not None and events.final is not None:
                    # Stored before the last event goes out: a client that continues at once
                    # finds it.
                    await self._keep(turn, events.final, opened.privacy)
                data = add(chunk, event.ready_next)
                if data is not None:
                    yield data
            if rest := burst.flush():
                yield rest
        except ClientStalled:
            opened.client_stalled()
        except BackendError as exc:
            yield burst.flush() + events.fail(exc.code or "stream_error",
                              f"The upstream stream from '{opened.meta.backend}' broke after "
                              f"it started: {exc.message}. The answer is incomplete.")
        finally:
            await opened.aclose()

    # -- stored responses --------------------------------------------------------------------

    async def _stored(self, request: Request) -> tuple[str, StoredResponse]:
        response_id = str(request.path_params["response_id"])
        found = await self.store.load(response_id, client_context(request, "responses"))
        if found is None:
            raise _not_found(response_id)
        return response_id, found

    async def retrieve(self, request: Request) -> Response:
        try:
            if request.query_params.get("stream") in ("true", "1"):
                raise InvalidRequest("Streaming a stored response again is not supported.",
                                     param="stream")
            _, found = await self._stored(request)
        except RouterError as exc:
            return error_response(exc)
        return Response(orjson.dumps(found.response), media_type="application/json")

    async def delete(self, request: Request) -> Response:
        response_id = str(request.path_params["response_id"])
        if not await self.store.delete(response_id, client_context(request, "responses")):
            return error_response(_not_found(response_id))
        return Response(orjson.dumps({"id": response_id, "object": "response",
                                      "deleted": True}), media_type="application/json")

    async def input_items(self, request: Request) -> Response:
        try:
            _, found = await self._stored(request)
            page = _page(found.input_items, request.query_params)
        except RouterError as exc:
            return error_response(exc)
        return Response(orjson.dumps(page), media_type="application/json")


def _page(items: list[dict[str, Any]], query: Any) -> dict[str, Any]:
    """One page of input items: `limit` (1-100, default 20), `order` (asc | desc, default
    desc), `after` (an item id)."""
    raw_limit = query.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIST:
        raise InvalidRequest(f"Invalid 'limit': an integer from 1 to {MAX_LIST}.",
                             param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("Invalid 'order': 'asc' or 'desc'.", param="order")
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise InvalidRequest(f"Invalid 'after': no input item '{after}'.", param="after")
        ordered = ordered[ids.index(after) + 1:]
    data = ordered[:int(raw_limit)]
    return {"object": "list", "data": data,
            "first_id": data[0].get("id") if data else None,
            "last_id": data[-1].get("id") if data else None,
            "has_more": len(ordered) > len(data)}


def _in_dialect(exc: RouterError | ValidationError) -> RouterError:
    """A `ChatRequest` validation error, its parameter named as the Responses API names it."""
    err = from_validation_error(exc) if isinstance(exc, ValidationError) else exc
    param = responses_param(err.param)
    if param != err.param and err.param is not None:
        err.message = err.message.replace(f"'{err.param}'", f"'{param}'")
        err.param = param
    return err


def _outcome(exc: BaseException) -> str:
    return error_outcome(exc) if isinstance(exc, RouterError) else "invalid_request"


def routes(service: RouterService, settings: RouterSettings, access: Access) -> list[BaseRoute]:
    """The dialect's routes, mounted by `router/app.py`."""
    r = ResponsesRoutes(service, settings)
    return [
        Route("/v1/responses", r.create, methods=["POST"]),
        Route("/v1/responses/{response_id}", access.client(r.retrieve), methods=["GET"]),
        Route("/v1/responses/{response_id}", access.client(r.delete), methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", access.client(r.input_items),
              methods=["GET"]),
    ]


async def _cpu(size: int, work: Callable[[], T]) -> T:
    """Decoding work for a body of `size` bytes: inline when small, else in a worker thread
    under the same bound on large parses as the other surfaces."""
    if size <= OFFLOAD_BYTES:
        return work()
    return await asyncio.to_thread(large_parse, work)
