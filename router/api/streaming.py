"""A streaming response that never waits on a stuck client for long.

`TimedStreamingResponse` is Starlette's `StreamingResponse` with three changes:

- every `send` to the client is bounded by `send_timeout_s` (one timer per response,
  `_SendWatch`, re-armed lazily: a send that returns before the timer fires costs no timer of
  its own). A client that stops reading fills the socket buffers and makes `send` block; past
  the timeout the response is abandoned: the body iterator gets `ClientStalled` thrown in (so an
  SSE generator can record the outcome, and its `finally` cancels the upstream stream and
  releases the local slot), and the connection is aborted (its unsent bytes discarded),
  through the `router.connection` scope extension that the server's protocol class provides;
- the client's disconnect is watched (ASGI < 2.4) by one plain task instead of Starlette's
  anyio task group, which cost a cancel scope and its delivery loop per stream;
- the body iterator is always started before anything is sent and always closed at the end,
  so its `finally` runs at once however the response ends (stall, disconnect, cancellation),
  not whenever the garbage collector gets to a suspended generator.

`Burst` is what the stream bodies (OpenAI chat, Responses, Anthropic, Ollama NDJSON) share to
send events that were decoded together (`StreamEvent.ready_next`) in one body message, so the
per-send work (the send timer, the transport write) runs once per burst: the bytes and their
order are those of one message per event, and an event that is not marked goes out at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from router.service.client import CLIENT_CLOSED_STATUS as CLIENT_CLOSED_STATUS
from router.service.client import StreamOutcome as StreamOutcome

__all__ = ["CLIENT_CLOSED_STATUS", "CONNECTION_EXTENSION", "Burst", "ClientStalled",
           "StreamOutcome", "TimedStreamingResponse"]

log = logging.getLogger("router.api")

CONNECTION_EXTENSION = "router.connection"  # scope["extensions"][...] = {"abort": callable}
_OLD_SPECS = frozenset({"2.0", "2.1", "2.2", "2.3"})  # no disconnect as an OSError from send


class ClientStalled(Exception):
    """The client stopped reading: one send blocked for longer than the send timeout."""


class Burst:
    """The encoded events of one stream held until the one that ends their burst.

    `add(data, ready_next)` returns None while the event's successor is already decoded (its
    bytes are held), else the bytes to send now: the held ones, then this event's. `flush()`
    returns (and forgets) what is held, for the end of the stream and for the error event that
    follows the events before it.
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: list[bytes] = []

    def add(self, data: bytes, ready_next: bool) -> bytes | None:
        held = self._held
        if ready_next:
            if data:
                held.append(data)
            return None
        if held:
            held.append(data)
            data = b"".join(held)
            held.clear()
        return data

    def flush(self) -> bytes:
        held = self._held
        if not held:
            return b""
        data = b"".join(held)
        held.clear()
        return data


class _SendWatch:
    """The send timeout of one response: one loop timer, re-armed only when it fires.

    `deadline` is set while a send is in progress (0.0 otherwise). When the timer fires it
    either finds no send in progress (and stops), a send with time left (and re-arms at its
    deadline), or a send past its deadline: then it cancels the sending task, as
    `asyncio.timeout` would, and `fired` tells the sender that the cancellation was ours.
    """

    __slots__ = ("_handle", "_loop", "_task", "base", "deadline", "fired", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._handle: asyncio.TimerHandle | None = None
        self.deadline = 0.0
        self.fired = False
        self.base = 0  # the task's cancel requests before ours

    def start(self) -> None:
        self.deadline = self._loop.time() + self.timeout_s
        if self._handle is None:
            self._handle = self._loop.call_at(self.deadline, self._check)

    def ours(self) -> bool:
        """After a CancelledError in a send: was it this timer's (then withdrawn)?"""
        task = self._task
        return self.fired and task is not None and task.uncancel() <= self.base

    def _check(self) -> None:
        self._handle = None
        deadline = self.deadline
        if not deadline or self.fired:
            return
        if self._loop.time() < deadline:
            self._handle = self._loop.call_at(deadline, self._check)
            return
        task = self._task
        if task is not None and not task.done():
            self.fired = True
            self.base = task.cancelling()
            task.cancel()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class TimedStreamingResponse(StreamingResponse):
    def __init__(self, content: AsyncIterator[bytes], *, send_timeout_s: float,
                 headers: Mapping[str, str] | None = None, media_type: str | None = None,
                 on_stall: Callable[[], None] | None = None) -> None:
        super().__init__(content, headers=headers, media_type=media_type)
        self._chunks = content
        self.send_timeout_s = send_timeout_s
        self.on_stall = on_stall
        self.stalled = False
        self._abort: Callable[[], None] | None = None
        self._watch: _SendWatch | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ext: Any = (scope.get("extensions") or {}).get(CONNECTION_EXTENSION) or {}
        self._abort = ext.get("abort")
        spec = str((scope.get("asgi") or {}).get("spec_version", "2.0"))
        if scope["type"] != "http" or self.background is not None or spec not in _OLD_SPECS:
            await super().__call__(scope, receive, send)
            return
        await self._call_watching_disconnect(receive, send)

    async def _call_watching_disconnect(self, receive: Receive, send: Send) -> None:
        """Starlette's disconnect watch for ASGI < 2.4 (uvicorn's httptools speaks 2.3)
        without its anyio task group: one listener task that cancels this one when the client
        disconnects; that cancellation ends the response quietly, any other propagates."""
        task = asyncio.current_task()
        assert task is not None
        gone: list[int] = []  # the task's cancel requests before the listener's, once it fired

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.append(task.cancelling())
            task.cancel()

        listener = asyncio.get_running_loop().create_task(listen())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not gone or task.uncancel() > gone[0]:
                raise
        finally:
            if listener.done():
                if not listener.cancelled():
                    listener.exception()  # retrieved: a receive that broke ends nothing here
            else:
                listener.cancel()

    async def _send(self, send: Send, message: Message) -> None:
        watch = self._watch
        assert watch is not None
        watch.start()
        try:
            await send(message)
        except asyncio.CancelledError:
            if watch.ours():
                raise ClientStalled from None
            raise
        finally:
            watch.deadline = 0.0

    async def stream_response(self, send: Send) -> None:
        it = self._chunks
        self._watch = _SendWatch(self.send_timeout_s)
        try:
            try:
                first: bytes | None = await anext(it)
            except StopAsyncIteration:
                first = None
            await self._send(send, {"type": "http.response.start", "status": self.status_code,
                                    "headers": self.raw_headers})
            if first is not None:
                await self._send(send, {"type": "http.response.body", "body": first,
                                        "more_body": True})
                async for chunk in it:
                    await self._send(send, {"type": "http.response.body", "body": chunk,
                                            "more_body": True})
            await self._send(send, {"type": "http.response.body", "body": b"",
                                    "more_body": False})
        except ClientStalled:
            await self._abandon()
        finally:
            self._watch.close()
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _abandon(self) -> None:
        self.stalled = True
        log.warning("client stopped reading a stream for %gs: response abandoned",
                    self.send_timeout_s)
        athrow = getattr(self._chunks, "athrow", None)
        if athrow is not None:
            with contextlib.suppress(ClientStalled, StopAsyncIteration):
                await athrow(ClientStalled())
        if self.on_stall is not None:
            self.on_stall()
        if self._abort is not None:
            self._abort()
