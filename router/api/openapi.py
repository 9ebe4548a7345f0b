"""GET /openapi.json: an OpenAPI 3.1 description of the router's own HTTP API.

The chat request schema is generated from the pydantic `ChatRequest` model (`model_json_schema`,
its `$defs` hoisted into `components/schemas`), so the document tracks the code that validates
requests. Responses describe the OpenAI JSON and SSE answers and the one error shape every
failure uses: `{"error": {"message", "type", "param", "code"}}`. The document is built once per
process and served as cached bytes.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from router import __version__
from router.api import anthropic_routes, ollama_routes, responses_routes
from router.types import ChatRequest

__all__ = ["build_document", "document_bytes", "openapi_json"]

REF = "#/components/schemas/{model}"
JSON = "application/json"

# Accepted by `ChatRequest`'s normalising validator although they are not model fields.
_NORMALISED_EXTRAS: dict[str, Any] = {
    "max_completion_tokens": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}],
                              "description": "alias of max_tokens"},
    "stream_options": {"anyOf": [{"type": "object", "properties": {
        "include_usage": {"type": "boolean"}}}, {"type": "null"}]},
    "reasoning": {"anyOf": [{"type": "object", "properties": {
        "effort": {"type": "string", "enum": ["minimal", "none", "low", "medium", "high"]}}},
        {"type": "null"}], "description": "alias of reasoning_effort"},
}

# One server-sent event (schema per event, as OpenAPI 3.1 tools read it): `data:` is a JSON
# chunk, `[DONE]`, or an in-band `{"error": ...}` that ends a broken stream.
_SSE_EVENT: dict[str, Any] = {"type": "object", "required": ["data"], "properties": {
    "data": {"type": "string"}, "event": {"type": "string"}}}

_ERROR_STATUSES: dict[int, str] = {
    400: "Invalid request: malformed JSON, a wrong type or value (`param` names the field).",
    401: "Missing or invalid API key.",
    403: "The key may not do this.",
    404: "Unknown model.",
    413: "The body is over the size limit.",
    415: "The Content-Type is not a JSON media type.",
    429: "Rate limited or over budget (`Retry-After`).",
    503: "No capacity that this request may use right now (`Retry-After`).",
}


def _error_schemas() -> dict[str, Any]:
    nullable_str = {"type": ["string", "null"]}
    return {
        "ErrorBody": {
            "type": "object", "required": ["message", "type", "param", "code"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                           "param": nullable_str, "code": nullable_str},
        },
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {"$ref": "#/components/schemas/ErrorBody"}},
        },
    }


def _response_schemas() -> dict[str, Any]:
    usage = {"type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
             "properties": {"prompt_tokens": {"type": "integer"},
                            "completion_tokens": {"type": "integer"},
                            "total_tokens": {"type": "integer"}}}
    message = {"type": "object", "required": ["role"], "properties": {
        "role": {"const": "assistant"}, "content": {"type": ["string", "null"]},
        "reasoning": {"type": "string"}, "tool_calls": {"type": "array"}}}
    return {
        "Usage": usage,
        "ChatCompletion": {
            "type": "object",
            "required": ["id", "object", "created", "model", "choices", "usage"],
            "properties": {
                "id": {"type": "string"}, "object": {"const": "chat.completion"},
                "created": {"type": "integer"}, "model": {"type": "string"},
                "system_fingerprint": {"type": "string"},
                "choices": {"type": "array", "items": {
                    "type": "object", "required": ["index", "message", "finish_reason"],
                    "properties": {"index": {"type": "integer"}, "message": message,
                                   "finish_reason": {"type": "string"}}}},
                "usage": {"$ref": "#/components/schemas/Usage"},
            },
        },
        "Model": {
            "type": "object", "required": ["id", "object", "created", "owned_by"],
            "properties": {"id": {"type": "string"}, "object": {"const": "model"},
                           "created": {"type": "integer"}, "owned_by": {"type": "string"}}},
        "ModelList": {
            "type": "object", "required": ["object", "data"],
            "properties": {"object": {"const": "list"}, "data": {
                "type": "array", "items": {"$ref": "#/components/schemas/Model"}}},
        },
        "Plan": {"type": "object", "description": "The routing plan (explain: nothing is sent).",
                 "required": ["model", "privacy", "route", "reason", "candidates"]},
        "Status": {"type": "object", "description": "Backends, breakers, queues, store."},
        "Health": {"type": "object", "description": "Alive; reveals nothing else."},
        "Ready": {"type": "object", "description": "Ready or not (the status code says)."},
        "ReloadResult": {"type": "object", "required": ["reloaded", "message"],
                         "properties": {"reloaded": {"type": "boolean"},
                                        "message": {"type": "string"}}},
    }


def _chat_request_schemas() -> dict[str, Any]:
    schema = ChatRequest.model_json_schema(ref_template=REF, mode="validation")
    defs: dict[str, Any] = schema.pop("$defs", {})
    props = schema.setdefault("properties", {})
    for name, extra in _NORMALISED_EXTRAS.items():
        props.setdefault(name, extra)
    if isinstance(props.get("model"), dict):
        props["model"].setdefault("examples", ["gpt-oss-20b", "gpt-oss-120b"])
    schema.setdefault("examples", [{"model": "gpt-oss-20b",
                                    "messages": [{"role": "user", "content": "Hello"}]}])
    return {**defs, "ChatRequest": schema}


def _json_content(ref: str) -> dict[str, Any]:
    return {JSON: {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


def _operation(op_id: str, summary: str, ok: dict[str, Any], errors: tuple[int, ...],
               **extra: Any) -> dict[str, Any]:
    return {"operationId": op_id, "summary": summary,
            "responses": {"200": ok, **_errors(*errors)}, **extra}


def _paths() -> dict[str, Any]:
    chat_body = {"required": True, "content": _json_content("ChatRequest")}
    headers = [
        {"name": "X-Privacy", "in": "header", "required": False,
         "schema": {"type": "string", "enum": ["private", "standard"]},
         "description": "Marks the request private (served only by local backends)."},
        {"name": "X-Request-Id", "in": "header", "required": False,
         "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}},
    ]
    chat_ok = {"description": "The answer: JSON, or SSE chunks when `stream` is true.",
               "content": {**_json_content("ChatCompletion"),
                           "text/event-stream": {"schema": _SSE_EVENT}}}
    all_errors = tuple(_ERROR_STATUSES)
    chat = _operation("createChatCompletion", "OpenAI Chat Completions", chat_ok,
                      (*all_errors, 502, 504),
                      parameters=headers, requestBody=chat_body)
    explain = _operation("explainRoute", "The plan a chat request would get (sends nothing)",
                         {"description": "The plan.", "content": _json_content("Plan")},
                         all_errors, parameters=headers, requestBody=chat_body)
    ops = (401, 403)
    return {
        **responses_routes.openapi_paths(),
        **ollama_routes.openapi_paths(),
        **anthropic_routes.openapi_paths(),
        "/v1/chat/completions": {"post": chat},
        "/v1/models": {"get": _operation(
            "listModels", "Every name a client may send, per served model",
            {"description": "Models.", "content": _json_content("ModelList")}, ops)},
        "/v1/models/{model_id}": {"get": _operation(
            "retrieveModel", "One model by any name a client may send for it",
            {"description": "The model.", "content": _json_content("Model")}, (*ops, 404),
            parameters=[{"name": "model_id", "in": "path", "required": True,
                         "schema": {"type": "string"},
                         "description": "e.g. gpt-oss-20b, gpt-oss:20b, openai/gpt-oss-20b"}])},
        "/v1/router/explain": {"post": explain},
        "/v1/router/status": {"get": _operation(
            "routerStatus", "Backends, breakers, queues and the state store",
            {"description": "Status.", "content": _json_content("Status")}, ops)},
        "/healthz": {"get": _operation(
            "healthz", "Liveness", {"description": "Alive.", "content": _json_content("Health")},
            (), security=[{}])},
        "/readyz": {"get": _operation(
            "readyz", "Readiness: some backend is usable",
            {"description": "Ready.", "content": _json_content("Ready")}, (503,),
            security=[{}])},
        "/metrics": {"get": _operation(
            "metrics", "Prometheus metrics",
            {"description": "Prometheus text exposition.",
             "content": {"text/plain": {"schema": {"type": "string"}}}}, ops)},
        **_ui_paths(ops),
        "/admin/reload": {"post": _operation(
            "adminReload", "Reload the policy file",
            {"description": "Reloaded.", "content": _json_content("ReloadResult")},
            (400, 401, 403), security=[{"bearer": []}, {"apiKey": []}])},
    }


def _ui_paths(ops: tuple[int, ...]) -> dict[str, Any]:
    """The live dashboard (`api/ui_routes.py`): the page, its two assets and its feed."""
    text = {"schema": {"type": "string"}}
    return {
        "/ui": {"get": _operation(
            "dashboard", "The live dashboard page (no data in it; it reads /ui/events)",
            {"description": "HTML.", "content": {"text/html": text}}, ops, security=[{}])},
        "/ui/static/{name}": {"get": _operation(
            "dashboardAsset", "The dashboard's script and style sheet",
            {"description": "The asset.",
             "content": {"text/javascript": text, "text/css": text}}, (*ops, 404),
            security=[{}], parameters=[{"name": "name", "in": "path", "required": True,
                                        "schema": {"type": "string",
                                                   "enum": ["app.js", "app.css"]}}])},
        "/ui/events": {"get": _operation(
            "dashboardEvents", "The dashboard's live data: server-sent events, one a second "
            "(figures, states and reasons; never prompt or answer text). Streams only with "
            "`Accept: text/event-stream`; otherwise one event.",
            {"description": "`data:` lines, each one JSON dashboard view.",
             "content": {"text/event-stream": {"schema": _SSE_EVENT}}}, (400, *ops),
            parameters=[{"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                         "description": "end the feed after this many events"}])},
    }


def build_document() -> dict[str, Any]:
    """The whole OpenAPI document (a fresh dict; see `document_bytes` for the cached form)."""
    responses = {f"E{s}": {"description": d, "content": _json_content("Error")}
                 for s, d in {**_ERROR_STATUSES, 502: "Upstream failure.",
                              504: "Deadline exceeded."}.items()}
    for s in (429, 503):
        responses[f"E{s}"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    request_schemas, own = _chat_request_schemas(), {**_error_schemas(), **_response_schemas()}
    if clash := sorted(set(request_schemas) & set(own)):
        raise ValueError(f"request model names clash with response schema names: {clash}")
    return {
        "openapi": "3.1.0",
        "info": {"title": "hybrid-router", "version": __version__,
                 "description": "One OpenAI-compatible endpoint over local and cloud gpt-oss."},
        "paths": _paths(),
        "components": {
            "schemas": {**request_schemas, **own},
            "responses": responses,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        # No keys configured (loopback mode) means no credentials: `{}` makes auth optional.
        "security": [{}, {"bearer": []}, {"apiKey": []}],
    }


@functools.cache
def document_bytes() -> bytes:
    return orjson.dumps(build_document())


async def openapi_json(request: Request) -> Response:
    return Response(document_bytes(), media_type=JSON)
