"""The OpenAI SSE body: events decoded together (`ready_next`) leave in one body message, in
order and byte for byte what they would be one by one; a break sends what was held first."""

from __future__ import annotations

import re

from router.api.openai_routes import ChatRoutes
from router.errors import BackendStreamError
from router.types import Usage
from tests.unit.router.api.stream_fakes import FakeOpened, ev


async def body(opened: FakeOpened) -> list[bytes]:
    routes = ChatRoutes.__new__(ChatRoutes)
    return [chunk async for chunk in routes._sse(opened)]  # type: ignore[arg-type]


async def test_ready_events_go_out_with_the_next() -> None:
    finish = {"finish_reason": "stop", "usage": Usage(1, 3)}
    batched = FakeOpened([ev("a", True), ev("b", True), ev("c"), ev(None, **finish)])
    alone = FakeOpened([ev("a"), ev("b"), ev("c"), ev(None, **finish)])
    got, one_by_one = await body(batched), await body(alone)
    assert len(got) == 2 and len(one_by_one) == 4
    assert got[1].endswith(b"data: [DONE]\n\n") and b'"finish_reason":"stop"' in got[1]

    def strip_ids(chunks: list[bytes]) -> bytes:
        return re.sub(rb'"id":"[^"]*","object"(.*?)"created":\d+', b"", b"".join(chunks))

    assert strip_ids(got) == strip_ids(one_by_one)
    assert batched.closed


async def test_a_break_sends_what_was_held_then_the_error() -> None:
    opened = FakeOpened([ev("a", True)], BackendStreamError("cut", backend="local"))
    got = await body(opened)
    assert len(got) == 1
    assert b'"content":"a"' in got[0] and got[0].rstrip().endswith(b"}")
    assert b'"error"' in got[0] and b"[DONE]" not in got[0]
