"""Reading request bodies at the edge: headers, content type, JSON, duplicate keys, limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.requests import Request

from router.api.request_body import (
    BodyLimits,
    check_content_type,
    decode_chat_request,
    lower_headers,
    parse_json,
    request_id,
)
from router.errors import InvalidRequest, UnsupportedMediaType
from router.settings import RouterSettings
from router.tokens import estimate_prompt_tokens, json_chars
from router.types import ChatRequest

LIMITS = BodyLimits()
MSG = '[{"role": "user", "content": "hi"}]'


def scope_request(headers: list[tuple[bytes, bytes]]) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers})


def bad(raw: bytes | str, limits: BodyLimits = LIMITS) -> InvalidRequest:
    data = raw.encode() if isinstance(raw, str) else raw
    with pytest.raises(InvalidRequest) as info:
        decode_chat_request(data, limits)
    return info.value


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


# -- duplicate keys ----------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "param"), [
    ('{"model": "gpt-oss-20b", "model": "gpt-oss-120b", "messages": ' + MSG + "}", "model"),
    ('{"model": "m", "messages": ' + MSG + ', "metadata": {"privacy": "private", '
     '"privacy": "standard"}}', "metadata.privacy"),
    # A private alias first, then a second "model" key that would have won with last-one-wins.
    ('{"model": "gpt-oss-20b-private", "messages": ' + MSG + ', "model": "gpt-oss-20b"}',
     "model"),
    ('{"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "user", '
     '"role": "system", "content": "b"}]}', "messages[1].role"),
])
def test_duplicate_keys_are_400_naming_the_path(raw: str, param: str) -> None:
    err = bad(raw)
    assert err.status == 400 and err.code == "duplicate_key" and err.param == param


@pytest.mark.parametrize("raw", [
    '{"model":"a","model":"b"} x',  # trailing data after the object
    '{"model":"a","model":"b",',  # truncated after the duplicate
    '{"model":"a","model":"b","x":NaN}',  # a constant the second pass refuses
])
def test_a_duplicate_before_broken_json_is_still_a_400(raw: str) -> None:
    # Found by the mutation fuzz: the duplicate's second, locating pass raised on the broken
    # rest of the body (trailing data) and the request became a 500.
    err = bad(raw)
    # Which of the two faults is named depends on which the parser meets first.
    assert err.status == 400 and err.code in ("duplicate_key", "invalid_json")


def test_large_bodies_are_parsed_a_few_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from router.api import request_body

    active, peak = [0], [0]
    cond, release = threading.Condition(), threading.Event()

    def held_decode(raw: bytes, limits: BodyLimits) -> Any:
        with cond:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            cond.notify_all()
        release.wait(10)  # hold the parse until the test has seen how many got in
        with cond:
            active[0] -= 1

    monkeypatch.setattr(request_body, "decode_chat_request", held_decode)
    threads = [threading.Thread(target=request_body._decode_large, args=(b"{}", LIMITS))
               for _ in range(6)]
    for t in threads:
        t.start()
    with cond:
        assert cond.wait_for(lambda: active[0] == request_body.LARGE_PARSES, timeout=10)
    release.set()
    for t in threads:
        t.join()
    assert peak[0] == request_body.LARGE_PARSES


def test_json_rejects_what_no_backend_can_encode() -> None:
    for raw in ('{"model": NaN}', '{"model": "m", "seed": Infinity}',
                '{"model": "m", "seed": ' + "9" * 30 + "}", '{"model": "\\ud800"}'):
        assert bad(raw).code == "invalid_json", raw
    assert bad(b'{"model": "\xff"}').code == "invalid_json"
    ok = parse_json(b'{"model": "\\ud83d\\ude00"}')  # a valid surrogate pair
    assert ok["model"] == "\U0001f600"


def test_non_object_and_empty_bodies() -> None:
    assert "object" in bad("[1, 2]").message
    assert "empty" in bad(b"  ").message


# -- headers -----------------------------------------------------------------------------------

def test_repeated_headers_keep_every_value() -> None:
    req = scope_request([(b"X-Privacy", b"private"), (b"x-privacy", b"standard"),
                         (b"content-type", b"application/json")])
    headers = lower_headers(req)
    assert headers["x-privacy"] == "private, standard"
    assert headers["content-type"] == "application/json"


def test_request_id_is_made_safe_to_echo() -> None:
    assert request_id({"x-request-id": "abc-123"}) == "abc-123"
    assert request_id({"x-request-id": "a\r\nSet-Cookie: x<script>"}) == "aSet-Cookie:xscript"
    assert len(request_id({"x-request-id": "a" * 1000})) == 128
    assert request_id({"x-request-id": "first, second"}) == "first"
    assert request_id({"x-request-id": "%%%"}).startswith("req")
    assert request_id({}).startswith("req")


@pytest.mark.parametrize("ctype", [
    "application/json", "Application/JSON", "application/json; charset=utf-8",
    'application/json;charset="UTF-8"', "application/vnd.api+json",
])
def test_json_media_types_accepted(ctype: str) -> None:
    check_content_type(ctype)


@pytest.mark.parametrize("ctype", [
    None, "text/plain; charset=json", "text/json", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=json", "application/jsonp", "application/json; charset=latin-1",
    "", "application/json-seq",
])
def test_other_media_types_415(ctype: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        check_content_type(ctype)


# -- depth and counts --------------------------------------------------------------------------

def nested_text(depth: int) -> str:
    """`nested(depth)` as JSON text, built without recursion (json.dumps would recurse)."""
    return ('{"type": "object", "properties": {"a": ' * depth + '{"type": "string"}'
            + "}}" * depth)


def tools_body(depth: int) -> bytes:
    return ('{"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": '
            '"function", "function": {"name": "f", "parameters": ' + nested_text(depth)
            + "}}]}").encode()


def test_deep_tool_schema_is_400_too_deep() -> None:
    err = bad(tools_body(990))  # past the JSON parser's own recursion limit
    assert err.status == 400 and err.code == "too_deep"
    err = bad(tools_body(40))  # parses, but past max_json_depth
    assert err.code == "too_deep" and err.param == "tools[0].function.parameters"
    assert decode_chat_request(tools_body(20), LIMITS).tools
    assert bad(b"[" * 100_000).code == "too_deep"


def test_depth_limit_is_a_setting() -> None:
    limits = BodyLimits.from_settings(RouterSettings(max_json_depth=200), 1024 * 1024)
    assert limits.max_json_depth == 200 and limits.max_body_bytes == 1024 * 1024
    assert decode_chat_request(tools_body(60), limits).tools


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "user", "content": "x"}] * 3}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 3}]},
     "messages[0].content"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}] * 3}, "tools"),
    ({"stop": ["a", "b", "c"]}, "stop"),
])
def test_counts_are_bounded(body: dict[str, Any], param: str) -> None:
    limits = BodyLimits(max_messages=2, max_content_parts=2, max_tools=2, max_stop=2)
    full = {"model": "m", "messages": [{"role": "user", "content": "x"}], **body}
    err = bad(json.dumps(full), limits)
    assert err.status == 400 and err.param == param and err.code == "array_too_long"


def test_default_limits_allow_real_agents() -> None:
    body = {"model": "m", "stop": ["a", "b", "c", "d"],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 64}] * 500,
            "tools": [{"type": "function", "function": {"name": f"t{i}"}} for i in range(128)]}
    assert len(decode_chat_request(json.dumps(body).encode(), LIMITS).messages) == 500


# -- the token estimator -----------------------------------------------------------------------

def test_estimator_never_recurses_and_errs_large() -> None:
    params = nested(990)
    req = ChatRequest.model_construct(
        model="m", messages=ChatRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "x"}]}).messages,
        tools=[ChatRequest.model_validate({"model": "m", "messages": [{"role": "user"}],
                                           "tools": [{"type": "function", "function": {
                                               "name": "f"}}]}).tools[0]])  # type: ignore[index]
    req.tools[0].function.parameters = params  # type: ignore[index]
    assert estimate_prompt_tokens(req) > 990 * 30 // 3
    small = {"type": "object", "properties": {"city": {"type": "string"}}, "x": [1, True, None]}
    assert json_chars(small) >= len(json.dumps(small, separators=(",", ":")))
