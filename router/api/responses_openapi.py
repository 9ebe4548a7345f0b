"""The Responses API's paths in `/openapi.json` (merged by `api/openapi.py`): request bodies as
generic objects (the OpenAI Responses API's own shapes), answers 200 plus the error shape."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_paths"]

JSON = "application/json"
_OBJECT = {JSON: {"schema": {"type": "object"}}}
_ID = [{"name": "response_id", "in": "path", "required": True,
        "schema": {"type": "string", "pattern": "^resp_"}}]


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


def _op(op_id: str, summary: str, ok: str, errors: tuple[int, ...],
        **extra: Any) -> dict[str, Any]:
    return {"operationId": op_id, "summary": summary,
            "responses": {"200": {"description": ok, "content": _OBJECT}, **_errors(*errors)},
            **extra}


def openapi_paths() -> dict[str, Any]:
    create_ok = {"description": "The Response object, or its server-sent events when "
                                "`stream` is true.",
                 "content": {**_OBJECT, "text/event-stream": {"schema": {"type": "string"}}}}
    create = {"operationId": "createResponse",
              "summary": "OpenAI Responses API (store and previous_response_id supported)",
              "requestBody": {"required": True, "content": _OBJECT},
              "parameters": [{"name": "X-Privacy", "in": "header", "required": False,
                              "schema": {"type": "string", "enum": ["private", "standard"]}}],
              "responses": {"200": create_ok,
                            **_errors(400, 401, 403, 404, 413, 415, 429, 502, 503, 504)}}
    stored = (401, 403, 404)
    return {
        "/v1/responses": {"post": create},
        "/v1/responses/{response_id}": {
            "get": _op("getResponse", "A stored response", "The Response object.", stored,
                       parameters=_ID),
            "delete": _op("deleteResponse", "Delete a stored response",
                          "{id, object: response, deleted: true}", stored, parameters=_ID),
        },
        "/v1/responses/{response_id}/input_items": {
            "get": _op("listResponseInputItems", "The input items of a stored response",
                       "A list object (data, first_id, last_id, has_more).",
                       (400, *stored), parameters=_ID),
        },
    }
