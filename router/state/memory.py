"""In-process state store: the default for a single router process.

Slots are counted per key with a queue of waiting futures, private before standard and FIFO
within a class; a released slot is handed straight to the head, so the count never exceeds
`slots`. On every arrival and release the queue is re-evaluated (`queue_model.py`) and the
spillable waiters that can no longer make their bound are told to leave (`SPILLED`). The last
`SAMPLE_WINDOW` finished requests per key are kept for the estimator.

The replica registry holds this process's own heartbeat only.

Blobs live in an insertion-ordered dict with their expiry; expired ones are dropped as they
are met, and past `blob_capacity_bytes` in total the oldest go first.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from router.state.base import (
    SAMPLE_WINDOW,
    SPILLED,
    BreakerState,
    Lease,
    ReplicaInfo,
    ServiceSample,
    SlotClaim,
    SlotLoad,
    SlotRequest,
    Spilled,
    StoreSnapshot,
)
from router.state.queue_model import QueuedEntry, spill_tokens

EWMA_ALPHA = 0.2
DEFAULT_SERVICE_S = 2.0  # a waiter's or holder's time when nothing is known yet
BLOB_CAPACITY_BYTES = 256 * 1024 * 1024


@dataclass(slots=True)
class _Waiter:
    token: str
    order: tuple[int, int]  # (priority, arrival): the queue is kept sorted by it
    deadline: float  # clock time its bound ends
    request: SlotRequest
    fut: asyncio.Future[bool]  # True: granted; False: told to leave (spilled)


@dataclass(slots=True)
class _Slots:
    # token -> (start, predicted) of the requests in service
    in_flight: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    waiters: list[_Waiter] = field(default_factory=list)
    service_time_s: float | None = None
    samples: deque[ServiceSample] = field(default_factory=lambda: deque(maxlen=SAMPLE_WINDOW))
    limit: int = 0  # the `slots` of the latest acquire (for re-evaluation on release)
    # `samples` as the snapshot hands it out: rebuilt by the first snapshot after a change
    samples_view: tuple[ServiceSample, ...] | None = ()


def _today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


class MemoryStore:
    kind = "memory"

    def __init__(self, day: Callable[[], str] = _today, *,
                 clock: Callable[[], float] = time.monotonic,
                 blob_capacity_bytes: int = BLOB_CAPACITY_BYTES) -> None:
        self._blobs: OrderedDict[str, tuple[float, str]] = OrderedDict()  # key -> expiry, data
        self._blob_bytes = 0
        self._blob_capacity = blob_capacity_bytes
        self._clock = clock
        self._slots: dict[str, _Slots] = {}
        self._breakers: dict[str, BreakerState] = {}
        self._spend: dict[tuple[str, str], float] = {}
        self._ids = itertools.count()
        self._day = day
        self._me: tuple[float, ReplicaInfo] | None = None  # expiry (clock), this replica

    def _get(self, key: str) -> _Slots:
        s = self._slots.get(key)
        if s is None:
            s = self._slots[key] = _Slots()
        return s

    async def acquire_slot(self, key: str, slots: int, timeout_s: float,
                           request: SlotRequest | None = None) -> Lease | Spilled | None:
        s = self._get(key)
        s.limit = slots
        req = request or SlotRequest()
        n = next(self._ids)
        token = f"m{n}"
        now = self._clock()
        if len(s.in_flight) < slots and not s.waiters:
            s.in_flight[token] = (now, req.predicted_s)
            return Lease(key, token, predicted_s=req.predicted_s)
        if timeout_s <= 0:
            return None
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        w = _Waiter(token, (int(req.priority), n), now + timeout_s, req, fut)
        bisect.insort(s.waiters, w, key=lambda x: x.order)
        self._reevaluate(key, s)
        try:
            granted = await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            if fut.done() and not fut.cancelled() and fut.result():
                # The slot was handed to us just as we gave up: give it back.
                self._release_token(key, token)
            elif not fut.done():
                fut.cancel()
                with contextlib.suppress(ValueError):
                    s.waiters.remove(w)
            if isinstance(asyncio.current_task(), asyncio.Task) and _cancelling():
                raise
            return None
        if not granted:
            return SPILLED
        return Lease(key, token, predicted_s=req.predicted_s)

    def _reevaluate(self, key: str, s: _Slots) -> None:
        """Tell the spillable waiters that can no longer make their bound to leave."""
        if not s.waiters:
            return
        queue = [QueuedEntry(w.token, w.request.predicted_s, w.deadline, w.request.spillable)
                 for w in s.waiters]
        out = set(spill_tokens(self._clock(), s.limit, s.in_flight.values(), queue,
                               s.service_time_s or DEFAULT_SERVICE_S))
        if not out:
            return
        keep = []
        for w in s.waiters:
            if w.token in out:
                if not w.fut.done():
                    w.fut.set_result(False)
            else:
                keep.append(w)
        s.waiters = keep

    def _release_token(self, key: str, token: str) -> None:
        s = self._get(key)
        if token not in s.in_flight:
            return
        del s.in_flight[token]
        while s.waiters:
            w = s.waiters.pop(0)
            if w.fut.done():
                continue
            s.in_flight[w.token] = (self._clock(), w.request.predicted_s)
            w.fut.set_result(True)
            break
        self._reevaluate(key, s)

    def adopt(self, key: str, token: str) -> None:
        """Count a slot held elsewhere (a lease granted by Redis before an outage) as held
        here, until `release_adopted` — so this replica keeps its limit while degraded."""
        self._get(key).in_flight[token] = (self._clock(), None)

    def release_adopted(self, key: str, token: str) -> None:
        self._release_token(key, token)

    async def release_slot(self, lease: Lease) -> None:
        self.release_nowait(lease)

    def release_nowait(self, lease: Lease) -> None:
        """Release at once (nothing to wait for in memory)."""
        if lease.released:
            return
        lease.released = True
        if lease.service_time_s is not None:
            self.fold_service_time(lease.key, lease.service_time_s)
            s = self._get(lease.key)
            s.samples.appendleft(ServiceSample(
                lease.service_time_s, lease.prompt_tokens, lease.output_tokens,
                lease.first_token_s, lease.route))
            s.samples_view = None
        self._release_token(lease.key, lease.token)

    def claim(self, claim: SlotClaim) -> Lease | None:
        """Take a slot on the first of the claim's keys with one free and nobody queued."""
        for key, slots in claim.keys:
            s = self._get(key)
            s.limit = slots
            if len(s.in_flight) < slots and not s.waiters:
                token = f"m{next(self._ids)}"
                s.in_flight[token] = (self._clock(), None)
                return Lease(key, token)
        return None

    def note_prediction(self, lease: Lease, predicted_s: float | None) -> None:
        lease.predicted_s = predicted_s
        s = self._slots.get(lease.key)
        held = None if s is None else s.in_flight.get(lease.token)
        if s is not None and held is not None:
            s.in_flight[lease.token] = (held[0], predicted_s)

    async def record_service_time(self, key: str, seconds: float) -> None:
        self.fold_service_time(key, seconds)

    def fold_service_time(self, key: str, seconds: float) -> None:
        s = self._get(key)
        prev = s.service_time_s
        s.service_time_s = seconds if prev is None else prev + EWMA_ALPHA * (seconds - prev)

    async def get_breaker(self, backend: str) -> BreakerState:
        return replace(self._breakers.get(backend) or BreakerState())

    async def set_breaker(self, backend: str, state: BreakerState) -> None:
        self._breakers[backend] = replace(state)

    async def add_spend(self, spend_key: str, usd: float) -> float:
        k = (self._day(), spend_key)
        self._spend[k] = self._spend.get(k, 0.0) + usd
        return self._spend[k]

    async def put_blob(self, key: str, data: str, ttl_s: float) -> None:
        self._drop_blob(key)
        size = len(data)
        if size > self._blob_capacity:
            return
        now = self._clock()
        while self._blobs and self._blob_bytes + size > self._blob_capacity:
            self._drop_blob(next(iter(self._blobs)))
        self._blobs[key] = (now + ttl_s, data)
        self._blob_bytes += size
        # Expired blobs at the old end go now, so the dict does not grow with dead entries.
        while self._blobs:
            oldest = next(iter(self._blobs))
            if self._blobs[oldest][0] > now:
                break
            self._drop_blob(oldest)

    async def get_blob(self, key: str) -> str | None:
        hit = self._blobs.get(key)
        if hit is None:
            return None
        if hit[0] <= self._clock():
            self._drop_blob(key)
            return None
        return hit[1]

    async def delete_blob(self, key: str) -> bool:
        live = await self.get_blob(key) is not None
        self._drop_blob(key)
        return live

    def _drop_blob(self, key: str) -> None:
        hit = self._blobs.pop(key, None)
        if hit is not None:
            self._blob_bytes -= len(hit[1])

    async def heartbeat(self, info: ReplicaInfo, ttl_s: float) -> None:
        self._me = (self._clock() + ttl_s, replace(info))

    async def replicas(self) -> list[ReplicaInfo]:
        """Only this process: a memory store is not shared."""
        if self._me is None or self._me[0] <= self._clock():
            return []
        return [replace(self._me[1])]

    async def snapshot(
        self, slot_keys: Sequence[str], backends: Sequence[str], spend_keys: Sequence[str] = (),
        claim: SlotClaim | None = None,
    ) -> StoreSnapshot:
        """The loads, breakers and spend; with `claim`, then a slot taken (base.py)."""
        slots = {}
        now = self._clock() if slot_keys else 0.0
        for key in slot_keys:
            s = self._slots.get(key)
            slots[key] = self._load(s, now) if s else SlotLoad()
        breakers = self._breakers
        snap = StoreSnapshot(slots, {b: _copy(breakers.get(b)) for b in backends})
        if spend_keys:
            day = self._day()
            snap.spend_usd = {k: self._spend.get((day, k), 0.0) for k in spend_keys}
        if claim is not None:
            snap.claimed = self.claim(claim)
        return snap

    @staticmethod
    def _load(s: _Slots, now: float) -> SlotLoad:
        waiting = tuple((int(w.request.priority), w.request.predicted_s)
                        for w in s.waiters if not w.fut.done()) if s.waiters else ()
        running = tuple((now - t, p) for t, p in s.in_flight.values()) if s.in_flight else ()
        samples = s.samples_view
        if samples is None:  # a sample arrived since the last snapshot
            samples = s.samples_view = tuple(s.samples)
        return SlotLoad(len(s.in_flight), len(waiting), s.service_time_s, running, waiting,
                        samples)

    def held(self) -> int:
        """Slots held across all keys (tests assert this returns to zero)."""
        return sum(len(s.in_flight) for s in self._slots.values())

    def status(self) -> dict[str, object]:
        return {"kind": self.kind, "degraded": False}

    async def aclose(self) -> None:
        return None


def _copy(b: BreakerState | None) -> BreakerState:
    if b is None:
        return BreakerState()
    return BreakerState(b.state, b.failures, b.opened_at, b.open_for_s, b.opened_by)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return bool(task is not None and task.cancelling())
