"""FallbackStore: Redis trouble (closed port, a server that never answers, an outage behind a TCP
proxy in front of the real Redis) switches to memory within the bound, logs once, shows in
status, and switches back when Redis answers; leases go back to the store that granted them."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from router.state.base import BreakerState
from router.state.memory import MemoryStore
from router.state.redis_store import RedisStore
from router.state.resilient import FallbackStore, build_store

pytestmark = pytest.mark.redis
REDIS_URL = os.environ.get("HR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

KEY = "ollama-a|gpt-oss:20b"
BOUND = 0.05
SLACK = 0.25  # scheduling noise on a busy CI machine; still far below any Redis timeout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proxy:
    """A TCP proxy in front of the real Redis: stop() is an outage (listener and every open
    connection closed), start() brings it back on the same port."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/{parts.path.lstrip('/') or '0'}"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.close()
        self._writers.clear()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except OSError:
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    p = Proxy(REDIS_URL)
    await p.start()
    yield p
    if p._server is not None and p._server.is_serving():
        await p.stop()


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., FallbackStore]]:
    stores: list[FallbackStore] = []

    def factory(url: str, prefix: str = "hrtest:x:", recheck_s: float = 60.0) -> FallbackStore:
        primary = RedisStore(url, prefix=prefix, op_timeout_s=BOUND)
        s = FallbackStore(primary, MemoryStore(), op_timeout_s=BOUND, recheck_s=recheck_s)
        stores.append(s)
        return s

    yield factory
    for s in stores:
        await s.aclose()


def warnings_logged(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        1 for r in caplog.records if r.name == "router.state" and r.levelno >= logging.WARNING
    )


