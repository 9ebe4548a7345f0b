"""A stream's recorded outcome: `ok` once the surface has sent the event that finishes the
answer, even when the client hangs up while the upstream is still being closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

from router.service.streams import OpenedStream, StreamRegistry
from router.types import StreamEvent, Usage


class _SlowCloseSession:
    """A session whose upstream takes a while to close after the final event (Bedrock's
    close is a hop to a worker thread)."""

    def __init__(self) -> None:
        self.closing = asyncio.Event()
        self.closed = asyncio.Event()  # set: the upstream closes at once

    async def events(self) -> AsyncIterator[StreamEvent]:
        try:
            yield StreamEvent(content="Hello")
            yield StreamEvent(finish_reason="stop", usage=Usage(3, 1))
        finally:
            self.closing.set()
            await self.closed.wait()

    async def aclose(self) -> None:
        return None


class _Recorder:
    def __init__(self) -> None:
        self.finished: list[tuple[int, str]] = []

    async def finish(self, prep: Any, *, status: int, outcome: str, **_: Any) -> None:
        self.finished.append((status, outcome))


def _opened(session: _SlowCloseSession, recorder: _Recorder) -> OpenedStream:
    facts = SimpleNamespace(model="gpt-oss-20b", privacy="standard", prompt_tokens=3)
    prep = SimpleNamespace(ctx=SimpleNamespace(facts=facts,
                                               request=SimpleNamespace(include_usage=True)),
                           runtime=SimpleNamespace(leave=lambda: None))
    return OpenedStream(cast(Any, prep), cast(Any, session), cast(Any, SimpleNamespace(
        served_model=None)), cast(Any, recorder), StreamRegistry())


async def test_client_hanging_up_while_the_upstream_closes_is_still_ok() -> None:
    session, recorder = _SlowCloseSession(), _Recorder()
    opened = _opened(session, recorder)

    async def surface() -> None:  # what every surface does: iterate, then aclose
        try:
            async for _event in opened:
                pass
        finally:
            await opened.aclose()

    task = asyncio.create_task(surface())
    await session.closing.wait()
    task.cancel()  # the client hung up after the last event went out
    await asyncio.gather(task, return_exceptions=True)
    assert recorder.finished == [(200, "ok")]


async def test_a_stream_left_before_its_finish_is_client_disconnected() -> None:
    session, recorder = _SlowCloseSession(), _Recorder()
    session.closed.set()
    opened = _opened(session, recorder)
    it = aiter(opened)
    assert (await anext(it)).content == "Hello"
    await opened.aclose()  # the client left after the first event
    assert recorder.finished == [(499, "client_disconnected")]
