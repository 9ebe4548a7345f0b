"""Test doubles for the streamed bodies: an opened stream that yields given events (then an
optional error), and `ev` for an event with its `ready_next` hint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from router.route_meta import RouteMeta
from router.types import StreamEvent


class FakeOpened:
    def __init__(self, events: list[StreamEvent], error: Exception | None = None) -> None:
        self.events, self.error = events, error
        self.served_model, self.include_usage, self.privacy = "m", False, "normal"
        self.meta = RouteMeta("req-1", backend="local")
        self.closed = False

    async def _gen(self) -> AsyncIterator[StreamEvent]:
        for e in self.events:
            yield e
        if self.error is not None:
            raise self.error

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._gen()

    def client_stalled(self) -> None:
        pass

    async def aclose(self) -> None:
        self.closed = True


def ev(content: str | None = None, ready: bool = False, **kw: Any) -> StreamEvent:
    e = StreamEvent(content=content, **kw)
    e.ready_next = ready
    return e
