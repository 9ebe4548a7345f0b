"""`Burst` and the stream bodies that use it besides OpenAI chat (Responses, Anthropic Messages,
Ollama NDJSON): events decoded together (`ready_next`) leave in one body message, in order and
byte for byte what they would be one by one; an unmarked event sends what was held at once; a
break sends what was held, then the error, in one message."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from router.api.anthropic_routes import MessagesRoutes
from router.api.anthropic_wire import EventEncoder
from router.api.ollama_encode import Encoder
from router.api.ollama_routes import OllamaRoutes
from router.api.responses_routes import ResponsesRoutes, _Turn
from router.api.responses_wire import ParsedRequest
from router.api.streaming import Burst
from router.errors import BackendStreamError
from router.types import ChatRequest, Message, Usage
from tests.unit.router.api.stream_fakes import FakeOpened, ev

FINISH: dict[str, Any] = {"finish_reason": "stop", "usage": Usage(1, 3)}


def burst_and_alone() -> tuple[FakeOpened, FakeOpened]:
    return (FakeOpened([ev("a", True), ev("b", True), ev("c"), ev(None, **FINISH)]),
            FakeOpened([ev("a"), ev("b"), ev("c"), ev(None, **FINISH)]))


def broken() -> FakeOpened:
    return FakeOpened([ev("a"), ev("b", True), ev("c", True)],
                      BackendStreamError("cut", backend="local"))


# -- Burst ----------------------------------------------------------------------------------

def test_burst_holds_marked_bytes_until_an_unmarked_event() -> None:
    b = Burst()
    assert b.add(b"1", True) is None and b.add(b"", True) is None
    assert b.add(b"2", True) is None
    assert b.add(b"3", False) == b"123"
    assert b.add(b"4", False) == b"4" and b.flush() == b""
    assert b.add(b"", False) == b""  # nothing held: what the event encodes to, even nothing
    assert b.add(b"5", True) is None and b.add(b"", False) == b"5"
    assert b.add(b"6", True) is None and b.flush() == b"6" and b.flush() == b""


# -- Anthropic Messages ---------------------------------------------------------------------

async def anthropic(opened: FakeOpened) -> list[bytes]:
    routes = MessagesRoutes.__new__(MessagesRoutes)
    enc = EventEncoder(message_id="msg_1", model="m", input_tokens=5)
    return [c async for c in routes._sse(opened, enc)]  # type: ignore[arg-type]


async def test_anthropic_burst_is_one_message_with_the_same_bytes() -> None:
    batched, alone = burst_and_alone()
    got, one_by_one = await anthropic(batched), await anthropic(alone)
    assert len(got) == 2 and len(one_by_one) == 4
    assert b"".join(got) == b"".join(one_by_one)
    assert got[0].count(b"event: content_block_delta") == 3
    assert got[1].endswith(b'data: {"type":"message_stop"}\n\n')
    assert batched.closed


async def test_anthropic_break_sends_the_held_events_then_the_error() -> None:
    got = await anthropic(broken())
    assert len(got) == 2
    assert b'"text":"a"' in got[0] and b"error" not in got[0]
    assert got[1].index(b'"text":"b"') < got[1].index(b'"text":"c"') < got[1].index(
        b"event: error")
    assert b"message_stop" not in got[1]


# -- Ollama NDJSON --------------------------------------------------------------------------

async def ollama(opened: FakeOpened) -> list[bytes]:
    routes = OllamaRoutes.__new__(OllamaRoutes)
    enc = Encoder("m", chat=True, show_thinking=False)
    return [c async for c in routes._ndjson(opened, enc)]  # type: ignore[arg-type]


def ollama_lines(chunks: list[bytes]) -> list[dict[str, Any]]:
    """The NDJSON objects without their clock (created_at, *_duration)."""
    out = []
    for line in b"".join(chunks).splitlines():
        obj = orjson.loads(line)
        out.append({k: v for k, v in obj.items()
                    if k != "created_at" and not k.endswith("_duration")})
    return out


async def test_ollama_burst_is_one_message_with_the_same_lines() -> None:
    batched, alone = burst_and_alone()
    got, one_by_one = await ollama(batched), await ollama(alone)
    assert len(got) == 2 and len(one_by_one) == 4
    assert all(c.endswith(b"\n") for c in got)
    assert ollama_lines(got) == ollama_lines(one_by_one)
    assert [x["message"]["content"] for x in ollama_lines(got)] == ["a", "b", "c", ""]
    assert batched.closed


async def test_ollama_held_lines_leave_with_an_event_that_encodes_to_nothing() -> None:
    opened = FakeOpened([ev("a", True), ev(None), ev("b")])  # the second has no line
    got = await ollama(opened)
    assert [[x["message"]["content"] for x in ollama_lines([c])] for c in got] == [["a"], ["b"]]


async def test_ollama_break_sends_the_held_lines_then_the_error() -> None:
    got = await ollama(broken())
    assert len(got) == 2
    lines = [orjson.loads(x) for x in got[1].splitlines()]
    assert [x.get("message", {}).get("content") for x in lines[:2]] == ["b", "c"]
    assert set(lines[2]) == {"error"} and len(lines) == 3


# -- Responses ------------------------------------------------------------------------------

def _turn() -> _Turn:
    parsed = ParsedRequest(model="m", items=[], stream=True)
    request = ChatRequest(model="m", messages=[Message(role="user", content="hi")])
    return _Turn(parsed, request, None, [])  # type: ignore[arg-type]


async def responses(opened: FakeOpened, kept: list[int] | None = None) -> list[bytes]:
    routes = ResponsesRoutes.__new__(ResponsesRoutes)
    out: list[bytes] = []

    async def keep(turn: _Turn, body: dict[str, Any], privacy: str) -> None:
        if kept is not None:
            kept.append(len(out))  # how many messages had gone out when it was stored

    routes._keep = keep  # type: ignore[method-assign]
    async for c in routes._sse(_turn(), opened):  # type: ignore[arg-type]
        out.append(c)
    return out


def without_ids(chunks: list[bytes]) -> bytes:
    return re.sub(rb'"(resp|msg|rs)_[0-9a-f]+"|"(created|completed)_at":\d+', b"",
                  b"".join(chunks))


async def test_responses_burst_is_one_message_with_the_same_bytes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("router.api.responses_events.time.time", lambda: 1_000_000.0)
    batched, alone = burst_and_alone()
    kept: list[int] = []
    got, one_by_one = await responses(batched, kept), await responses(alone)
    assert len(got) == 3 and len(one_by_one) == 5  # response.created + 2 messages
    assert without_ids(got) == without_ids(one_by_one)
    assert got[1].count(b"event: response.output_text.delta") == 3
    assert b"event: response.completed" in got[2]
    assert kept == [2]  # stored before the message that completes it went out
    assert batched.closed


async def test_responses_break_sends_the_held_events_then_the_failure() -> None:
    got = await responses(broken())
    assert len(got) == 3
    last = got[2]
    assert last.index(b'"delta":"b"') < last.index(b'"delta":"c"') < last.index(
        b"event: response.failed")
