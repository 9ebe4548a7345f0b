"""Anthropic Messages codec: request translation, JSON and SSE encoding, error mapping."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from router.api.anthropic_decode import effort_for, to_chat
from router.api.anthropic_routes import decode
from router.api.anthropic_wire import (
    EventEncoder,
    error_status_and_body,
    message_body,
    stream_error,
    tool_use_id,
)
from router.api.request_body import BodyLimits
from router.errors import (
    DeadlineExceeded,
    InvalidRequest,
    NoLocalCapacity,
    PayloadTooLarge,
    Unauthorized,
)
from router.types import ChatResult, FunctionCall, StreamEvent, ToolCall, Usage

BASE: dict[str, Any] = {"model": "gpt-oss-20b", "max_tokens": 64}


def chat(**body: Any) -> dict[str, Any]:
    return to_chat({**BASE, **body})


def test_a_tool_loop_conversation_translates_turn_by_turn() -> None:
    out = chat(system=[{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
               messages=[
                   {"role": "user", "content": "Weather in Paris?"},
                   {"role": "assistant", "content": [
                       {"type": "thinking", "thinking": "Use the tool.", "signature": "sig"},
                       {"type": "redacted_thinking", "data": "opaque"},
                       {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                        "input": {"city": "Paris"}}]},
                   {"role": "user", "content": [
                       {"type": "tool_result", "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "no such city"}],
                        "is_error": True},
                       {"type": "text", "text": "Try again."}]}])
    assert out["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "reasoning": "Use the tool.",
         "tool_calls": [{"id": "toolu_1", "type": "function", "function": {
             "name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: no such city"},
        {"role": "user", "content": "Try again."},
    ]


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
])
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    out = chat(messages=[{"role": "user", "content": "x"}], tool_choice=choice,
               tools=[{"name": "f", "input_schema": {"type": "object"}}])
    assert out["tool_choice"] == expected
    assert out["tools"] == [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(("thinking", "effort"), [
    ({"type": "enabled", "budget_tokens": 1024}, "low"),
    ({"type": "enabled", "budget_tokens": 4096}, "medium"),
    ({"type": "enabled", "budget_tokens": 16383}, "medium"),
    ({"type": "enabled", "budget_tokens": 16384}, "high"),
    ({"type": "disabled"}, "low"), ({"type": "adaptive"}, "medium"), (None, None),
])
def test_thinking_budget_maps_to_reasoning_effort(thinking: Any, effort: str | None) -> None:
    assert effort_for(thinking) == effort


def test_scalars_metadata_and_output_config() -> None:
    out = chat(messages=[{"role": "user", "content": "x"}], stop_sequences=["END"],
               temperature=0.5, top_p=0.9, top_k=40, stream=True,
               metadata={"user_id": "u-1"}, thinking={"type": "disabled"},
               output_config={"effort": "max", "format": {"type": "json_schema",
                                                          "schema": {"type": "object"}}})
    assert out["stop"] == ["END"] and out["temperature"] == 0.5 and out["top_p"] == 0.9
    assert out["user"] == "u-1" and out["metadata"] == {"user_id": "u-1"}
    assert out["reasoning_effort"] == "high"  # output_config.effort wins over thinking
    assert out["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert out["stream"] is True and out["include_usage"] is True


@pytest.mark.parametrize(("body", "param"), [
    ({"max_tokens": None, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "document"}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "a",
                                                  "name": "f", "input": {}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [
        {"type": "bash_20250124", "name": "bash"}]}, "tools[0].type"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"name": "f"}]},
     "tools[0].input_schema"),
    ({"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "maybe"}},
     "tool_choice.type"),
    ({"messages": [{"role": "user", "content": "x"}],
      "thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
    ({"messages": []}, "messages"),
])
def test_refusals_name_the_anthropic_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        to_chat({**BASE, **body})
    assert info.value.param == param


def test_count_tokens_needs_no_max_tokens_and_decode_validates() -> None:
    raw = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert decode(raw, BodyLimits(), count_only=True).messages[0].content == "hi"
    with pytest.raises(InvalidRequest):
        decode(raw, BodyLimits())
    many = orjson.dumps({**BASE, "messages": [{"role": "user", "content": "x"}],
                         "stop_sequences": ["a", "b", "c", "d", "e"]})
    with pytest.raises(InvalidRequest, match="stop"):
        decode(many, BodyLimits())


def test_message_body_blocks_and_stop_reasons() -> None:
    call = ToolCall(id="call_9", function=FunctionCall(name="f", arguments='{"a": 1}'))
    result = ChatResult(content="Hi", reasoning="Think.", tool_calls=[call],
                        finish_reason="tool_calls", usage=Usage(5, 7, 3))
    body = orjson.loads(message_body(result, message_id="msg_1", model="gpt-oss-20b"))
    assert body["content"] == [
        {"type": "thinking", "thinking": "Think.", "signature": ""},
        {"type": "text", "text": "Hi"},
        {"type": "tool_use", "id": "toolu_call_9", "name": "f", "input": {"a": 1}}]
    assert body["stop_reason"] == "tool_use" and body["stop_sequence"] is None
    assert body["usage"] == {"input_tokens": 5, "output_tokens": 7,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                             "output_tokens_details": {"thinking_tokens": 3}}
    length = orjson.loads(message_body(ChatResult(content="x", finish_reason="length"),
                                       message_id="m", model="m"))
    assert length["stop_reason"] == "max_tokens"


def test_tool_ids_are_stable_toolu_ids() -> None:
    assert tool_use_id("toolu_abc") == "toolu_abc"
    assert tool_use_id("call_1") == "toolu_call_1"
    odd = tool_use_id("call/with spaces" + "x" * 80)
    assert odd.startswith("toolu_") and odd == tool_use_id("call/with spaces" + "x" * 80)
    assert len(odd) <= 64


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for chunk in raw.decode().strip().split("\n\n"):
        name, data = chunk.split("\n")
        out.append((name.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return out


def test_event_sequence_with_indices() -> None:
    enc = EventEncoder(message_id="msg_1", model="gpt-oss-20b", input_tokens=11)
    call = ToolCall(id="call_1", function=FunctionCall(name="f", arguments='{"a":1}'))
    raw = b"".join(enc.encode(e) for e in [
        StreamEvent(reasoning="Th"), StreamEvent(reasoning="ink"), StreamEvent(content="Hi"),
        StreamEvent(tool_calls=[call]),
        StreamEvent(finish_reason="stop", usage=Usage(12, 9))])
    events = _events(raw)
    assert [n for n, _ in events] == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["usage"]["input_tokens"] == 11
    assert [d.get("index") for _, d in events[2:12]] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert events[3][1]["delta"] == {"type": "thinking_delta", "thinking": "Th"}
    assert events[7][1]["delta"] == {"type": "text_delta", "text": "Hi"}
    assert events[9][1]["content_block"] == {"type": "tool_use", "id": "toolu_call_1",
                                             "name": "f", "input": {}}
    assert events[10][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"a":1}'}
    delta = events[12][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 9 and delta["usage"]["input_tokens"] == 12


def test_a_broken_stream_ends_with_an_error_event() -> None:
    [(name, data)] = _events(stream_error("cut", "req_1"))
    assert name == "error"
    assert data == {"type": "error", "error": {"type": "api_error", "message": "cut"},
                    "request_id": "req_1"}


@pytest.mark.parametrize(("exc", "status", "kind"), [
    (InvalidRequest("x"), 400, "invalid_request_error"),
    (Unauthorized("x"), 401, "authentication_error"),
    (PayloadTooLarge("x"), 413, "request_too_large"),
    (NoLocalCapacity("x"), 503, "overloaded_error"),
    (DeadlineExceeded("x"), 504, "timeout_error"),
])
def test_errors_in_anthropics_shape(exc: Any, status: int, kind: str) -> None:
    got_status, body = error_status_and_body(exc, "req_1")
    assert got_status == status
    assert orjson.loads(body) == {"type": "error", "error": {"type": kind, "message": "x"},
                                  "request_id": "req_1"}
