"""The Ollama-native paths of `/openapi.json` (merged by `api/openapi.py`).

Bodies are described as generic objects (Ollama's own documentation is the reference); every
error is Ollama's `{"error": "message"}`.
"""

from __future__ import annotations

from typing import Any

JSON = "application/json"
_ERROR = {"description": "An error in Ollama's shape.", "content": {JSON: {"schema": {
    "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}
_OBJECT: dict[str, Any] = {"type": "object"}
_BODY = {"required": True, "content": {JSON: {"schema": _OBJECT}}}
_CHAT_ERRORS = (400, 401, 403, 404, 413, 415, 429, 502, 503, 504)


def _op(op_id: str, summary: str, errors: tuple[int, ...], *, body: bool = False,
        ok: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    ok = ok or {"description": "OK.", "content": {JSON: {"schema": _OBJECT}}}
    out: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": ["ollama"],
                           "responses": {"200": ok, **{str(s): _ERROR for s in errors}}, **extra}
    if body:
        out["requestBody"] = _BODY
    return out


def _unsupported(op_id: str, summary: str, method: str = "post", **extra: Any
                 ) -> dict[str, Any]:
    op = _op(op_id, summary, (400,), body=method == "post", **extra)
    op["responses"].pop("200")
    return {method: op}


def openapi_paths() -> dict[str, Any]:
    stream_ok = {"description": "The answer: JSON, or NDJSON lines when `stream` is not false.",
                 "content": {JSON: {"schema": _OBJECT},
                             "application/x-ndjson": {"schema": _OBJECT}}}
    digest = [{"name": "digest", "in": "path", "required": True, "schema": {"type": "string"}}]
    return {
        "/api/chat": {"post": _op("ollamaChat", "Ollama chat", _CHAT_ERRORS, body=True,
                                  ok=stream_ok)},
        "/api/generate": {"post": _op("ollamaGenerate", "Ollama generate", _CHAT_ERRORS,
                                      body=True, ok=stream_ok)},
        "/api/tags": {"get": _op("ollamaTags", "The served models, Ollama names", (401, 403))},
        "/api/show": {"post": _op("ollamaShow", "One model's details and capabilities",
                                  (400, 401, 403, 404, 413, 415), body=True)},
        "/api/ps": {"get": _op("ollamaPs", "Models the local backends have loaded",
                               (401, 403))},
        "/api/version": {"get": _op("ollamaVersion", "The Ollama API level", (),
                                    security=[{}])},
        "/": {"get": _op("ollamaRoot", "Ollama is running", (), security=[{}], ok={
            "description": "Ollama is running", "content": {
                "text/plain": {"schema": {"type": "string"}}}})},
        "/api/embed": _unsupported("ollamaEmbed", "Not served: gpt-oss has no embeddings"),
        "/api/embeddings": _unsupported("ollamaEmbeddings",
                                        "Not served: gpt-oss has no embeddings"),
        **{f"/api/{w}": _unsupported(f"ollama{w.title()}", "Not served: manage models on the "
                                     "Ollama host") for w in ("pull", "push", "create", "copy")},
        "/api/delete": _unsupported("ollamaDelete", "Not served: manage models on the Ollama "
                                    "host", method="delete"),
        "/api/blobs/{digest}": _unsupported("ollamaBlobs", "Not served: manage models on the "
                                            "Ollama host", parameters=digest),
    }
