"""Normalisation of incoming Chat Completions bodies into `ChatRequest`."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from router.api.error_responses import from_validation_error
from router.types import ChatRequest


def req(**body: object) -> ChatRequest:
    body.setdefault("model", "gpt-oss-20b")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return ChatRequest.model_validate(body)


def test_max_completion_tokens_and_stop_string_and_usage_option() -> None:
    r = req(max_completion_tokens=64, stop="END", stream=True,
            stream_options={"include_usage": True})
    assert r.max_tokens == 64 and r.stop == ["END"] and r.include_usage


def test_reasoning_content_alias_and_content_parts() -> None:
    r = req(messages=[
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None, "reasoning_content": "thought",
         "tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "f", "arguments": {"x": 1}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
    ])
    assert r.messages[0].content == "ab"
    assert r.messages[1].reasoning == "thought"
    assert r.messages[1].tool_calls[0].function.arguments == '{"x":1}'  # type: ignore[index]


def test_reasoning_effort_forms() -> None:
    assert req(reasoning={"effort": "high"}).reasoning_effort == "high"
    assert req(reasoning_effort="minimal").reasoning_effort == "low"


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"n": 3}, "n"),
    ({"top_p": 2}, "top_p"),
    ({"stream": "yes"}, "stream"),
    ({"temperature": True}, "temperature"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"max_completion_tokens": 1.5}, "max_completion_tokens"),
    ({"seed": 2**70}, "seed"),
    ({"response_format": {"type": "json_schema", "json_schema": 5}},
     "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
     "response_format.json_schema.name"),
    ({"response_format": {}}, "response_format.type"),
    ({"tool_choice": {"type": "function", "function": ["x"]}}, "tool_choice.function"),
    ({"tool_choice": 5}, "tool_choice"),
    ({"stop": 5}, "stop"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"messages": [{"role": "tool", "tool_call_id": "", "content": "x"}]},
     "messages[0].tool_call_id"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
])
def test_invalid_bodies_name_the_param(body: dict[str, object], param: str) -> None:
    with pytest.raises(ValidationError) as info:
        req(**body)
    err = from_validation_error(info.value)
    assert err.status == 400 and err.param == param


def test_backends_keep_reading_plain_shapes() -> None:
    r = req(tool_choice={"type": "function", "function": {"name": "f", "extra": 1}},
            response_format={"type": "json_schema", "json_schema": {
                "name": "n", "schema": {"type": "object"}, "strict": True, "junk": 1}},
            stop="END", stream_options={"include_usage": False})
    assert r.tool_choice == {"type": "function", "function": {"name": "f"}}
    assert r.response_format == {"type": "json_schema", "json_schema": {
        "name": "n", "schema": {"type": "object"}, "strict": True}}
    assert r.stop == ["END"] and not r.include_usage
    assert req(tool_choice="auto").tool_choice == "auto"
    assert req(response_format={"type": "json_object"}).response_format == {"type": "json_object"}
    assert req(temperature=1).temperature == 1.0  # an int is fine for a float
    dumped = r.model_dump()
    assert dumped["tool_choice"] == r.tool_choice and dumped["response_format"] == r.response_format
    assert ChatRequest.model_validate(dumped).tool_choice == r.tool_choice
