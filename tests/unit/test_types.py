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
])
def test_invalid_bodies_name_the_param(body: dict[str, object], param: str) -> None:
    with pytest.raises(ValidationError) as info:
        req(**body)
    err = from_validation_error(info.value)
    assert err.status == 400 and err.param == param
