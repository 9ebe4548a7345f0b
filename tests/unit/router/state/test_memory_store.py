"""The in-memory capacity ledger: never above the slots, FIFO, zero held after cancellations."""

from __future__ import annotations

import asyncio
import random

from router.state.memory import MemoryStore


async def test_fifo_and_bound() -> None:
    store = MemoryStore()
    first = await store.acquire_slot("k", 1, 0)
    assert first is not None
    order: list[int] = []

    async def waiter(i: int) -> None:
        lease = await store.acquire_slot("k", 1, 10)
        assert lease is not None
        order.append(i)
        await store.release_slot(lease)

    tasks = [asyncio.create_task(waiter(i)) for i in range(5)]
    await asyncio.sleep(0)
    snap = await store.snapshot(["k"], [])
    assert snap.slots["k"].in_flight == 1 and snap.slots["k"].queued == 5
    await store.release_slot(first)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert store.held() == 0


async def test_timeout_returns_none_and_leaves_queue() -> None:
    store = MemoryStore()
    lease = await store.acquire_slot("k", 1, 0)
    assert await store.acquire_slot("k", 1, 0.01) is None
    assert (await store.snapshot(["k"], [])).slots["k"].queued == 0
    await store.release_slot(lease)  # type: ignore[arg-type]
    await store.release_slot(lease)  # type: ignore[arg-type]  # idempotent
    assert store.held() == 0


async def test_random_cancellations_end_with_zero_held() -> None:
    store = MemoryStore()
    rng = random.Random(7)
    peak = 0

    async def worker() -> None:
        nonlocal peak
        lease = await store.acquire_slot("k", 3, 5)
        if lease is None:
            return
        try:
            peak = max(peak, store.held())
            await asyncio.sleep(rng.random() / 1000)
        finally:
            await store.release_slot(lease)

    tasks = [asyncio.create_task(worker()) for _ in range(200)]
    for _ in range(60):
        await asyncio.sleep(0)
        rng.choice(tasks).cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert store.held() == 0 and peak <= 3
    assert (await store.snapshot(["k"], [])).slots["k"].queued == 0


async def test_service_time_ewma_and_spend() -> None:
    store = MemoryStore(day=lambda: "2026-11-28")
    await store.record_service_time("k", 1.0)
    await store.record_service_time("k", 2.0)
    snap = await store.snapshot(["k"], [], ["backend:bedrock"])
    assert snap.slots["k"].service_time_s == 1.2
    assert await store.add_spend("backend:bedrock", 0.5) == 0.5
    assert await store.add_spend("backend:bedrock", 0.25) == 0.75
