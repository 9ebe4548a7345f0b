"""The Responses API codec: request fields and input items in, Chat Completions messages out;
output items and the SSE event sequence (numbering, item ids, the failed ending)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from router.api.responses_events import ResponseEvents
from router.api.responses_objects import output_items, status_for
from router.api.responses_wire import chat_body, parse_request, responses_param, to_messages
from router.errors import InvalidRequest
from router.types import ChatRequest, ChatResult, FunctionCall, StreamEvent, ToolCall, Usage

TOOL = {"type": "function", "name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True}


def _chat(body: dict[str, Any]) -> ChatRequest:
    parsed = parse_request(body)
    return ChatRequest.model_validate(chat_body(parsed, to_messages(parsed.items,
                                                                    parsed.instructions)))


def test_string_input_and_options_become_a_chat_request() -> None:
    req = _chat({"model": "gpt-oss:20b", "input": "Hi", "instructions": "Be brief",
                 "max_output_tokens": 50, "temperature": 0.5, "top_p": 0.9,
                 "reasoning": {"effort": "high", "summary": "auto"}, "tools": [TOOL],
                 "tool_choice": {"type": "function", "name": "get_weather"},
                 "parallel_tool_calls": False, "metadata": {"privacy": "private"},
                 "text": {"format": {"type": "json_schema", "name": "w", "strict": True,
                                     "schema": {"type": "object"}}}})
    assert [(m.role, m.content) for m in req.messages] == [("system", "Be brief"),
                                                           ("user", "Hi")]
    assert req.max_tokens == 50 and req.reasoning_effort == "high"
    assert req.tools is not None and req.tools[0].function.name == "get_weather"
    assert req.tools[0].function.strict is True
    assert req.tool_choice == {"type": "function", "function": {"name": "get_weather"}}
    assert req.response_format == {"type": "json_schema", "json_schema": {
        "name": "w", "schema": {"type": "object"}, "strict": True}}
    assert req.metadata == {"privacy": "private"} and req.parallel_tool_calls is False


def test_tool_loop_items_keep_reasoning_on_the_assistant_turn() -> None:
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Tokyo?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [],
         "content": [{"type": "reasoning_text", "text": "Need the tool."}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city":"Tokyo"}', "status": "completed"},
        {"type": "function_call", "call_id": "call_2", "name": "get_weather",
         "arguments": {"city": "Kyoto"}},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "rain"}]},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Summarise."}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Sunny and rain.", "annotations": []}]},
        {"role": "user", "content": "Thanks"},
    ]
    req = _chat({"model": "m", "input": items})
    m = req.messages
    assert [x.role for x in m] == ["user", "assistant", "tool", "tool", "assistant", "user"]
    assert m[1].reasoning == "Need the tool." and m[1].content is None
    assert m[1].tool_calls is not None
    assert [(c.id, c.function.arguments) for c in m[1].tool_calls] == [
        ("call_1", '{"city":"Tokyo"}'), ("call_2", '{"city":"Kyoto"}')]
    assert (m[2].tool_call_id, m[2].content) == ("call_1", "sunny")
    assert m[3].content == "rain"
    assert (m[4].content, m[4].reasoning) == ("Sunny and rain.", "Summarise.")


def test_input_items_are_stored_with_ids_and_text_parts() -> None:
    parsed = parse_request({"model": "m", "input": [
        {"role": "user", "content": "a"},
        {"type": "function_call_output", "call_id": "c", "output": "o"}]})
    user, out = parsed.items
    assert user["id"].startswith("msg_") and user["content"] == [
        {"type": "input_text", "text": "a"}]
    assert out["id"].startswith("fco_") and out["output"] == "o"
    assert parsed.store is True and parsed.stream is False


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "file_search", "vector_store_ids": []}]}, "tools[0].type"),
    ({"background": True}, "background"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"include": ["file_search_call.results"]}, "include"),
    ({"truncation": "auto"}, "truncation"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"input": [{"type": "input_image", "image_url": "x"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
])
def test_unsupported_features_are_a_400_naming_them(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_request({"model": "m", "input": "hi", **body})
    assert err.value.status == 400 and err.value.param == param
    assert param.split("[")[0].split(".")[0] in err.value.message or "type" in param


def test_validation_params_are_named_as_the_responses_api_names_them() -> None:
    assert responses_param("max_tokens") == "max_output_tokens"
    assert responses_param("messages[2].content") == "input[2].content"
    assert responses_param("tools[0].function.name") == "tools[0].name"
    assert responses_param("temperature") == "temperature"


def _call(i: int) -> ToolCall:
    return ToolCall(id=f"call_{i}", function=FunctionCall(name="get_weather",
                                                          arguments='{"city":"Oslo"}'))


def test_output_items_in_order() -> None:
    items = output_items(ChatResult(content=None, reasoning="think", tool_calls=[_call(1)],
                                    finish_reason="tool_calls"))
    assert [i["type"] for i in items] == ["reasoning", "function_call"]
    assert items[0]["content"] == [{"type": "reasoning_text", "text": "think"}]
    assert items[1]["call_id"] == "call_1" and items[1]["arguments"] == '{"city":"Oslo"}'
    text = output_items(ChatResult(content="hi", finish_reason="length"))
    assert [i["type"] for i in text] == ["message"] and text[0]["status"] == "incomplete"
    assert status_for("length")[1] == {"reason": "max_output_tokens"}


def _events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        head, data = block.split("\n", 1)
        ev = orjson.loads(data.removeprefix("data: "))
        assert head == "event: " + ev["type"]
        out.append(ev)
    return out


def _encoder() -> ResponseEvents:
    return ResponseEvents(response_id="resp_1", created_at=1, model="gpt-oss-20b", echo={},
                          instructions=None, previous_response_id=None, store=True)


def test_stream_event_sequence_is_numbered_and_complete() -> None:
    enc = _encoder()
    raw = enc.start() + b"".join(enc.encode(e) for e in [
        StreamEvent(reasoning="a"), StreamEvent(reasoning="b"), StreamEvent(content="Hi"),
        StreamEvent(content="!"), StreamEvent(tool_calls=[_call(1)]),
        StreamEvent(finish_reason="stop", usage=Usage(5, 7, 2))])
    events = _events(raw)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.reasoning_text.delta", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    by_type = {e["type"]: e for e in events}
    assert by_type["response.output_text.done"]["text"] == "Hi!"
    assert by_type["response.reasoning_text.done"]["text"] == "ab"
    assert by_type["response.output_text.delta"]["output_index"] == 1
    assert by_type["response.function_call_arguments.done"]["output_index"] == 2
    final = by_type["response.completed"]["response"]
    assert final["status"] == "completed" and final["usage"]["output_tokens"] == 7
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] == 2
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][1]["id"] == by_type["response.output_text.delta"]["item_id"]
    assert enc.final == final


def test_a_length_finish_is_incomplete() -> None:
    enc = _encoder()
    events = _events(enc.start() + enc.encode(StreamEvent(content="x"))
                     + enc.encode(StreamEvent(finish_reason="length")))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_broken_stream_ends_failed_never_completed() -> None:
    enc = _encoder()
    raw = enc.start() + enc.encode(StreamEvent(content="partial")) + enc.fail(
        "upstream_cut", "broke")
    events = _events(raw)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.failed"
    resp = events[-1]["response"]
    assert resp["status"] == "failed" and resp["error"] == {"code": "upstream_cut",
                                                            "message": "broke"}
    assert resp["output"][0]["status"] == "incomplete"
    assert not any(e["type"] == "response.completed" for e in events)
