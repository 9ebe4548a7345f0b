"""The blob store behind stored Responses API conversations (memory, real Redis, the Redis
fallback) and `ResponseStore` on top of it: TTL, size caps, ownership, privacy class."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from router.service.client import ClientContext
from router.service.responses import ResponseStore, StoredResponse
from router.state.memory import MemoryStore
from router.state.redis_store import RedisStore
from router.state.resilient import FallbackStore

REDIS_URL = os.environ.get("HR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_memory_blob_expires_after_its_ttl() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    await store.put_blob("a", "one", ttl_s=10)
    assert await store.get_blob("a") == "one"
    clock.t += 9.9
    assert await store.get_blob("a") == "one"
    clock.t += 0.2
    assert await store.get_blob("a") is None
    assert not await store.delete_blob("a")


async def test_memory_blobs_stay_under_the_capacity_oldest_first_out() -> None:
    store = MemoryStore(clock=Clock(), blob_capacity_bytes=10)
    await store.put_blob("a", "xxxx", 60)
    await store.put_blob("b", "yyyy", 60)
    await store.put_blob("c", "zzzz", 60)  # 12 > 10: "a" goes
    assert await store.get_blob("a") is None
    assert await store.get_blob("b") == "yyyy" and await store.get_blob("c") == "zzzz"
    await store.put_blob("huge", "h" * 11, 60)  # over the whole capacity: not kept
    assert await store.get_blob("huge") is None and await store.get_blob("c") == "zzzz"
    assert await store.delete_blob("c") and await store.get_blob("c") is None


async def test_expired_blobs_are_dropped_as_new_ones_arrive() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    for i in range(50):
        await store.put_blob(f"k{i}", "v" * 100, 1)
    clock.t += 2
    await store.put_blob("new", "v", 1)
    assert store._blob_bytes == 1  # the dead ones do not pile up


@pytest.fixture
async def redis_store(prefix: str) -> AsyncIterator[RedisStore]:
    s = RedisStore(REDIS_URL, prefix=prefix, op_timeout_s=2.0)
    yield s
    await s.aclose()


@pytest.mark.redis
async def test_redis_blob_round_trip_with_ttl(redis_store: RedisStore, raw: object,
                                              prefix: str) -> None:
    await redis_store.put_blob("r1", '{"a": 1}', ttl_s=30)
    assert await redis_store.get_blob("r1") == '{"a": 1}'
    ttl_ms = await raw.pttl(f"{prefix}blob:r1")  # type: ignore[attr-defined]
    assert 0 < ttl_ms <= 30_000
    assert await redis_store.delete_blob("r1")
    assert await redis_store.get_blob("r1") is None
    assert not await redis_store.delete_blob("r1")


@pytest.mark.redis
async def test_redis_blob_is_gone_after_its_ttl(redis_store: RedisStore, raw: object,
                                                prefix: str) -> None:
    await redis_store.put_blob("short", "x", ttl_s=30)
    await raw.pexpire(f"{prefix}blob:short", 1)  # type: ignore[attr-defined]
    # PEXPIRE 1 ms: gone once Redis's clock passes it; the next read sees nothing.
    while await raw.exists(f"{prefix}blob:short"):  # type: ignore[attr-defined]
        pass
    assert await redis_store.get_blob("short") is None


@pytest.mark.redis
async def test_fallback_store_keeps_blobs_in_redis_and_in_memory_during_an_outage(
        prefix: str) -> None:
    dead = RedisStore("redis://127.0.0.1:1/0", prefix=prefix, op_timeout_s=0.2)
    store = FallbackStore(dead, MemoryStore(), op_timeout_s=0.2, recheck_s=60)
    try:
        await store.put_blob("k", "v", 60)  # Redis refuses: memory keeps it
        assert store.degraded
        assert await store.get_blob("k") == "v"
        assert await store.delete_blob("k") and await store.get_blob("k") is None
    finally:
        await store.aclose()
    live = FallbackStore(RedisStore(REDIS_URL, prefix=prefix, op_timeout_s=2.0), MemoryStore())
    other = FallbackStore(RedisStore(REDIS_URL, prefix=prefix, op_timeout_s=2.0), MemoryStore())
    try:
        await live.put_blob("shared", "v", 60)
        assert await other.get_blob("shared") == "v"  # another replica reads it
    finally:
        await live.aclose()
        await other.aclose()


def _client(key: str | None = None) -> ClientContext:
    return ClientContext(request_id="r", authorization=f"Bearer {key}" if key else None)


async def test_response_store_caps_size_and_keeps_the_privacy_class() -> None:
    rs = ResponseStore(MemoryStore(), ttl_s=60, max_bytes=400, keys_open=lambda: True)
    rec = StoredResponse({"id": "resp_1", "output": []}, [{"type": "message"}], "private")
    assert await rs.save("resp_1", rec, _client())
    loaded = await rs.load("resp_1", _client())
    assert loaded == rec
    big = StoredResponse({"id": "resp_2", "output": [{"t": "x" * 500}]}, [], "standard")
    assert not await rs.save("resp_2", big, _client())
    assert await rs.load("resp_2", _client()) is None


async def test_response_store_binds_records_to_the_key_that_made_them() -> None:
    rs = ResponseStore(MemoryStore(), ttl_s=60, max_bytes=10_000, keys_open=lambda: False)
    rec = StoredResponse({"id": "resp_1"}, [], "standard")
    await rs.save("resp_1", rec, _client("hr-team-a"))
    assert await rs.load("resp_1", _client("hr-team-b")) is None
    assert not await rs.delete("resp_1", _client("hr-team-b"))
    assert await rs.load("resp_1", _client("hr-team-a")) == rec
    assert await rs.delete("resp_1", _client("hr-team-a"))
    assert await rs.load("resp_1", _client("hr-team-a")) is None


async def test_a_record_without_a_readable_class_reads_as_private() -> None:
    mem = MemoryStore()
    rs = ResponseStore(mem, ttl_s=60, max_bytes=10_000, keys_open=lambda: True)
    await mem.put_blob("resp:resp_x", '{"response": {}, "input_items": [], "owner": ""}', 60)
    loaded = await rs.load("resp_x", _client())
    assert loaded is not None and loaded.privacy == "private"
