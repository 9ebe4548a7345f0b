"""Closing a stream session gives its local slot back even when closing the upstream is
cancelled (a client hangs up while a blocking SDK stream closes on its worker thread)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from router.state.memory import MemoryStore
from router.stream_session import StreamSession
from router.types import StreamEvent


class CancelledOnClose:
    """An upstream stream whose close is cancelled part-way."""

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self

    async def __anext__(self) -> StreamEvent:
        raise StopAsyncIteration

    async def aclose(self) -> None:
        raise asyncio.CancelledError


async def test_the_slot_is_released_when_closing_the_upstream_is_cancelled() -> None:
    store = MemoryStore()
    lease = await store.acquire_slot("local|m", 1, 0.0)
    assert lease is not None

    async def release(lease: Any) -> None:
        await asyncio.shield(store.release_slot(lease))

    executor = SimpleNamespace(_release=release, clock=lambda: 0.0)
    ctx = SimpleNamespace(admitted_at=0.0, started=0.0)
    session = StreamSession(executor, ctx, SimpleNamespace(backend="local"),  # type: ignore[arg-type]
                            CancelledOnClose(), StreamEvent(content="x"), lease)
    with pytest.raises(asyncio.CancelledError):
        await session.aclose()
    # The one slot is free again: a second request gets it at once.
    again = await store.acquire_slot("local|m", 1, 0.0)
    assert again is not None
