"""A streaming response that never waits on a stuck client for long.

`TimedStreamingResponse` is Starlette's `StreamingResponse` with two changes:

- every `send` to the client is bounded by `send_timeout_s`. A client that stops reading fills
  the socket buffers and makes `send` block; past the timeout the response is abandoned: the
  body iterator gets `ClientStalled` thrown in (so an SSE generator can record the outcome, and
  its `finally` cancels the upstream stream and releases the local slot), and the connection is
  aborted (its unsent bytes discarded), through the `router.connection` scope extension that
  the server's protocol class provides;
- the body iterator is always started before anything is sent and always closed at the end,
  so its `finally` runs at once however the response ends (stall, disconnect, cancellation),
  not whenever the garbage collector gets to a suspended generator.
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

__all__ = ["CLIENT_CLOSED_STATUS", "CONNECTION_EXTENSION", "ClientStalled", "StreamOutcome",
           "TimedStreamingResponse"]

log = logging.getLogger("router.api")

CONNECTION_EXTENSION = "router.connection"  # scope["extensions"][...] = {"abort": callable}


class ClientStalled(Exception):
    """The client stopped reading: one send blocked for longer than the send timeout."""


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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ext: Any = (scope.get("extensions") or {}).get(CONNECTION_EXTENSION) or {}
        self._abort = ext.get("abort")
        await super().__call__(scope, receive, send)

    async def _send(self, send: Send, message: Message) -> None:
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await send(message)
        except TimeoutError:
            raise ClientStalled from None

    async def stream_response(self, send: Send) -> None:
        it = self._chunks
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
