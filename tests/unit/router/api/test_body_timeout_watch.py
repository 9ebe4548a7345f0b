"""`BodyTimeout`'s shared timer: a stalled body gets its 408 while another request on the
same app reads its body; a cancellation that is not the timer's stays a cancellation; a new
event loop (one app, several test clients) gets a timer of its own."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from router.api.guards import BodyTimeout


def app_reading_the_body(done: list[bytes]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        done.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})

    return app


def client(parts: list[bytes], then_stall: bool) -> tuple[Any, Any, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []
    queue = list(parts)

    async def receive() -> dict[str, Any]:
        if queue:
            await asyncio.sleep(0)
            part = queue.pop(0)
            return {"type": "http.request", "body": part, "more_body": bool(queue) or then_stall}
        if then_stall:
            await asyncio.Event().wait()
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return receive, send, sent


async def test_a_stalled_body_gets_408_beside_a_request_that_reads_its_own() -> None:
    done: list[bytes] = []
    timed_out: list[bool] = []
    mw = BodyTimeout(app_reading_the_body(done), 0.02, on_timeout=lambda: timed_out.append(True))
    r1, s1, sent1 = client([b"a", b"b"], then_stall=True)
    r2, s2, sent2 = client([b"x", b"y", b"z"], then_stall=False)
    await asyncio.gather(mw({"type": "http"}, r1, s1), mw({"type": "http"}, r2, s2))
    assert done == [b"xyz"] and timed_out == [True]
    assert sent1[0]["status"] == 408
    assert orjson.loads(sent1[1]["body"])["error"]["code"] == "request_timeout"
    assert sent2[0]["status"] == 200
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_another_cancellation_stays_a_cancellation() -> None:
    mw = BodyTimeout(app_reading_the_body([]), 30.0)
    r, s, sent = client([b"a"], then_stall=True)
    task = asyncio.create_task(mw({"type": "http"}, r, s))
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sent == []


def test_each_event_loop_gets_its_own_timer() -> None:
    done: list[bytes] = []
    mw = BodyTimeout(app_reading_the_body(done), 0.02)

    async def one() -> list[dict[str, Any]]:
        r, s, sent = client([b"a"], then_stall=True)
        await mw({"type": "http"}, r, s)
        return sent

    for _ in range(2):
        assert asyncio.run(one())[0]["status"] == 408
    assert done == []
