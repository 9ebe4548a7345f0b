"""Hostile and careless input at the surface, through the in-process app: every malformed body
is a 400/415 naming the parameter, never a 500 and never a backend call."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from router.app import create_app
from router.policy.loader import parse_policy
from router.settings import RouterSettings
from router_simulators.server import SimServer
from tests.conftest import base_policy, sim_get

MSGS = [{"role": "user", "content": "hi"}]
OK_BODY = {"model": "gpt-oss-20b", "messages": MSGS}


@pytest.fixture(scope="module")
def client(ollama_sim: SimServer, bedrock_sim: SimServer) -> Iterator[TestClient]:
    policy = parse_policy(base_policy(ollama_sim.url, bedrock_sim.url))
    # TestClient's peer is "testclient", not loopback: open_remote lets it past the open-mode
    # loopback check.
    app = create_app(RouterSettings(open_remote=True, max_messages=50), policy=policy)
    with TestClient(app, headers={"host": "127.0.0.1"}) as c:
        yield c


def backend_requests(ollama_sim: SimServer, bedrock_sim: SimServer) -> int:
    return int(sim_get(ollama_sim, "/_sim/stats")["requests"]) + int(
        sim_get(bedrock_sim, "/_sim/stats").get("requests", 0))


def post(client: TestClient, body: bytes | dict[str, Any], path: str = "/v1/chat/completions",
         ctype: str | None = "application/json", **headers: str) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = dict(headers)
    if ctype is not None:
        hdrs["content-type"] = ctype
    return client.post(path, content=raw, headers=hdrs)


def assert_error(r: Any, status: int, param: str | None = None,
                 code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


def test_a_valid_request_is_served(client: TestClient) -> None:
    r = post(client, OK_BODY)
    assert r.status_code == 200, r.text
    r = post(client, OK_BODY, ctype="application/json; charset=utf-8")
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"model": "gpt-oss-20b", "model": "gpt-oss-120b", "messages": [{"role": "user", '
     b'"content": "hi"}]}', "model"),
    (b'{"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "hi"}], '
     b'"metadata": {"privacy": "private", "privacy": "standard"}}', "metadata.privacy"),
    (b'{"model": "gpt-oss:20b", "messages": [{"role": "user", "content": "hi"}], '
     b'"model": "gpt-oss-120b"}', "model"),
], ids=["model", "metadata.privacy", "alias-then-model"])
def test_duplicate_keys_are_400(client: TestClient, ollama_sim: SimServer,
                                bedrock_sim: SimServer, raw: bytes, param: str) -> None:
    before = backend_requests(ollama_sim, bedrock_sim)
    assert_error(post(client, raw), 400, param, "duplicate_key")
    assert_error(post(client, raw, "/v1/router/explain"), 400, param, "duplicate_key")
    assert backend_requests(ollama_sim, bedrock_sim) == before


@pytest.mark.parametrize("ctype", ["text/plain; charset=json", "text/plain", None,
                                   "application/x-www-form-urlencoded"])
def test_non_json_media_types_415(client: TestClient, ctype: str | None) -> None:
    assert_error(post(client, OK_BODY, ctype=ctype), 415, code="unsupported_media_type")
    assert_error(post(client, OK_BODY, "/v1/router/explain", ctype=ctype), 415)


@pytest.mark.parametrize(("extra", "param"), [
    ({"response_format": {"type": "json_schema", "json_schema": 5}},
     "response_format.json_schema"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"tool_choice": {"type": "function", "function": ["x"]}}, "tool_choice.function"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"stream": "yes"}, "stream"),
    ({"temperature": True}, "temperature"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"top_p": "1"}, "top_p"),
    ({"seed": 1.5}, "seed"),
    ({"stop": [1]}, "stop[0]"),
    ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    ({"metadata": {"privacy": 1}}, "metadata.privacy"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]},
     "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
     "tools[0].function.parameters"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
     "messages[0].content[0].text"),
    ({"messages": [*MSGS, {"role": "tool", "content": "sunny"}]}, "messages[1].tool_call_id"),
    ({"messages": [*MSGS, {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]},
     "messages[1].tool_calls[0].id"),
])
def test_malformed_fields_are_400_and_reach_no_backend(
        client: TestClient, ollama_sim: SimServer, bedrock_sim: SimServer,
        extra: dict[str, Any], param: str) -> None:
    before = backend_requests(ollama_sim, bedrock_sim)
    assert_error(post(client, {**OK_BODY, **extra}), 400, param)
    assert backend_requests(ollama_sim, bedrock_sim) == before


def deep_tools_body(depth: int) -> bytes:
    schema = '{"type": "object", "properties": {"a": ' * depth + '{"type": "string"}' + (
        "}}" * depth)
    return (b'{"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "x"}], '
            b'"tools": [{"type": "function", "function": {"name": "f", "parameters": '
            + schema.encode() + b"}}]}")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/router/explain"])
@pytest.mark.parametrize("depth", [990, 100])
def test_deeply_nested_tool_schema_is_400(client: TestClient, path: str, depth: int) -> None:
    assert_error(post(client, deep_tools_body(depth), path), 400, code="too_deep")


def test_too_many_messages_is_400(client: TestClient) -> None:
    body = {"model": "gpt-oss-20b", "messages": MSGS * 51}  # this app allows 50
    assert_error(post(client, body), 400, "messages", "array_too_long")
    assert post(client, {"model": "gpt-oss-20b", "messages": MSGS * 50}).status_code == 200


def test_request_id_is_sanitised_before_it_is_echoed(client: TestClient) -> None:
    r = post(client, OK_BODY, **{"x-request-id": "ok-1<script>"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "ok-1script"


def test_mid_body_disconnect_logs_no_exception(client: TestClient,
                                               caplog: pytest.LogCaptureFixture) -> None:
    app = client.app
    sent: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"model": "gpt-', "more_body": True},
        {"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
             "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"content-length", b"500")],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 11435)}

    async def call() -> None:
        await app(scope, receive, send)  # type: ignore[arg-type]

    with caplog.at_level(logging.DEBUG):
        client.portal.call(call)  # type: ignore[union-attr]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
    assert any("disconnected" in r.getMessage() for r in caplog.records)
    service = app.state.service  # type: ignore[attr-defined]
    value = service.metrics.registry.get_sample_value(
        "router_requests_total", {"backend": "none", "route": "none", "reason": "rejected",
                                  "outcome": "client_disconnected"})
    assert value == 1.0


def test_large_bodies_are_decoded_off_the_event_loop(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from router.api import request_body

    offloaded: list[str] = []
    real = asyncio.to_thread

    async def to_thread(fn: Any, /, *args: Any) -> Any:
        offloaded.append(fn.__name__)
        return await real(fn, *args)

    monkeypatch.setattr(asyncio, "to_thread", to_thread)
    assert post(client, OK_BODY).status_code == 200
    assert "_decode_large" not in offloaded
    text = "x" * (request_body.OFFLOAD_BYTES + 1)
    r = post(client, {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": text}],
                      "temperature": "hot"})
    assert_error(r, 400, "temperature")
    assert "_decode_large" in offloaded  # parsed in a worker, a few at a time


def test_large_responses_bodies_are_decoded_off_the_event_loop(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from router.api import request_body

    offloaded: list[str] = []
    real = asyncio.to_thread

    async def to_thread(fn: Any, /, *args: Any) -> Any:
        offloaded.append(getattr(fn, "__name__", ""))
        return await real(fn, *args)

    monkeypatch.setattr(asyncio, "to_thread", to_thread)
    small = {"model": "gpt-oss-20b", "input": "hi", "temperature": "hot"}
    assert post(client, small, path="/v1/responses").status_code == 400
    assert "large_parse" not in offloaded
    big = {**small, "input": "x" * (request_body.OFFLOAD_BYTES + 1)}
    assert post(client, big, path="/v1/responses").status_code == 400
    assert "large_parse" in offloaded  # parsed in a worker, a few at a time
