"""Redis with a safety net: `FallbackStore` sends every state operation to Redis within a small
bound (`asyncio.timeout`) and switches to the in-memory store at once when Redis errs or is
slow; `build_store` picks the store for a configuration.

While degraded, operations go straight to memory (no request waits on Redis), and a background
task PINGs Redis every `recheck_s` and switches back when it answers. The switch is logged once
per outage on the `router.state` logger and counted in `fallbacks_total`; a background batch
that fails (releases sent after the response: `release_nowait`) switches too. A lease is
released in the store that granted it. A snapshot's claim (`snapshot(..., claim=)`) is taken
in Redis, leaving room for this replica's memory leases still running after an outage, or in
memory when Redis fails or is already given up on; either way one operation, as without one.
Breakers, service times and spend are also mirrored into memory, so an outage starts from this
replica's last view rather than from nothing; spend added during an outage is added to Redis
when it comes back. Blobs go to Redis; one written during an outage
goes to memory, and a read finds it in either (a blob Redis lost to an outage is simply gone).
Replica heartbeats go to both; the listing comes from Redis, or while degraded is this replica
alone, marked degraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from redis.exceptions import RedisError

from router.state.base import (
    BreakerState,
    Lease,
    ReplicaInfo,
    SlotClaim,
    SlotRequest,
    Spilled,
    StateStore,
    StoreSnapshot,
)
from router.state.memory import MemoryStore
from router.state.redis_store import RedisStore, StoreUnavailable

log = logging.getLogger("router.state")
T = TypeVar("T")
_TROUBLE = (StoreUnavailable, RedisError, OSError, TimeoutError)


class FallbackStore:
    kind = "redis"

    def __init__(
        self,
        primary: RedisStore,
        fallback: MemoryStore,
        op_timeout_s: float = 0.05,
        recheck_s: float = 1.0,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.op_timeout_s = op_timeout_s
        self.recheck_s = recheck_s
        self.fallbacks_total = 0  # switches from Redis to memory
        self._degraded = False
        self._owners: dict[str, StateStore] = {}  # lease token -> the store that granted it
        self._keys: dict[str, str] = {}  # lease token -> slot key
        # Leases this replica holds, per (store, key): a store that does not know about the
        # other store's leases must not hand out those slots again (outage and recovery).
        self._active: dict[tuple[int, str], int] = {}
        self._pending_spend: dict[str, float] = {}  # added while degraded, replayed on recovery
        self._recheck_task: asyncio.Task[None] | None = None
        self._closed = False
        primary.on_background_failure = self._background_failed

    @property
    def degraded(self) -> bool:
        return self._degraded

    def _degrade(self, op: str, exc: BaseException) -> None:
        if self._degraded or self._closed:
            return
        self._degraded = True
        self.fallbacks_total += 1
        # Slots this replica holds in Redis count as held in memory while degraded, and a
        # memory waiter takes one over as soon as its Redis lease ends.
        for token, store in self._owners.items():
            if store is self.primary:
                self.fallback.adopt(self._keys[token], token)
        log.warning(
            "state store: Redis failed (%s during %s: %s); using the in-memory store until it "
            "answers again", type(exc).__name__, op, exc,
        )
        if self._recheck_task is None or self._recheck_task.done():
            self._recheck_task = asyncio.get_running_loop().create_task(self._recheck_loop())

    async def _run(
        self, op: str, on_redis: Callable[[], Awaitable[T]], on_memory: Callable[[], Awaitable[T]]
    ) -> T:
        if not self._degraded:
            try:
                async with asyncio.timeout(self.op_timeout_s):
                    return await on_redis()
            except _TROUBLE as exc:
                self._degrade(op, exc)
        return await on_memory()

    # ---- slots -------------------------------------------------------------------------

    async def acquire_slot(self, key: str, slots: int, timeout_s: float,
                           request: SlotRequest | None = None) -> Lease | Spilled | None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        lease: Lease | Spilled | None = None
        store: StateStore = self.fallback
        if not self._degraded:
            try:
                # RedisStore bounds each round trip itself; this outer bound is a backstop.
                async with asyncio.timeout(max(timeout_s, 0.0) + 3 * self.op_timeout_s):
                    lease = await self._acquire_primary(key, slots, timeout_s, request)
                store = self.primary
            except _TROUBLE as exc:
                self._degrade("acquire_slot", exc)
                timeout_s = max(0.0, timeout_s - (loop.time() - start))
        if store is self.fallback:
            lease = await self.fallback.acquire_slot(key, slots, timeout_s, request)
        if isinstance(lease, Lease):
            self._granted(lease, store)
        return lease

    async def _acquire_primary(self, key: str, slots: int, timeout_s: float,
                               request: SlotRequest | None) -> Lease | Spilled | None:
        """Acquire in Redis, leaving room for memory leases still running after an outage.

        Redis does not know those leases; while there are any, wait in short slices so the
        room grows back as they end (FIFO order across replicas is relaxed only then)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + max(timeout_s, 0.0)
        while True:
            in_memory = self._held_in(self.fallback, key)
            remaining = max(0.0, end - loop.time())
            if not in_memory:
                return await self.primary.acquire_slot(key, slots, remaining, request)
            lease = await self.primary.acquire_slot(key, max(0, slots - in_memory),
                                                    min(remaining, 0.1))  # slices: no spill
            if lease is not None or remaining <= 0.1:
                return lease

    def _held_in(self, store: StateStore, key: str) -> int:
        return self._active.get((id(store), key), 0)

    def _granted(self, lease: Lease, store: StateStore) -> None:
        self._owners[lease.token] = store
        self._keys[lease.token] = lease.key
        k = (id(store), lease.key)
        self._active[k] = self._active.get(k, 0) + 1

    def _forget(self, lease: Lease) -> StateStore | None:
        """Drop a lease being released from the books; the store that granted it, or None
        when there is nothing to release."""
        store = self._owners.pop(lease.token, None)
        self._keys.pop(lease.token, None)
        if store is None or lease.released:
            return None
        if store is self.primary:
            self.fallback.release_adopted(lease.key, lease.token)  # no-op unless adopted
            if lease.service_time_s is not None:  # keep the memory mirror's estimate warm
                self.fallback.fold_service_time(lease.key, lease.service_time_s)
        k = (id(store), lease.key)
        self._active[k] = self._active.get(k, 1) - 1
        if self._active[k] <= 0:
            del self._active[k]
        return store

    def release_nowait(self, lease: Lease) -> None:
        store = self._forget(lease)
        if store is self.fallback:
            self.fallback.release_nowait(lease)
        elif store is not None:
            self.primary.release_nowait(lease)  # a failed batch: _background_failed

    def _background_failed(self, exc: StoreUnavailable) -> None:
        self._degrade("a background release", exc)

    def note_prediction(self, lease: Lease, predicted_s: float | None) -> None:
        store = self._owners.get(lease.token)
        if store is self.primary and not self._degraded:
            self.primary.note_prediction(lease, predicted_s)
        else:
            self.fallback.note_prediction(lease, predicted_s)

    async def release_slot(self, lease: Lease) -> None:
        store = self._forget(lease)
        if store is None:
            return
        if store is self.fallback:
            await self.fallback.release_slot(lease)
            return
        if self._degraded:
            # Do not wait on Redis: release in the background; the lease, no longer renewed,
            # expires within lease_s if Redis does not answer.
            self.primary.release_nowait(lease)
            return
        try:
            async with asyncio.timeout(self.op_timeout_s):
                await self.primary.release_slot(lease)
        except _TROUBLE as exc:
            self._degrade("release_slot", exc)

    # ---- service time, breakers, spend, snapshot ----------------------------------------

    async def record_service_time(self, key: str, seconds: float) -> None:
        await self.fallback.record_service_time(key, seconds)
        await self._run(
            "record_service_time",
            lambda: self.primary.record_service_time(key, seconds),
            _noop,
        )

    async def get_breaker(self, backend: str) -> BreakerState:
        return await self._run(
            "get_breaker",
            lambda: self.primary.get_breaker(backend),
            lambda: self.fallback.get_breaker(backend),
        )

    async def set_breaker(self, backend: str, state: BreakerState) -> None:
        await self.fallback.set_breaker(backend, state)
        await self._run(
            "set_breaker", lambda: self.primary.set_breaker(backend, state), _noop
        )

    async def add_spend(self, spend_key: str, usd: float) -> float:
        local = await self.fallback.add_spend(spend_key, usd)

        async def on_memory() -> float:
            self._pending_spend[spend_key] = self._pending_spend.get(spend_key, 0.0) + usd
            return local

        return await self._run(
            "add_spend", lambda: self.primary.add_spend(spend_key, usd), on_memory
        )

    async def put_blob(self, key: str, data: str, ttl_s: float) -> None:
        async def on_memory() -> None:
            await self.fallback.put_blob(key, data, ttl_s)

        await self._run("put_blob", lambda: self.primary.put_blob(key, data, ttl_s), on_memory)

    async def get_blob(self, key: str) -> str | None:
        value = await self._run("get_blob", lambda: self.primary.get_blob(key), _none)
        return value if value is not None else await self.fallback.get_blob(key)

    async def delete_blob(self, key: str) -> bool:
        in_memory = await self.fallback.delete_blob(key)

        async def on_memory() -> bool:
            return False

        in_redis = await self._run("delete_blob", lambda: self.primary.delete_blob(key),
                                   on_memory)
        return in_redis or in_memory

    async def heartbeat(self, info: ReplicaInfo, ttl_s: float) -> None:
        info = replace(info, degraded=self._degraded)
        await self.fallback.heartbeat(info, ttl_s)
        await self._run("heartbeat", lambda: self.primary.heartbeat(info, ttl_s), _noop)

    async def replicas(self) -> list[ReplicaInfo]:
        """Every replica in Redis when it answers; else only this one, marked degraded."""
        async def on_memory() -> list[ReplicaInfo]:
            return [replace(r, degraded=True) for r in await self.fallback.replicas()]

        return await self._run("replicas", self.primary.replicas, on_memory)

    async def snapshot(
        self, slot_keys: Sequence[str], backends: Sequence[str], spend_keys: Sequence[str] = (),
        claim: SlotClaim | None = None,
    ) -> StoreSnapshot:
        local = await self.fallback.snapshot(slot_keys, backends, spend_keys)
        shared = None
        if claim is not None:  # room left beside this replica's memory leases (outage)
            room = ((k, n - self._held_in(self.fallback, k)) for k, n in claim.keys)
            shared = SlotClaim(tuple((k, n) for k, n in room if n > 0))

        async def on_memory() -> StoreSnapshot:
            if claim is not None:
                local.claimed = self.fallback.claim(claim)
            return local

        snap = await self._run(
            "snapshot", lambda: self.primary.snapshot(slot_keys, backends, spend_keys, shared),
            on_memory)
        if snap.claimed is not None:
            self._granted(snap.claimed, self.fallback if snap is local else self.primary)
        if snap is not local:
            # Leases granted by memory during an outage are still real load on this replica.
            # (Only memory's own leases: Redis leases adopted during the outage are in Redis.)
            for key, load in snap.slots.items():
                mem = local.slots.get(key)
                if mem is not None:
                    load.in_flight += self._held_in(self.fallback, key)
                    load.queued += mem.queued
        return snap

    # ---- recovery, status, lifecycle --------------------------------------------------

    async def recheck(self) -> bool:
        """PING Redis once; switch back to it when it answers. True when Redis is in use."""
        if not self._degraded:
            return True
        try:
            async with asyncio.timeout(self.op_timeout_s):
                ok = await self.primary.ping()
        except _TROUBLE:
            ok = False
        if ok and self._degraded:
            self._degraded = False
            log.info("state store: Redis answers again; back to the shared store")
            await self._replay_spend()
        return ok

    async def _replay_spend(self) -> None:
        pending, self._pending_spend = self._pending_spend, {}
        for spend_key, usd in pending.items():
            try:
                async with asyncio.timeout(self.op_timeout_s):
                    await self.primary.add_spend(spend_key, usd)
            except _TROUBLE as exc:
                self._pending_spend[spend_key] = self._pending_spend.get(spend_key, 0.0) + usd
                self._degrade("add_spend", exc)

    async def _recheck_loop(self) -> None:
        while self._degraded and not self._closed:
            await asyncio.sleep(self.recheck_s)
            await self.recheck()

    def status(self) -> dict[str, object]:
        status = dict(self.primary.status())
        status.update(
            kind=self.kind, degraded=self._degraded,
            active="memory" if self._degraded else "redis",
            fallbacks_total=self.fallbacks_total, memory_leases_held=self.fallback.held(),
        )
        return status

    async def aclose(self) -> None:
        self._closed = True
        if self._recheck_task is not None:
            self._recheck_task.cancel()
            with contextlib.suppress(BaseException):
                await self._recheck_task
        await self.primary.aclose()
        await self.fallback.aclose()


async def _noop() -> None:
    return None


async def _none() -> str | None:
    return None


def build_store(redis_url: str | None, prefix: str, lease_s: float,
                op_timeout_s: float = 0.05) -> StateStore:
    """The memory store when no Redis URL is configured, else Redis with a memory fallback
    (one bound, `op_timeout_s`, for a Redis operation and for the fallback's wait on it). The
    composition root builds the store with this, from the settings."""
    if not redis_url:
        return MemoryStore()
    shared = RedisStore(redis_url, prefix=prefix, lease_s=lease_s, op_timeout_s=op_timeout_s)
    return FallbackStore(shared, MemoryStore(), op_timeout_s=op_timeout_s)
