"""Encoding of results and stream events into OpenAI JSON and SSE."""

from __future__ import annotations

import orjson

from router.api.openai_wire import ChunkEncoder, completion_body
from router.types import ChatResult, FunctionCall, StreamEvent, ToolCall, Usage


def test_completion_body_with_tool_call_and_reasoning() -> None:
    tc = ToolCall(id="call_abcdefgh", function=FunctionCall(name="f", arguments='{"a":1}'))
    body = orjson.loads(completion_body(
        ChatResult(content=None, reasoning="why", tool_calls=[tc], finish_reason="tool_calls",
                   usage=Usage(3, 4)), completion_id="c1", created=1, model="gpt-oss-20b"))
    msg = body["choices"][0]["message"]
    assert msg["content"] is None and msg["reasoning"] == "why"
    assert msg["tool_calls"][0]["function"]["arguments"] == '{"a":1}'
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert body["model"] == "gpt-oss-20b"


def parse(sse: bytes) -> list[object]:
    out: list[object] = []
    for block in sse.split(b"\n\n"):
        if block.startswith(b"data: "):
            payload = block[6:]
            out.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return out


def test_chunks_role_reasoning_content_finish_usage_done() -> None:
    enc = ChunkEncoder(completion_id="c", created=5, model="m", include_usage=True)
    data = enc.encode(StreamEvent(reasoning="r")) + enc.encode(StreamEvent(content="hi"))
    data += enc.encode(StreamEvent(finish_reason="stop", usage=Usage(1, 2)))
    events = parse(data)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # type: ignore[index]
    assert events[1]["choices"][0]["delta"] == {"reasoning": "r"}  # type: ignore[index]
    assert events[2]["choices"][0]["delta"] == {"content": "hi"}  # type: ignore[index]
    assert events[3]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    assert events[4]["choices"] == [] and events[4]["usage"]["total_tokens"] == 3  # type: ignore[index]
    assert events[5] == "[DONE]"


def test_tool_calls_get_indexes_and_finish_reason_tool_calls() -> None:
    enc = ChunkEncoder(completion_id="c", created=5, model="m", include_usage=False)
    tcs = [ToolCall(id=f"call_{i}", function=FunctionCall(name="f", arguments="{}"))
           for i in range(2)]
    data = enc.encode(StreamEvent(tool_calls=tcs)) + enc.encode(StreamEvent(finish_reason="stop"))
    events = parse(data)
    calls = events[1]["choices"][0]["delta"]["tool_calls"]  # type: ignore[index]
    assert [c["index"] for c in calls] == [0, 1]
    assert events[2]["choices"][0]["finish_reason"] == "tool_calls"  # type: ignore[index]
    assert events[-1] == "[DONE]"
