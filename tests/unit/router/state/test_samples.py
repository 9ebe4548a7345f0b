"""The service-time samples a release records, route included, read back the same from the
memory store and from Redis (127.0.0.1:6379, or HR_TEST_REDIS_URL); Redis records written
before routes were (four fields) still parse, without a route."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from router.state.base import Lease, ServiceSample, StateStore
from router.state.memory import MemoryStore
from router.state.redis_records import _sample, sample_record
from router.state.redis_store import RedisStore

REDIS_URL = os.environ.get("HR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
KEY = "ollama-a|gpt-oss:20b"
# (route, service s, prompt, output, first token s): odd route names included.
RELEASES: list[tuple[str | None, float, int | None, int | None, float | None]] = [
    ("chat", 1.5, 100, 40, 0.2),
    (None, 2.0, None, None, None),
    ("a|b;c%20 d", 0.75, 10, 3, None),
    ("", 3.0, 7, 70, 0.5),
    ("summarise", 4.25, None, 120, None),
]
EXPECTED = [ServiceSample(svc, prompt, out, first, route)
            for route, svc, prompt, out, first in reversed(RELEASES)]  # newest first


async def _release_all(store: StateStore) -> None:
    for route, svc, prompt, out, first in RELEASES:
        lease = await store.acquire_slot(KEY, 1, 0)
        assert isinstance(lease, Lease)
        lease.service_time_s, lease.prompt_tokens, lease.output_tokens = svc, prompt, out
        lease.first_token_s, lease.route = first, route
        await store.release_slot(lease)


@pytest.fixture
async def redis_store(prefix: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(REDIS_URL, prefix=prefix, op_timeout_s=2.0)
    yield store
    await store.aclose()


async def test_memory_store_keeps_each_samples_route() -> None:
    store = MemoryStore()
    await _release_all(store)
    assert list((await store.snapshot([KEY], [])).slots[KEY].samples) == EXPECTED


@pytest.mark.redis
async def test_redis_store_reads_back_what_the_memory_store_keeps(
        redis_store: RedisStore) -> None:
    await _release_all(redis_store)
    assert list((await redis_store.snapshot([KEY], [])).slots[KEY].samples) == EXPECTED
    # A second reader (the whole window, not a delta) sees the same.
    other = RedisStore(REDIS_URL, prefix=redis_store.prefix, op_timeout_s=2.0)
    try:
        assert list((await other.snapshot([KEY], [])).slots[KEY].samples) == EXPECTED
    finally:
        await other.aclose()


@pytest.mark.redis
async def test_redis_records_without_a_route_still_parse(
        redis_store: RedisStore, raw: Redis, prefix: str) -> None:
    samples, version = f"{prefix}{{{KEY}}}:samples", f"{prefix}{{{KEY}}}:sver"
    # As an older replica wrote them: four fields; a malformed one is skipped.
    await raw.lpush(samples, "1.5|100|40|0.2", "2.0|||", "x|1|2|3", "1|2|3|4|r|extra")
    await raw.incrby(version, 4)
    got = (await redis_store.snapshot([KEY], [])).slots[KEY].samples
    assert got == (ServiceSample(2.0), ServiceSample(1.5, 100, 40, 0.2))


def test_a_record_round_trips_and_stays_four_fields_without_a_route() -> None:
    lease = Lease(KEY, "t", service_time_s=1.25, prompt_tokens=9, output_tokens=4)
    assert sample_record(lease) == "1.25|9|4|"
    assert _sample(sample_record(lease)) == ServiceSample(1.25, 9, 4, None, None)
    lease.route = "x;y|z"
    assert ";" not in sample_record(lease) and sample_record(lease).count("|") == 4
    assert _sample(sample_record(lease)) == ServiceSample(1.25, 9, 4, None, "x;y|z")
    assert sample_record(Lease(KEY, "t")) == ""  # no service time: no sample