async def timed(aw: Awaitable[Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = await aw
    return result, time.monotonic() - start


async def test_closed_port_falls_back_to_memory_within_the_bound(
    make: Callable[..., FallbackStore], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router.state")
    store = make(f"redis://127.0.0.1:{free_port()}/0")
    lease, elapsed = await timed(store.acquire_slot(KEY, 1, 5.0))
    assert lease is not None and elapsed < BOUND + SLACK
    status = store.status()
    assert status["degraded"] is True and status["active"] == "memory"
    assert status["kind"] == "redis" and store.fallbacks_total == 1
    # Everything else keeps working from memory, and the switch is logged once.
    assert await store.acquire_slot(KEY, 1, 0) is None
    await store.set_breaker("ollama-a", BreakerState("open", 3))
    assert (await store.get_breaker("ollama-a")).state == "open"
    assert await store.add_spend("key:team-a", 1.5) == pytest.approx(1.5)
    await store.record_service_time(KEY, 2.0)
    snap = await store.snapshot([KEY], ["ollama-a"], ["key:team-a"])
    assert snap.slots[KEY].in_flight == 1 and snap.slots[KEY].service_time_s == 2.0
    await store.release_slot(lease)
    assert store.fallback.held() == 0
    assert warnings_logged(caplog) == 1 and store.fallbacks_total == 1
    assert await store.recheck() is False and store.degraded


@pytest.mark.parametrize(
    "op", ["acquire", "release", "service_time", "get_breaker", "set_breaker", "spend", "snapshot"]
)
async def test_a_redis_that_never_answers_costs_at_most_the_bound(
    make: Callable[..., FallbackStore], op: str
) -> None:
    held: set[asyncio.StreamWriter] = set()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.add(writer)  # accept, read, never answer
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = make(f"redis://127.0.0.1:{port}/0")
    lease = None
    if op == "release":  # a lease Redis granted, released while Redis hangs
        lease = await store.fallback.acquire_slot(KEY, 1, 0)
        assert lease is not None
        lease.token = "r-hanging"
        store._owners[lease.token] = store.primary
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "acquire": lambda: store.acquire_slot(KEY, 2, 5.0),
        "release": lambda: store.release_slot(lease),  # type: ignore[arg-type]
        "service_time": lambda: store.record_service_time(KEY, 1.0),
        "get_breaker": lambda: store.get_breaker("ollama-a"),
        "set_breaker": lambda: store.set_breaker("ollama-a", BreakerState("open")),
        "spend": lambda: store.add_spend("key:team-a", 1.0),
        "snapshot": lambda: store.snapshot([KEY], ["ollama-a"], ["key:team-a"]),
    }
    _, elapsed = await timed(calls[op]())
    assert elapsed < BOUND + SLACK, elapsed
    assert store.degraded and store.fallbacks_total == 1
    _, elapsed = await timed(calls[op]())  # degraded: straight to memory
    assert elapsed < SLACK
    for w in held:
        w.close()
    server.close()


async def test_concurrent_failures_log_and_count_one_switch(
    make: Callable[..., FallbackStore], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router.state")
    store = make(f"redis://127.0.0.1:{free_port()}/0")
    results = await asyncio.gather(
        *(store.get_breaker(f"b{i}") for i in range(10)),
        *(store.acquire_slot(KEY, 20, 1.0) for _ in range(10)),
    )
    assert all(r is not None for r in results)
    assert warnings_logged(caplog) == 1 and store.fallbacks_total == 1
    assert store.fallback.held() == 10


async def test_outage_and_recovery_through_a_proxy(
    make: Callable[..., FallbackStore], proxy: Proxy, raw: Redis, prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="router.state")
    store = make(proxy.url, prefix)
    held_key = f"{prefix}{{{KEY}}}:held"
    redis_lease = await store.acquire_slot(KEY, 2, 0)
    assert redis_lease is not None and not store.degraded
    assert await raw.zcard(held_key) == 1
    await store.set_breaker("ollama-a", BreakerState("open", 4))

    await proxy.stop()  # outage
    breaker, elapsed = await timed(store.get_breaker("ollama-a"))
    assert elapsed < BOUND + SLACK and store.degraded
    assert breaker.state == "open"  # the memory mirror remembers what this replica set
    memory_lease = await store.acquire_slot(KEY, 2, 0)
    # The Redis lease still running counts in memory too: 2 slots, both taken.
    assert memory_lease is not None and store.fallback.held() == 2
    assert await store.acquire_slot(KEY, 2, 0) is None
    assert await store.add_spend("key:team-a", 0.75) == pytest.approx(0.75)
    for _ in range(5):
        await store.snapshot([KEY], ["ollama-a"], ["key:team-a"])
    assert warnings_logged(caplog) == 1
    assert await store.recheck() is False

    await proxy.start()  # recovery
    assert await store.recheck() is True
    assert not store.degraded and store.status()["degraded"] is False
    # Spend added during the outage reached Redis.
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert float(await raw.get(f"{prefix}spend:{day}:key:team-a")) == pytest.approx(0.75)
    # The memory lease goes back to memory, without a Redis round trip.
    before = store.primary.round_trips
    await store.release_slot(memory_lease)
    assert store.fallback.held() == 1 and store.primary.round_trips == before
    # Redis still counts only its own lease; the snapshot adds memory's while it has some.
    snap = await store.snapshot([KEY], [])
    assert snap.slots[KEY].in_flight == 1
    await store.release_slot(redis_lease)
    assert await raw.zcard(held_key) == 0 and store.fallback.held() == 0
    lease = await store.acquire_slot(KEY, 2, 0)
    assert lease is not None and lease.token.startswith("r")  # Redis again
    await store.release_slot(lease)

    await proxy.stop()  # a second outage is logged again, once
    await store.get_breaker("ollama-a")
    await store.get_breaker("ollama-a")
    assert warnings_logged(caplog) == 2 and store.fallbacks_total == 2


async def test_background_recheck_switches_back(
    make: Callable[..., FallbackStore], proxy: Proxy, prefix: str
) -> None:
    store = make(proxy.url, prefix, recheck_s=0.02)
    await proxy.stop()
    await store.get_breaker("x")
    assert store.degraded
    await proxy.start()
    async with asyncio.timeout(2.0):
        while store.degraded:
            await asyncio.sleep(0.01)
    assert (await store.acquire_slot(KEY, 1, 0)) is not None


async def test_a_redis_lease_released_during_an_outage_does_not_wait(
    make: Callable[..., FallbackStore], proxy: Proxy, prefix: str
) -> None:
    store = make(proxy.url, prefix)
    lease = await store.acquire_slot(KEY, 1, 0)
    assert lease is not None and lease.token.startswith("r")
    await proxy.stop()
    await store.get_breaker("x")
    assert store.degraded
    _, elapsed = await timed(store.release_slot(lease))
    assert elapsed < 0.02
    assert store.primary.status()["leases_held"] == 0  # no longer renewed: it will expire
    assert store.fallback.held() == 0


async def test_build_store() -> None:
    assert isinstance(build_store(None, "hr:", 10.0), MemoryStore)
    store = build_store("redis://127.0.0.1:6379/0", "hr:test:", 3.0)
    assert isinstance(store, FallbackStore)
    assert store.primary.prefix == "hr:test:" and store.primary.lease_s == 3.0
    await store.aclose()
