"""Private first and early spill in the capacity ledger: the pure queue rule, the memory store
(injected clock) and the Redis store across two replicas; a property test that no more than
`slots` are held and that every standard waiter gets a slot or spills (no starvation)."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from router.state.base import SPILLED, Lease, Priority, SlotRequest
from router.state.memory import MemoryStore
from router.state.queue_model import QueuedEntry, spill_tokens
from router.state.redis_store import RedisStore

REDIS_URL = os.environ.get("HR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PRIVATE = SlotRequest(Priority.PRIVATE, 1.0, spillable=False)


def std(pred: float = 1.0) -> SlotRequest:
    return SlotRequest(Priority.STANDARD, pred, spillable=True)


class Clock:
    def __init__(self, t: float = 1_767_225_600.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# ---- the pure rule ---------------------------------------------------------------------------

def test_rule_spills_only_late_spillable_waiters() -> None:
    # One slot busy until t=3 (started at 0, predicted 3); waiters predicted 2 s each.
    queue = [QueuedEntry("p", 2.0, 0.5, False), QueuedEntry("a", 2.0, 4.0, True),
             QueuedEntry("b", 2.0, 4.0, True), QueuedEntry("c", 2.0, 9.0, True)]
    # p starts at 3 (late but private: stays), a at 5 > 4: spills, b then starts at 5 > 4:
    # spills, c starts at 5 <= 9: stays.
    assert spill_tokens(0.0, 1, [(0.0, 3.0)], queue, 2.0) == ["a", "b"]


def test_rule_overrunning_holder_still_counts_part_of_its_prediction() -> None:
    queue = [QueuedEntry("a", 1.0, 10.4, True)]
    # Started at 0, predicted 1, now 10: it frees at 10 + 0.2 (not "already free").
    assert spill_tokens(10.0, 1, [(0.0, 1.0)], queue, 2.0) == []
    assert spill_tokens(10.0, 1, [(0.0, 1.0)], [QueuedEntry("a", 1.0, 10.1, True)], 2.0) == ["a"]


def test_rule_free_slots_and_unknown_predictions() -> None:
    queue = [QueuedEntry("a", None, 0.0, True), QueuedEntry("b", 1.0, 0.0, True)]
    # A waiter without a prediction is never spilled; it takes default_s of the one free slot.
    assert spill_tokens(0.0, 1, [], queue, 2.0) == ["b"]
    assert spill_tokens(0.0, 2, [], queue, 2.0) == []


# ---- memory store ------------------------------------------------------------------------------

async def test_memory_private_goes_ahead_of_standard_waiters() -> None:
    store = MemoryStore(clock=Clock())
    holder = await store.acquire_slot("k", 1, 0)
    assert isinstance(holder, Lease)
    order: list[str] = []

    async def waiter(name: str, req: SlotRequest) -> None:
        lease = await store.acquire_slot("k", 1, 100, req)
        assert isinstance(lease, Lease)
        order.append(name)
        await store.release_slot(lease)

    tasks = [asyncio.create_task(waiter("s1", SlotRequest())),
             asyncio.create_task(waiter("s2", SlotRequest()))]
    await settle()
    tasks.append(asyncio.create_task(waiter("p1", PRIVATE)))
    await settle()
    snap = (await store.snapshot(["k"], [])).slots["k"]
    assert [p for p, _ in snap.waiting] == [0, 1, 1]
    await store.release_slot(holder)
    await asyncio.gather(*tasks)
    assert order == ["p1", "s1", "s2"]
    assert store.held() == 0


async def test_memory_private_arrival_spills_a_standard_waiter_that_cannot_make_it() -> None:
    clock = Clock(0.0)
    store = MemoryStore(clock=clock)
    holder = await store.acquire_slot("k", 1, 0, SlotRequest(predicted_s=1.0))
    assert isinstance(holder, Lease)
    standard = asyncio.create_task(store.acquire_slot("k", 1, 1.5, std(1.0)))
    await settle()
    assert not standard.done()  # starts at 1.0 <= 1.5: stays
    private = asyncio.create_task(store.acquire_slot("k", 1, 5, PRIVATE))
    await settle()
    assert standard.done() and standard.result() is SPILLED  # now it would start at 2.0
    await store.release_slot(holder)
    got = await private
    assert isinstance(got, Lease)
    await store.release_slot(got)
    assert store.held() == 0


async def test_memory_arrival_spills_a_newcomer_that_cannot_make_it() -> None:
    store = MemoryStore(clock=Clock(0.0))
    a = await store.acquire_slot("k", 2, 0, SlotRequest(predicted_s=1.0))
    b = await store.acquire_slot("k", 2, 0, SlotRequest(predicted_s=1.0))
    assert isinstance(a, Lease) and isinstance(b, Lease)
    first = asyncio.create_task(store.acquire_slot("k", 2, 30, std(10.0)))
    second = asyncio.create_task(store.acquire_slot("k", 2, 30, std(10.0)))
    third = asyncio.create_task(store.acquire_slot("k", 2, 10.5, std(1.0)))
    await settle()
    # first and second start at 1.0 on the two slots; third would start at 11.0 > 10.5.
    assert third.done() and third.result() is SPILLED
    assert not first.done() and not second.done()
    for lease in (a, b):
        await store.release_slot(lease)
    for t in (first, second):
        got = await t
        assert isinstance(got, Lease)
        await store.release_slot(got)
    assert store.held() == 0


async def test_memory_release_reevaluation_spills_when_the_head_takes_longer() -> None:
    clock = Clock(0.0)
    store = MemoryStore(clock=clock)
    holder = await store.acquire_slot("k", 1, 0, SlotRequest(predicted_s=1.0))
    assert isinstance(holder, Lease)
    w1 = asyncio.create_task(store.acquire_slot("k", 1, 100, std(1.0)))
    w2 = asyncio.create_task(store.acquire_slot("k", 1, 2.5, std(1.0)))
    await settle()
    assert not w2.done()  # predicted start 2.0 <= 2.5
    clock.t = 2.0  # the holder overran: w1 starts now and ends at 3.0, after w2's bound
    await store.release_slot(holder)
    await settle()
    assert w2.done() and w2.result() is SPILLED
    got = w1.result()
    assert isinstance(got, Lease)
    await store.release_slot(got)
    assert store.held() == 0


@pytest.mark.parametrize("seed", range(20))
async def test_property_never_above_slots_and_no_standard_starves(seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock(0.0)
    store = MemoryStore(clock=clock)
    slots = rng.randint(1, 4)
    held: list[Lease] = []
    results: dict[int, Any] = {}
    tasks: list[asyncio.Task[None]] = []

    async def request(i: int, req: SlotRequest) -> None:
        got = await store.acquire_slot("k", slots, 1000, req)
        results[i] = got
        if isinstance(got, Lease):
            held.append(got)

    for i in range(60):
        private = rng.random() < 0.3
        pred = rng.choice([None, 0.5, 1.0, 3.0])
        req = PRIVATE if private else SlotRequest(Priority.STANDARD, pred,
                                                  spillable=rng.random() < 0.8)
        tasks.append(asyncio.create_task(request(i, req)))
        await settle()
        assert store.held() <= slots
        if held and rng.random() < 0.6:
            clock.t += rng.random()
            await store.release_slot(held.pop(rng.randrange(len(held))))
            await settle()
        assert store.held() <= slots
    while not all(t.done() for t in tasks):  # drain: every waiter ends
        assert held, "waiters left but nobody holds a slot: starvation"
        clock.t += 1.0
        await store.release_slot(held.pop(0))
        await settle()
        assert store.held() <= slots
    assert all(isinstance(r, Lease) or r is SPILLED for r in results.values())
    for lease in held:
        await store.release_slot(lease)
    assert store.held() == 0


# ---- Redis store, two replicas ----------------------------------------------------------------

pytest_redis = pytest.mark.redis


@pytest.fixture
async def pair(prefix: str) -> AsyncIterator[Callable[[], RedisStore]]:
    stores: list[RedisStore] = []

    def factory() -> RedisStore:
        s = RedisStore(REDIS_URL, prefix=prefix, op_timeout_s=2.0, poll_s=(0.005, 0.01))
        stores.append(s)
        return s

    yield factory
    for s in stores:
        await s.aclose()


@pytest_redis
async def test_redis_private_first_across_replicas(pair: Callable[[], RedisStore]) -> None:
    a, b = pair(), pair()
    holder = await a.acquire_slot("k", 1, 0)
    assert isinstance(holder, Lease)
    order: list[str] = []

    async def waiter(store: RedisStore, name: str, req: SlotRequest) -> None:
        lease = await store.acquire_slot("k", 1, 20, req)
        assert isinstance(lease, Lease)
        order.append(name)
        await store.release_slot(lease)

    s1 = asyncio.create_task(waiter(a, "s1", SlotRequest()))
    await asyncio.sleep(0.05)
    p1 = asyncio.create_task(waiter(b, "p1", PRIVATE))
    await asyncio.sleep(0.05)
    snap = (await a.snapshot(["k"], [])).slots["k"]
    assert [p for p, _ in snap.waiting] == [0, 1]
    await a.release_slot(holder)
    await asyncio.gather(s1, p1)
    assert order == ["p1", "s1"]


@pytest_redis
async def test_redis_private_arrival_spills_standard_on_another_replica(
        pair: Callable[[], RedisStore]) -> None:
    a, b = pair(), pair()
    holder = await a.acquire_slot("k", 1, 0, SlotRequest(predicted_s=5.0))
    assert isinstance(holder, Lease)
    standard = asyncio.create_task(a.acquire_slot("k", 1, 8.0, std(5.0)))
    await asyncio.sleep(0.05)
    assert not standard.done()
    # The private one goes ahead: the standard one would now start at 9 > 8.
    private = asyncio.create_task(b.acquire_slot("k", 1, 20, SlotRequest(Priority.PRIVATE, 4.0)))
    async with asyncio.timeout(3):
        assert await standard is SPILLED
    await a.release_slot(holder)
    got = await private
    assert isinstance(got, Lease)
    snap = (await b.snapshot(["k"], [])).slots["k"]
    assert snap.in_flight == 1 and snap.queued == 0 and snap.running[0][1] == 4.0
    await b.release_slot(got)


@pytest_redis
async def test_redis_release_records_samples(pair: Callable[[], RedisStore]) -> None:
    a = pair()
    lease = await a.acquire_slot("k", 1, 0)
    assert isinstance(lease, Lease)
    lease.service_time_s, lease.prompt_tokens, lease.output_tokens = 1.5, 100, 40
    await a.release_slot(lease)
    snap = (await a.snapshot(["k"], [])).slots["k"]
    assert snap.samples[0].service_s == 1.5 and snap.samples[0].output_tokens == 40
    assert snap.samples[0].first_token_s is None and snap.service_time_s == 1.5
