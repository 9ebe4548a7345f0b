"""GET /openapi.json: a valid OpenAPI 3.1 document of every route, built once, whose chat
request schema is the one `ChatRequest` generates."""

from __future__ import annotations

import re

import orjson
from openapi_spec_validator import validate
from starlette.routing import Route

from router.api.openapi import build_document, document_bytes
from router.types import ChatRequest
from tests.fuzz.harness import build_fuzz_app, client


def test_document_is_valid_openapi_31() -> None:
    doc = build_document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on an invalid document


def test_served_document_is_the_cached_one_and_covers_every_route() -> None:
    fuzz = build_fuzz_app()
    with client(fuzz) as c:
        r = c.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.content == document_bytes()
    assert document_bytes() is document_bytes()  # built once
    doc = orjson.loads(r.content)
    # `{model_id:path}` is Starlette's convertor syntax; OpenAPI templates it as `{model_id}`.
    routes = {(m.lower(), re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path))
              for route in fuzz.app.routes if isinstance(route, Route)
              for m in route.methods or () if m != "HEAD"}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    # /chat/completions is an unversioned alias of /v1/chat/completions; this document itself.
    assert routes - documented == {("post", "/chat/completions"), ("get", "/openapi.json")}
    assert documented <= routes


def test_chat_request_schema_tracks_the_model() -> None:
    doc = build_document()
    schemas = doc["components"]["schemas"]
    generated = ChatRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    assert set(generated["properties"]) <= set(schemas["ChatRequest"]["properties"])
    assert generated.get("required") == schemas["ChatRequest"].get("required")
    for name in generated.get("$defs", {}):
        assert name in schemas
    body = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/ChatRequest")


def test_every_error_response_uses_the_error_shape() -> None:
    doc = build_document()
    chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    for status in ("400", "401", "403", "404", "413", "415", "429", "503"):
        ref = chat[status]["$ref"].rsplit("/", 1)[1]
        content = doc["components"]["responses"][ref]["content"]
        assert content["application/json"]["schema"]["$ref"].endswith("/Error")
    err = doc["components"]["schemas"]["ErrorBody"]
    assert set(err["required"]) == {"message", "type", "param", "code"}
