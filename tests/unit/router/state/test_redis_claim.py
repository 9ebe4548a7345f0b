"""The snapshot's claim and the background releases of the Redis store, against a real Redis
(127.0.0.1:6379, or HR_TEST_REDIS_URL): one round trip takes the snapshot and the slot; the
claim never goes above `slots` nor ahead of a queue; releases sent after the response go out
batched, off the request path, and are sent on close; Redis trouble falls back to a memory
claim. Round trips are counted here: a second one on a local request's path fails
`test_a_local_request_costs_one_round_trip_on_its_path`."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from router.state.base import Lease, SlotClaim
from router.state.memory import MemoryStore
from router.state.redis_batches import MAX_BATCH
from router.state.redis_store import RedisStore
from router.state.resilient import FallbackStore
from tests.unit.router.state.test_resilient_store import Proxy

pytestmark = pytest.mark.redis
REDIS_URL = os.environ.get("HR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
KEY = "ollama-a|gpt-oss:20b"
OTHER = "ollama-b|gpt-oss:20b"


@pytest.fixture
async def make(prefix: str) -> AsyncIterator[Callable[..., RedisStore]]:
    stores: list[RedisStore] = []

    def factory(**kw: Any) -> RedisStore:
        kw.setdefault("op_timeout_s", 2.0)  # generous: these tests are not about the bound
        s = RedisStore(REDIS_URL, prefix=prefix, **kw)
        stores.append(s)
        return s

    yield factory
    for s in stores:
        if not s._closed:
            await s.aclose()


def k(prefix: str, key: str, part: str) -> str:
    return f"{prefix}{{{key}}}:{part}"


async def flushed(store: RedisStore) -> None:
    """Wait for the background batch in flight, if any (no timing: the task itself)."""
    while store._flusher is not None:
        await asyncio.shield(store._flusher)


async def test_a_local_request_costs_one_round_trip_on_its_path(
        make: Callable[..., RedisStore]) -> None:
    a = make()
    warm = await a.snapshot([KEY], ["ollama-a"], claim=SlotClaim(((KEY, 4),)))  # loads scripts
    assert warm.claimed is not None
    a.release_nowait(warm.claimed)
    await flushed(a)
    path, background = a.round_trips, a.background_round_trips
    # What admission and the executor do for one local request: snapshot with the claim,
    # the plan's prediction, the release with its service-time sample after the response.
    snap = await a.snapshot([KEY], ["ollama-a"], ["key:x"], claim=SlotClaim(((KEY, 4),)))
    lease = snap.claimed
    assert lease is not None
    a.note_prediction(lease, 1.5)
    lease.service_time_s, lease.output_tokens = 0.7, 12
    a.release_nowait(lease)
    assert a.round_trips - path == 1  # the request path: the snapshot and the claim
    await flushed(a)
    assert a.round_trips - path == 1
    assert 1 <= a.background_round_trips - background <= 2  # prediction, release
    after = (await a.snapshot([KEY], [])).slots[KEY]
    assert after.in_flight == 0 and after.samples[0].service_s == pytest.approx(0.7)
    assert after.samples[0].output_tokens == 12


async def test_the_claim_takes_a_slot_and_the_snapshot_shows_the_load_before_it(
        make: Callable[..., RedisStore], raw: Redis, prefix: str) -> None:
    a = make()
    held = await a.acquire_slot(KEY, 2, 0)
    assert held is not None
    snap = await a.snapshot([KEY], [], claim=SlotClaim(((KEY, 2),)))
    claimed = snap.claimed
    assert claimed is not None and claimed.key == KEY and claimed.token != held.token
    assert snap.slots[KEY].in_flight == 1  # this request's own claim is not in it
    assert await raw.zcard(k(prefix, KEY, "held")) == 2
    assert a.status()["leases_held"] == 2  # renewed like any lease
    a.note_prediction(claimed, 3.0)
    await flushed(a)
    info = await raw.hget(k(prefix, KEY, "hinfo"), claimed.token)
    assert info is not None and info.endswith("|3.0")
    running = (await a.snapshot([KEY], [])).slots[KEY].running
    assert sorted(p for _, p in running if p is not None) == [3.0]
    full = await a.snapshot([KEY], [], claim=SlotClaim(((KEY, 2),)))
    assert full.claimed is None  # no room: nothing taken, nothing queued
    assert await raw.zcard(k(prefix, KEY, "queue")) == 0
    await a.release_slot(held)
    await a.release_slot(claimed)
    assert await raw.zcard(k(prefix, KEY, "held")) == 0


async def test_the_claim_takes_the_first_key_with_room_and_never_jumps_a_queue(
        make: Callable[..., RedisStore]) -> None:
    a = make()
    first = await a.acquire_slot(KEY, 1, 0)
    assert first is not None
    waiter = asyncio.create_task(a.acquire_slot(KEY, 1, 5.0))  # queued behind a full key
    while not (await a.snapshot([KEY], [])).slots[KEY].queued:
        await asyncio.sleep(0)
    # With slots=2, KEY has a free slot, but somebody is queued: the claim goes to OTHER.
    snap = await a.snapshot([KEY, OTHER], [], claim=SlotClaim(((KEY, 2), (OTHER, 1))))
    assert snap.claimed is not None and snap.claimed.key == OTHER
    await a.release_slot(first)
    got = await waiter
    assert isinstance(got, Lease)
    for lease in (got, snap.claimed):
        await a.release_slot(lease)


async def test_concurrent_claims_never_take_more_than_slots(
        make: Callable[..., RedisStore], raw: Redis, prefix: str) -> None:
    stores = [make(max_connections=64) for _ in range(3)]
    slots = 3
    snaps = await asyncio.gather(*(
        stores[i % 3].snapshot([KEY], [], claim=SlotClaim(((KEY, slots),))) for i in range(30)))
    claimed = [s.claimed for s in snaps if s.claimed is not None]
    assert len(claimed) == slots
    assert await raw.zcard(k(prefix, KEY, "held")) == slots
    for i, lease in enumerate(claimed):
        stores[i % 3].release_nowait(lease)
    for s in stores:
        await flushed(s)
    assert await raw.zcard(k(prefix, KEY, "held")) == 0


async def test_releases_of_the_same_moment_share_one_round_trip(
        make: Callable[..., RedisStore], raw: Redis, prefix: str) -> None:
    a = make()
    leases = [await a.acquire_slot(KEY, 20, 0) for _ in range(20)]
    before, path = a.background_round_trips, a.round_trips
    for lease in leases:
        assert isinstance(lease, Lease)
        lease.service_time_s = 0.5
        a.release_nowait(lease)
    await flushed(a)
    assert a.background_round_trips - before == 1 and a.round_trips == path
    assert await raw.zcard(k(prefix, KEY, "held")) == 0
    assert await raw.llen(k(prefix, KEY, "samples")) == 20
    a.release_nowait(leases[0])  # idempotent: nothing more is sent
    assert a._flusher is None


async def test_a_burst_bigger_than_a_batch_goes_out_in_several(
        make: Callable[..., RedisStore], raw: Redis, prefix: str) -> None:
    a = make()
    n = 2 * MAX_BATCH + 1
    leases = [await _must(a.acquire_slot(KEY, n, 0)) for _ in range(n)]
    before = a.background_round_trips
    for lease in leases:
        a.release_nowait(lease)
    await flushed(a)
    assert a.background_round_trips - before == 3
    assert await raw.zcard(k(prefix, KEY, "held")) == 0


async def test_a_release_to_a_waiter_in_the_background_wakes_it(
        make: Callable[..., RedisStore]) -> None:
    a, b = make(), make()
    held = await a.acquire_slot(KEY, 1, 0)
    assert isinstance(held, Lease)
    waiter = asyncio.create_task(b.acquire_slot(KEY, 1, 5.0))
    while not (await a.snapshot([KEY], [])).slots[KEY].queued:
        await asyncio.sleep(0)
    a.release_nowait(held)
    got = await waiter
    assert isinstance(got, Lease)
    await b.release_slot(got)


async def test_close_sends_the_pending_releases(
        make: Callable[..., RedisStore], raw: Redis, prefix: str) -> None:
    a = make()
    snap = await a.snapshot([KEY], [], claim=SlotClaim(((KEY, 2),)))
    assert snap.claimed is not None
    a.release_nowait(snap.claimed)
    await a.aclose()  # before the batch had a chance to go out on its own
    assert await raw.zcard(k(prefix, KEY, "held")) == 0


async def test_a_claim_after_redis_lost_its_scripts_still_works(
        make: Callable[..., RedisStore], raw: Redis) -> None:
    a = make()
    first = await a.snapshot([KEY], [], claim=SlotClaim(((KEY, 2),)))
    assert first.claimed is not None
    await raw.script_flush()  # as after a Redis restart
    again = await a.snapshot([KEY], [], claim=SlotClaim(((KEY, 2),)))
    assert again.claimed is not None and again.slots[KEY].in_flight == 1
    second = [first.claimed, again.claimed]
    await raw.script_flush()
    for lease in second:
        a.release_nowait(lease)  # a batch of two: the pipeline meets NOSCRIPT, retries
    await flushed(a)
    assert (await a.snapshot([KEY], [])).slots[KEY].in_flight == 0


async def test_a_cancelled_snapshot_gives_its_claim_back(
        make: Callable[..., RedisStore], raw: Redis, prefix: str) -> None:
    a = make()
    await a.release_slot(await _must(a.acquire_slot(KEY, 1, 0)))  # scripts loaded
    for _ in range(5):  # cancelled at different moments: before sending, while waiting
        task = asyncio.create_task(a.snapshot([KEY], [], claim=SlotClaim(((KEY, 1),))))
        await asyncio.sleep(0)
        task.cancel()
        try:
            snap = await task
        except asyncio.CancelledError:
            pass
        else:
            if snap.claimed is not None:
                a.release_nowait(snap.claimed)
        await flushed(a)
        assert await raw.zcard(k(prefix, KEY, "held")) == 0
    assert a.status()["leases_held"] == 0


async def test_the_sample_window_read_as_a_delta_matches_the_list(
        make: Callable[..., RedisStore], raw: Redis, prefix: str) -> None:
    a, b = make(), make()
    pushed = 0

    async def push(n: int) -> None:
        nonlocal pushed
        for _ in range(n):
            lease = await _must(a.acquire_slot(KEY, 1, 0))
            pushed += 1
            lease.service_time_s, lease.output_tokens = float(pushed), pushed
            await a.release_slot(lease)

    for n in (3, 0, 70, 2, 63, 1):
        await push(n)
        window = (await b.snapshot([KEY], [])).slots[KEY].samples
        stored = await raw.lrange(k(prefix, KEY, "samples"), 0, -1)
        assert [s.output_tokens for s in window] == [int(r.split("|")[2]) for r in stored]
        assert [s.service_s for s in window] == [float(x) for x in range(pushed, 0, -1)][:64]
    await raw.delete(k(prefix, KEY, "samples"), k(prefix, KEY, "sver"))  # as after a flush
    assert (await b.snapshot([KEY], [])).slots[KEY].samples == ()


# -- through the fallback store ---------------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_redis_down_claims_in_memory_and_releases_there() -> None:
    primary = RedisStore(f"redis://127.0.0.1:{closed_port()}/0", op_timeout_s=0.05)
    store = FallbackStore(primary, MemoryStore(), op_timeout_s=0.05)
    try:
        snap = await store.snapshot([KEY], [], claim=SlotClaim(((KEY, 1),)))
        assert store.degraded and snap.claimed is not None
        assert store.fallback.held() == 1 and snap.slots[KEY].in_flight == 0
        again = await store.snapshot([KEY], [], claim=SlotClaim(((KEY, 1),)))
        assert again.claimed is None  # the one memory slot is held
        store.release_nowait(snap.claimed)
        assert store.fallback.held() == 0
    finally:
        await store.aclose()


async def test_the_fallback_claims_in_redis_and_a_failed_background_release_degrades(
        prefix: str, raw: Redis) -> None:
    proxy = Proxy(REDIS_URL)
    await proxy.start()
    primary = RedisStore(proxy.url, prefix=prefix, op_timeout_s=2.0)
    store = FallbackStore(primary, MemoryStore(), op_timeout_s=2.0)
    try:
        snap = await store.snapshot([KEY], [], claim=SlotClaim(((KEY, 2),)))
        assert not store.degraded and snap.claimed is not None
        assert snap.claimed.token.startswith("r") and store.fallback.held() == 0
        store.release_nowait(snap.claimed)
        await flushed(primary)
        assert await raw.zcard(k(prefix, KEY, "held")) == 0
        lease = await store.acquire_slot(KEY, 1, 0)
        assert isinstance(lease, Lease)
        await proxy.stop()  # an outage, noticed first by the background release
        store.release_nowait(lease)
        await flushed(primary)
        assert store.degraded and store.fallbacks_total == 1
        assert primary.status()["leases_held"] == 0  # no longer renewed: it expires
    finally:
        await store.aclose()


async def _must(aw: Any) -> Lease:
    lease = await aw
    assert isinstance(lease, Lease)
    return lease
