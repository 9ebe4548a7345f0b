"""The replica registry: each store lists the replicas whose heartbeat has not expired. Memory
lists only itself; Redis (real, 127.0.0.1:6379 or HR_TEST_REDIS_URL) lists every replica on the
same prefix and drops one whose TTL passed (an injected clock, no sleeping); the fallback store
lists from Redis, or only itself marked degraded while Redis is down. And the service's
heartbeat writes this process's record."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from router.service.replicas import ReplicaBeat, default_replica_id
from router.state.base import ReplicaInfo
from router.state.memory import MemoryStore
from router.state.redis_store import RedisStore
from router.state.resilient import FallbackStore

REDIS_URL = os.environ.get("HR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = 1_767_225_600.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def info(replica_id: str, seen: float = T0, in_flight: int = 0) -> ReplicaInfo:
    return ReplicaInfo(replica_id, started=T0 - 60, last_seen=seen, in_flight=in_flight)


@pytest.fixture
async def make(prefix: str) -> AsyncIterator[Callable[[Clock], RedisStore]]:
    stores: list[RedisStore] = []

    def _make(clock: Clock) -> RedisStore:
        store = RedisStore(REDIS_URL, prefix=prefix, op_timeout_s=1.0, clock=clock)
        stores.append(store)
        return store

    yield _make
    for s in stores:
        await s.aclose()


async def test_memory_lists_only_itself_until_its_ttl_passes() -> None:
    clock = Clock(100.0)
    store = MemoryStore(clock=clock)
    assert await store.replicas() == []
    await store.heartbeat(info("a", in_flight=3), ttl_s=6)
    await store.heartbeat(info("a", in_flight=1), ttl_s=6)  # replaces, never two
    assert [(r.id, r.in_flight) for r in await store.replicas()] == [("a", 1)]
    clock.t = 106.0
    assert await store.replicas() == []


@pytest.mark.redis
async def test_two_redis_stores_see_each_other_and_an_expired_one_disappears(
        make: Callable[[Clock], RedisStore], raw: Redis, prefix: str) -> None:
    ca, cb = Clock(), Clock()
    a, b = make(ca), make(cb)
    await a.heartbeat(info("host-a:1", in_flight=2), ttl_s=6)
    await b.heartbeat(ReplicaInfo("host-b:2", T0, T0, degraded=True), ttl_s=6)
    for store in (a, b):
        listed = await store.replicas()
        assert [(r.id, r.in_flight, r.degraded) for r in listed] == [
            ("host-a:1", 2, False), ("host-b:2", 0, True)]
    assert await raw.pttl(f"{prefix}replica:host-a:1") > 0  # the record itself expires too
    # b keeps beating; a stopped. Past a's TTL only b is listed, and b's beat prunes a's entry.
    cb.t = T0 + 7
    await b.heartbeat(info("host-b:2", seen=cb.t), ttl_s=6)
    assert [r.id for r in await b.replicas()] == ["host-b:2"]
    assert await raw.zrange(f"{prefix}replicas", 0, -1) == ["host-b:2"]


@pytest.mark.redis
async def test_a_malformed_record_is_skipped(
        make: Callable[[Clock], RedisStore], raw: Redis, prefix: str) -> None:
    store = make(Clock())
    await store.heartbeat(info("good"), ttl_s=6)
    await raw.zadd(f"{prefix}replicas", {"bad": T0 + 60})
    await raw.set(f"{prefix}replica:bad", "{not json")
    assert [r.id for r in await store.replicas()] == ["good"]


@pytest.mark.redis
async def test_fallback_lists_from_redis_when_healthy(
        make: Callable[[Clock], RedisStore]) -> None:
    clock = Clock()
    other = make(clock)
    await other.heartbeat(info("other"), ttl_s=6)
    store = FallbackStore(make(clock), MemoryStore(), op_timeout_s=1.0)
    await store.heartbeat(info("me"), ttl_s=6)
    assert [(r.id, r.degraded) for r in await store.replicas()] == [
        ("me", False), ("other", False)]


async def test_fallback_lists_itself_marked_degraded_while_redis_is_down() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    primary = RedisStore(f"redis://127.0.0.1:{port}/0", op_timeout_s=0.2)
    store = FallbackStore(primary, MemoryStore(), op_timeout_s=0.2, recheck_s=60)
    try:
        await store.heartbeat(info("me", in_flight=4), ttl_s=6)
        assert store.degraded
        assert [(r.id, r.degraded, r.in_flight) for r in await store.replicas()] == [
            ("me", True, 4)]
    finally:
        await store.aclose()


async def test_the_service_heartbeat_writes_this_process() -> None:
    store = MemoryStore()
    flight = [2]
    beat = ReplicaBeat(store, lambda: flight[0], replica_id="r-1", interval_s=1.0,
                       wall=lambda: T0)
    await beat.start()  # beats at once
    (me,) = await store.replicas()
    assert (me.id, me.in_flight, me.degraded, me.last_seen) == ("r-1", 2, False, T0)
    assert beat.ttl_s == 3.0
    await beat.stop()
    flight[0] = 5
    assert await beat.beat()
    assert [r.in_flight for r in await store.replicas()] == [5]
    assert default_replica_id() == f"{socket.gethostname()}:{os.getpid()}"
