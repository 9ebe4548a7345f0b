"""`TimedStreamingResponse`'s send timeout (`_SendWatch`): a send that blocks past it abandons
the response (ClientStalled thrown into the body, the connection aborted); sends that return
keep going; a cancellation that is not the timer's passes through as a cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.api.streaming import CONNECTION_EXTENSION, ClientStalled, TimedStreamingResponse


class Body:
    def __init__(self, n: int) -> None:
        self.n = n
        self.stalled = False
        self.closed = False

    async def gen(self) -> AsyncIterator[bytes]:
        try:
            for i in range(self.n):
                yield b"chunk%d" % i
        except ClientStalled:
            self.stalled = True
        finally:
            self.closed = True


def scope(aborted: list[bool]) -> dict[str, Any]:
    return {"type": "http", "asgi": {"spec_version": "2.4"},
            "extensions": {CONNECTION_EXTENSION: {"abort": lambda: aborted.append(True)}}}


async def receive() -> dict[str, Any]:
    await asyncio.Event().wait()
    return {"type": "http.disconnect"}


async def test_sends_that_return_deliver_everything() -> None:
    body, sent, aborted = Body(50), [], []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        await asyncio.sleep(0)

    resp = TimedStreamingResponse(body.gen(), send_timeout_s=0.05)
    await resp(scope(aborted), receive, send)
    assert [m.get("body") for m in sent[1:-1]] == [b"chunk%d" % i for i in range(50)]
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert not resp.stalled and not aborted and body.closed


async def test_a_blocked_send_abandons_the_response() -> None:
    body, aborted, stalls = Body(5), [], []
    calls = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            await asyncio.Event().wait()  # the client stopped reading

    resp = TimedStreamingResponse(body.gen(), send_timeout_s=0.01,
                                  on_stall=lambda: stalls.append(True))
    await resp(scope(aborted), receive, send)
    assert resp.stalled and aborted == [True] and stalls == [True]
    assert body.stalled and body.closed
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_another_cancellation_stays_a_cancellation() -> None:
    body, aborted = Body(5), []
    blocked = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message.get("body") == b"chunk1":
            blocked.set()
            await asyncio.Event().wait()

    resp = TimedStreamingResponse(body.gen(), send_timeout_s=30.0)
    task = asyncio.create_task(resp(scope(aborted), receive, send))
    await blocked.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not resp.stalled and not aborted and body.closed


def old_scope() -> dict[str, Any]:
    return {"type": "http", "asgi": {"spec_version": "2.3"}}


async def test_asgi_2_3_a_disconnect_ends_the_response_quietly() -> None:
    gone = asyncio.Event()
    sent: list[dict[str, Any]] = []
    closed: list[bool] = []

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"x"
                if len(sent) == 5:
                    gone.set()
                await asyncio.sleep(0)
        finally:
            closed.append(True)

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    resp = TimedStreamingResponse(endless(), send_timeout_s=30.0)
    await resp(old_scope(), receive, send)  # returns: no CancelledError escapes
    assert closed == [True] and sent[0]["type"] == "http.response.start"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_asgi_2_3_a_finished_stream_stops_its_listener() -> None:
    body = Body(3)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await TimedStreamingResponse(body.gen(), send_timeout_s=30.0)(old_scope(), receive, send)
    assert [m.get("body") for m in sent[1:]] == [b"chunk0", b"chunk1", b"chunk2", b""]
    await asyncio.sleep(0)  # one loop turn: the cancelled listener finishes
    assert len(asyncio.all_tasks()) == 1  # the listener went with the response
