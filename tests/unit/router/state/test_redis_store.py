"""RedisStore against a real Redis (127.0.0.1:6379, or HR_TEST_REDIS_URL): the capacity ledger
under concurrency and cancellation, FIFO across replicas, lease expiry, shared breakers, spend,
service times, and the one-round-trip snapshot. Each test uses its own random key prefix."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from router.state.base import BreakerState, Lease, SlotClaim
from router.state.redis_store import RedisStore, redact_url

pytestmark = pytest.mark.redis
REDIS_URL = os.environ.get("HR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

KEY = "ollama-a|gpt-oss:20b"


class Clock:
    def __init__(self, t: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make(prefix: str, clock: Clock) -> AsyncIterator[Callable[..., RedisStore]]:
    stores: list[RedisStore] = []

    def factory(**kw: Any) -> RedisStore:
        kw.setdefault("op_timeout_s", 2.0)  # generous: these tests are not about the bound
        s = RedisStore(REDIS_URL, prefix=prefix, clock=clock, **kw)
        stores.append(s)
        return s

    yield factory
    for s in stores:
        if not s._closed:
            await s.aclose()


def k(prefix: str, key: str, part: str) -> str:
    return f"{prefix}{{{key}}}:{part}"


async def wait_until(pred: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await pred():
            await asyncio.sleep(0.005)


async def test_never_above_slots_under_load_with_cancellations(
    make: Callable[..., RedisStore], raw: Redis, prefix: str
) -> None:
    slots, rng = 5, random.Random(20260101)
    # Two replicas. Correctness under load is the point here, not the per-call bound: give
    # each a pool and a bound that 100 concurrent waiters cannot exhaust on a busy CI machine.
    a, b = make(max_connections=256, op_timeout_s=10.0), make(max_connections=256,
                                                              op_timeout_s=10.0)
    in_use = max_in_use = max_redis = completed = 0
    phase: dict[int, str] = {}
    done = False

    async def worker(i: int) -> None:
        nonlocal in_use, max_in_use, completed
        store = a if i % 2 else b
        phase[i] = "wait"
        lease = await store.acquire_slot(KEY, slots, 10.0)
        assert lease is not None
        try:
            phase[i] = "hold"
            in_use += 1
            max_in_use = max(max_in_use, in_use)
            for _ in range(rng.randint(1, 8)):
                await asyncio.sleep(0)
            completed += 1
        finally:
            in_use -= 1
            phase[i] = "release"
            await store.release_slot(lease)
            phase[i] = "done"

    async def monitor() -> None:
        nonlocal max_redis
        while not done:
            max_redis = max(max_redis, await raw.zcard(k(prefix, KEY, "held")))
            await asyncio.sleep(0)

    mon = asyncio.create_task(monitor())
    tasks = [asyncio.create_task(worker(i)) for i in range(200)]
    cancelled_in: dict[str, int] = {}
    victims: set[int] = set()
    while not all(t.done() for t in tasks):
        if len(cancelled_in) == 3 and sum(cancelled_in.values()) >= 60:
            break
        # Cancel in every phase: while queued, while holding, while releasing.
        by_phase = {p: [i for i, q in phase.items() if q == p and i not in victims]
                    for p in ("wait", "hold", "release")}
        missing = [p for p, ids in by_phase.items() if ids and p not in cancelled_in]
        others = [p for p, ids in by_phase.items() if ids]
        if missing or (others and sum(cancelled_in.values()) < 60):
            p = rng.choice(missing or others)
            victim = rng.choice(by_phase[p])
            victims.add(victim)
            tasks[victim].cancel()
            cancelled_in[p] = cancelled_in.get(p, 0) + 1
        for _ in range(rng.randint(1, 20)):
            await asyncio.sleep(0)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    done = True
    await mon
    unexpected = [r for r in results if r is not None and not isinstance(r, asyncio.CancelledError)]
    assert unexpected == []
    assert max_in_use <= slots and 0 < max_redis <= slots
    assert completed > 100 and set(cancelled_in) == {"wait", "hold", "release"}, cancelled_in
    assert {i for i, r in enumerate(results) if isinstance(r, asyncio.CancelledError)} == victims
    await a.aclose()
    await b.aclose()  # waits for background releases and queue exits
    for part in ("held", "queue", "qexp"):
        assert await raw.zcard(k(prefix, KEY, part)) == 0, part


async def test_fifo_order_across_two_replicas(
    make: Callable[..., RedisStore], raw: Redis, prefix: str
) -> None:
    a, b = make(), make()
    holder = await a.acquire_slot(KEY, 1, 0)
    assert holder is not None
    order: list[str] = []

    async def waiter(name: str, store: RedisStore) -> None:
        lease = await store.acquire_slot(KEY, 1, 5.0)
        assert lease is not None
        order.append(name)
        await store.release_slot(lease)

    names = ["a1", "b1", "a2", "b2", "a3", "b3"]
    tasks = []
    for i, name in enumerate(names):
        tasks.append(asyncio.create_task(waiter(name, a if name[0] == "a" else b)))

        async def queued(n: int = i + 1) -> bool:
            return bool(await raw.zcard(k(prefix, KEY, "queue")) == n)

        await wait_until(queued)
    assert (await b.snapshot([KEY], [])).slots[KEY].queued == len(names)
    await a.release_slot(holder)
    await asyncio.gather(*tasks)
    assert order == names


async def test_killed_replica_loses_its_slot_within_the_lease(
    make: Callable[..., RedisStore], clock: Clock
) -> None:
    a, b = make(lease_s=0.5), make(lease_s=0.5)
    lease = await a.acquire_slot(KEY, 1, 0)
    assert lease is not None
    clock.t += 0.4
    await a.renew()  # renewal keeps the lease alive past its first expiry
    clock.t += 0.4
    assert await b.acquire_slot(KEY, 1, 0) is None
    assert (await b.snapshot([KEY], [])).slots[KEY].in_flight == 1
    await a.aclose()  # "kill -9": renewal stops, the lease is never released
    waiting = asyncio.create_task(b.acquire_slot(KEY, 1, 5.0))
    await asyncio.sleep(0)
    clock.t += 0.6  # more than lease_s after a's last renewal
    got = await asyncio.wait_for(waiting, 2.0)
    assert isinstance(got, Lease) and got.token.startswith("r")
    await b.release_slot(got)
    assert (await b.snapshot([KEY], [])).slots[KEY].in_flight == 0


async def test_timeout_is_honoured_and_cancelled_waiter_leaves_the_queue(
    make: Callable[..., RedisStore], raw: Redis, prefix: str
) -> None:
    a = make()
    holder = await a.acquire_slot(KEY, 1, 0)
    assert holder is not None
    start = time.monotonic()
    assert await a.acquire_slot(KEY, 1, 0.1) is None
    assert 0.09 <= time.monotonic() - start < 1.0
    task = asyncio.create_task(a.acquire_slot(KEY, 1, 5.0))

    async def queue_len(n: int) -> bool:
        return bool(await raw.zcard(k(prefix, KEY, "queue")) == n)

    await wait_until(lambda: queue_len(1))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: queue_len(0))
    # Release and cancel in the same tick, many times: a slot granted in the race goes back.
    for _ in range(20):
        task = asyncio.create_task(a.acquire_slot(KEY, 1, 5.0))
        await wait_until(lambda: queue_len(1))
        await a.release_slot(holder)
        task.cancel()
        result = await asyncio.gather(task, return_exceptions=True)
        if isinstance(result[0], Lease):
            await a.release_slot(result[0])
        holder = await a.acquire_slot(KEY, 1, 2.0)
        assert holder is not None
    await a.release_slot(holder)
    await a.aclose()
    assert await raw.zcard(k(prefix, KEY, "held")) == 0
    assert await raw.zcard(k(prefix, KEY, "queue")) == 0


async def test_breaker_state_is_shared(make: Callable[..., RedisStore]) -> None:
    a, b = make(), make()
    assert await b.get_breaker("ollama-a") == BreakerState()
    opened = BreakerState("open", failures=5, opened_at=1234.5, open_for_s=30.0)
    await a.set_breaker("ollama-a", opened)
    assert await b.get_breaker("ollama-a") == opened
    assert (await b.snapshot([], ["ollama-a", "bedrock"])).breakers == {
        "ollama-a": opened, "bedrock": BreakerState(),
    }


async def test_spend_adds_up_across_replicas_per_day(
    make: Callable[..., RedisStore], raw: Redis, prefix: str, clock: Clock
) -> None:
    a, b = make(), make()
    assert await a.add_spend("backend:bedrock", 1.25) == pytest.approx(1.25)
    assert await b.add_spend("backend:bedrock", 2.5) == pytest.approx(3.75)
    snap = await a.snapshot([], [], ["backend:bedrock", "key:team-a"])
    assert snap.spend_usd == pytest.approx({"backend:bedrock": 3.75, "key:team-a": 0.0})
    ttl = await raw.ttl(f"{prefix}spend:2026-01-01:backend:bedrock")
    assert 86400 < ttl <= 2 * 86400
    clock.t += 86400  # the next day starts from zero; yesterday's total is kept
    assert (await b.snapshot([], [], ["backend:bedrock"])).spend_usd["backend:bedrock"] == 0.0
    assert await b.add_spend("backend:bedrock", 1.0) == pytest.approx(1.0)
    assert await raw.get(f"{prefix}spend:2026-01-01:backend:bedrock") == "3.75"


async def test_service_time_ewma_is_shared(make: Callable[..., RedisStore]) -> None:
    a, b = make(), make()
    assert (await a.snapshot([KEY], [])).slots[KEY].service_time_s is None
    await a.record_service_time(KEY, 1.0)
    await b.record_service_time(KEY, 2.0)
    assert (await a.snapshot([KEY], [])).slots[KEY].service_time_s == pytest.approx(1.2)
    await a.record_service_time(KEY, 0.2)
    assert (await b.snapshot([KEY], [])).slots[KEY].service_time_s == pytest.approx(1.0)


async def test_snapshot_is_one_round_trip_and_skips_expired_leases(
    make: Callable[..., RedisStore], raw: Redis, prefix: str, clock: Clock
) -> None:
    a, dead = make(), make(lease_s=0.5)
    other = "ollama-b|gpt-oss:120b"
    assert await dead.acquire_slot(other, 2, 0) is not None
    await dead.aclose()
    lease = await a.acquire_slot(KEY, 1, 0)
    assert lease is not None
    waiting = asyncio.create_task(a.acquire_slot(KEY, 1, 5.0))
    await wait_until(lambda: _is(raw.zcard(k(prefix, KEY, "queue")), 1))
    await a.record_service_time(KEY, 0.8)
    await a.set_breaker("ollama-a", BreakerState("half_open"))
    await a.add_spend("key:team-a", 0.5)
    clock.t += 1.0  # the dead replica's lease has expired; nobody has purged it yet
    before = a.round_trips
    snap = await a.snapshot([KEY, other], ["ollama-a"], ["key:team-a"])
    assert a.round_trips - before == 1
    assert snap.slots[KEY].in_flight == 1 and snap.slots[KEY].queued == 1
    assert snap.slots[KEY].service_time_s == pytest.approx(0.8)
    assert snap.slots[other].in_flight == 0
    assert snap.breakers["ollama-a"].state == "half_open"
    assert snap.spend_usd["key:team-a"] == pytest.approx(0.5)
    await a.release_slot(lease)
    granted = await waiting
    assert granted is not None
    await a.release_slot(granted)


async def test_round_trips_per_operation(make: Callable[..., RedisStore]) -> None:
    a = make()
    await a.release_slot(await _must(a.acquire_slot(KEY, 4, 0)))  # warm up: scripts loaded
    costs: dict[str, int] = {}
    n = a.round_trips
    lease = await _must(a.acquire_slot(KEY, 4, 0))
    costs["acquire"], n = a.round_trips - n, a.round_trips
    await a.release_slot(lease)
    costs["release"], n = a.round_trips - n, a.round_trips
    await a.record_service_time(KEY, 1.0)
    costs["record_service_time"], n = a.round_trips - n, a.round_trips
    await a.add_spend("x", 1.0)
    costs["add_spend"], n = a.round_trips - n, a.round_trips
    await a.set_breaker("b", BreakerState())
    await a.get_breaker("b")
    costs["breaker_set_get"], n = a.round_trips - n, a.round_trips
    snap = await a.snapshot([KEY], ["b"], ["x"], claim=SlotClaim(((KEY, 4),)))
    costs["snapshot_and_claim"], n = a.round_trips - n, a.round_trips
    bg = a.background_round_trips
    assert snap.claimed is not None
    a.note_prediction(snap.claimed, 1.0)
    a.release_nowait(snap.claimed)
    while a._flusher is not None:
        await asyncio.shield(a._flusher)
    costs["release_nowait"] = a.round_trips - n  # none on the caller's path
    costs["release_nowait_background"] = a.background_round_trips - bg
    assert costs == {
        "acquire": 1, "release": 1, "record_service_time": 1, "add_spend": 1,
        "breaker_set_get": 2, "snapshot_and_claim": 1, "release_nowait": 0,
        "release_nowait_background": 1,  # the prediction and the release: one batch
    }


async def test_status_redacts_the_password(prefix: str) -> None:
    s = RedisStore("redis://user:s3cret@127.0.0.1:6379/0", prefix=prefix)
    status = s.status()
    assert status["kind"] == "redis" and status["degraded"] is False
    assert "s3cret" not in str(status) and status["url"] == "redis://user:***@127.0.0.1:6379/0"
    assert "s3cret" not in redact_url("redis://127.0.0.1:6379/0?password=s3cret")
    assert redact_url("redis://:pw@h:1/2") == "redis://:***@h:1/2"
    await s.aclose()


async def _is(aw: Awaitable[Any], expected: Any) -> bool:
    return bool(await aw == expected)


async def _must(aw: Awaitable[Lease | None]) -> Lease:
    lease = await aw
    assert lease is not None
    return lease


async def test_only_the_queue_head_takes_a_free_slot_and_a_dead_waiter_expires(
    make: Callable[..., RedisStore], raw: Redis, prefix: str, clock: Clock
) -> None:
    a = make(lease_s=0.5)
    # A waiter of a replica that died while queued: head of the queue, never renewed.
    await raw.zadd(k(prefix, KEY, "queue"), {"ghost": 0})
    await raw.zadd(k(prefix, KEY, "qexp"), {"ghost": clock.t + 0.5})
    assert await a.acquire_slot(KEY, 2, 0) is None  # a free slot, but not ours to take
    waiting = asyncio.create_task(a.acquire_slot(KEY, 2, 5.0))
    await wait_until(lambda: _is(raw.zcard(k(prefix, KEY, "queue")), 2))
    clock.t += 0.6  # the ghost's entry expires; the live waiter (renewed) moves up
    await a.renew()
    lease = await asyncio.wait_for(waiting, 2.0)
    assert lease is not None
    assert await raw.zcard(k(prefix, KEY, "queue")) == 0
    await a.release_slot(lease)


async def test_release_carries_the_service_time_in_one_round_trip(
    make: Callable[..., RedisStore],
) -> None:
    a, b = make(), make()
    lease = await a.acquire_slot("k", 1, 0)
    assert lease is not None
    lease.service_time_s = 2.0
    n = a.round_trips
    await a.release_slot(lease)
    assert a.round_trips - n == 1
    snap = await b.snapshot(["k"], [])
    assert snap.slots["k"].in_flight == 0 and snap.slots["k"].service_time_s == 2.0


async def test_breaker_opened_by_round_trips_and_older_records_still_parse(
    make: Callable[..., RedisStore], raw: Redis, prefix: str
) -> None:
    a, b = make(), make()
    await a.set_breaker("ollama-a", BreakerState("open", 5, 10.0, 2.0, "probe"))
    assert (await b.get_breaker("ollama-a")).opened_by == "probe"
    assert (await b.snapshot([], ["ollama-a"])).breakers["ollama-a"].opened_by == "probe"
    await a.set_breaker("ollama-a", BreakerState())  # closed: the cause is cleared
    assert (await b.get_breaker("ollama-a")).opened_by is None
    # a record an older replica wrote (no opened_by field) parses as before
    await raw.delete(f"{prefix}breaker:ollama-b")
    await raw.hset(f"{prefix}breaker:ollama-b", mapping={
        "state": "open", "failures": 5, "opened_at": 1.0, "open_for_s": 30.0})
    assert await b.get_breaker("ollama-b") == BreakerState("open", 5, 1.0, 30.0)
