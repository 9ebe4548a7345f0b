"""Redis state store: capacity leases, FIFO queues, service times, breakers and spend, shared
by every replica that uses the same Redis and prefix.

Key layout (prefix P, slot key K; `{K}` is a cluster hash tag, so one script touches one slot):
  P{K}:held    zset token -> lease expiry (clock seconds); acquire purges expired leases, so a
               replica killed with kill -9 gives its slots back within `lease_s`
  P{K}:queue   zset token -> ticket: FIFO order of waiters across replicas
  P{K}:qexp    zset token -> waiter expiry: a dead waiter leaves the queue within `lease_s`
  P{K}:ticket  ticket counter;  P{K}:svc  service-time EWMA (seconds)
  P{K}:hinfo   hash token -> "start|predicted" of each lease;  P{K}:limit  latest `slots`
  P{K}:qinfo   hash token -> "predicted|deadline|spillable" of each waiter
  P{K}:spilled zset token -> expiry: waiters told to leave, until their next try reads it
  P{K}:samples list of the latest SAMPLE_WINDOW "service|prompt|output|first_token[|route]"
               records (`redis_records.sample_record`; a record without the route still parses)
  P{K}:sver    samples pushed so far: the snapshot reads only those newer than its last read
               (one SLOT_SNAPSHOT script per slot key, its answer a few joined strings)
  Pbreaker:B   hash (state, failures, opened_at, open_for_s, opened_by: request|probe|"")
  Pspend:DAY:S  float, TTL 2 days
  Pblob:N      string with a TTL (PX): a stored Responses API conversation
  Preplica:ID  a replica's heartbeat record (TTL);  Preplicas  zset id -> expiry
               (`redis_replicas.py`)
  Pwake        pub/sub channel: "K\\n<token>" names the queue head when a slot may be free,
               or a waiter told to leave

Slot changes run as Lua scripts (EVALSHA, `redis_scripts.py`), so counts never go below zero or
above `slots`; the connection pool and URL redaction live in `redis_connection.py`.
Every Redis round trip is bounded by `op_timeout_s` and counted in `round_trips` (request
path), or bounded by 4 x `op_timeout_s` (at least 0.2 s) and counted in
`background_round_trips` (renewal, pub/sub, script loading, background releases); a failure
raises `StoreUnavailable`, which `resilient.FallbackStore` turns into a switch to the
memory store.

Round trips of a local request (tests/unit/router/state/test_redis_claim.py counts them): one
on the request path, the snapshot pipeline, whose last command is the CLAIM script that takes
the slot (`snapshot(..., claim=)`); the release (with its service-time sample) and the claimed
lease's predicted service time go in the background (`release_nowait`, `note_prediction`).
Background script calls are batched (`redis_batches.py`, with the claim's helpers): those
queued while a batch is in flight go out together in the next pipeline, one round trip however
many requests released meanwhile. One that never
goes out (a crash) is covered by the lease's expiry: a released lease is no longer renewed;
`aclose` sends what is pending first. `on_background_failure` hears of a batch that failed.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.exceptions import RedisError
from redis.typing import EncodableT

from router.state.base import (
    SAMPLE_WINDOW,
    SPILLED,
    Lease,
    ServiceSample,
    SlotRequest,
    Spilled,
)
from router.state.memory import EWMA_ALPHA
from router.state.redis_batches import Call, RedisBatches
from router.state.redis_connection import StoreUnavailable, connect, redact_url
from router.state.redis_records import SPEND_TTL_S, RedisRecords, sample_record
from router.state.redis_scripts import (
    ACQUIRE_LUA,
    CLAIM_LUA,
    EWMA_LUA,
    PREDICT_LUA,
    RELEASE_LUA,
    SLOT_SNAPSHOT_LUA,
)

__all__ = ["SPEND_TTL_S", "RedisStore", "StoreUnavailable", "redact_url"]

log = logging.getLogger("router.state")
T = TypeVar("T")


@dataclass(slots=True)
class _Waiter:
    key: str
    token: str
    ticket: int
    event: asyncio.Event = field(default_factory=asyncio.Event)


class RedisStore(RedisBatches, RedisRecords):
    kind = "redis"

    def __init__(
        self,
        url: str,
        prefix: str = "hr:",
        lease_s: float = 10.0,
        op_timeout_s: float = 0.05,
        clock: Callable[[], float] = time.time,
        *,
        poll_s: tuple[float, float] = (0.05, 0.1),
        max_connections: int = 50,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.lease_s = lease_s
        self.op_timeout_s = op_timeout_s
        self._clock = clock
        self._poll_s = poll_s
        self._redis = connect(url, max_connections=max_connections, op_timeout_s=op_timeout_s)
        self._acquire = self._redis.register_script(ACQUIRE_LUA)
        self._release = self._redis.register_script(RELEASE_LUA)
        self._ewma = self._redis.register_script(EWMA_LUA)
        self._claim = self._redis.register_script(CLAIM_LUA)
        self._predict = self._redis.register_script(PREDICT_LUA)
        self._slot_snapshot = self._redis.register_script(SLOT_SNAPSHOT_LUA)
        self._sample_cache: dict[str, tuple[int, tuple[ServiceSample, ...]]] = {}
        self._scripts_loaded = False
        self._scripts_lock = asyncio.Lock()
        self._channel = f"{prefix}wake"
        self._id = secrets.token_hex(4)
        self._ids = itertools.count()
        self._held: dict[str, str] = {}  # token -> slot key, leases this process renews
        self._waiters: dict[str, list[_Waiter]] = {}  # slot key -> local waiters by ticket
        self._by_token: dict[str, _Waiter] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._batch: list[Call] = []  # background script calls waiting for the next pipeline
        self._flusher: asyncio.Task[None] | None = None
        self.on_background_failure: Callable[[StoreUnavailable], None] | None = None
        self._closed = False
        self._degraded = False
        self.round_trips = 0
        self.background_round_trips = 0
        self.errors_total = 0

    # ---- keys and plumbing -------------------------------------------------------------

    def _k(self, key: str, part: str) -> str:
        return f"{self.prefix}{{{key}}}:{part}"

    def _slot_keys(self, key: str) -> list[str]:
        return [self._k(key, "held"), self._k(key, "queue"), self._k(key, "qexp")]

    def _info_keys(self, key: str) -> list[str]:
        return [self._k(key, part) for part in ("hinfo", "qinfo", "spilled")]

    async def _rt(self, aw: Awaitable[T], background: bool = False) -> T:
        """One bounded, counted round trip."""
        if background:
            self.background_round_trips += 1
        else:
            self.round_trips += 1
        # Off every request's path, a background one may take longer on a loaded machine.
        bound = max(4 * self.op_timeout_s, 0.2) if background else self.op_timeout_s
        try:
            async with asyncio.timeout(bound):
                result = await aw
        except (RedisError, OSError, TimeoutError) as exc:
            # Waiters are woken: they retry now and fail fast instead of waiting for a poll.
            raise self._failed(exc) from exc
        self._degraded = False
        return result

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("redis store background task failed: %r", task.exception())

    async def _start(self) -> None:
        if self._renewer is None:
            self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        if not self._scripts_loaded:
            async with self._scripts_lock:
                if not self._scripts_loaded:
                    pipe = self._redis.pipeline(transaction=False)
                    for script in (self._acquire, self._release, self._ewma, self._claim,
                                   self._predict, self._slot_snapshot):
                        pipe.script_load(script.script)
                    await self._rt(pipe.execute(), background=True)
                    self._scripts_loaded = True

    # ---- slots -----------------------------------------------------------------------

    async def _try(self, key: str, token: str, slots: int, join: bool,
                   req: SlotRequest, deadline: float) -> tuple[int, int]:
        """One ACQUIRE: (1, 0) granted, (0, score) queued, (0, 0) refused, (2, 0) spilled."""
        now = self._clock()
        exp = now + self.lease_s
        keys = [*self._slot_keys(key), self._k(key, "ticket"), *self._info_keys(key),
                self._k(key, "svc"), self._k(key, "limit")]
        pred = "" if req.predicted_s is None else repr(float(req.predicted_s))
        args: list[EncodableT] = [token, slots, now, exp, exp, "1" if join else "0",
                                  self._channel, key, int(req.priority), pred, deadline,
                                  "1" if req.spillable else "0", exp]
        state, ticket = await self._rt(self._acquire(keys=keys, args=args))
        if state == 1:
            self._held[token] = key  # renewed from now on
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # A cancellation was swallowed on the way (3.11 wait_for): honour it; the
            # caller's cleanup gives back a slot granted meanwhile.
            raise asyncio.CancelledError
        return int(state), int(ticket)

    async def acquire_slot(self, key: str, slots: int, timeout_s: float,
                           request: SlotRequest | None = None) -> Lease | Spilled | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        req = request or SlotRequest()
        bound_end = self._clock() + timeout_s  # the deadline the queue re-evaluation uses
        token = self._token()
        await self._start()
        try:
            state, ticket = await self._try(key, token, slots, timeout_s > 0, req, bound_end)
        except BaseException:
            self._leave(key, token)  # the script may have run before the error or cancel
            raise
        if state == 1:
            return Lease(key, token, predicted_s=req.predicted_s)
        if state == 2:
            return SPILLED
        if timeout_s <= 0:
            return None
        w = _Waiter(key, token, ticket)
        queue = self._waiters.setdefault(key, [])
        bisect.insort(queue, w, key=lambda x: x.ticket)
        self._by_token[token] = w
        try:
            while (remaining := deadline - loop.time()) > 0:
                # Only the oldest local waiter can be the global head: it polls often, in
                # case a wake message is lost; the others wait to be woken.
                pause = random.uniform(*self._poll_s) if queue[0] is w else 1.0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, pause)):
                        await w.event.wait()
                w.event.clear()
                if deadline - loop.time() <= 0:
                    break
                state, ticket = await self._try(key, token, slots, True, req, bound_end)
                if state == 1:
                    return Lease(key, token, predicted_s=req.predicted_s)
                if state == 2:
                    return SPILLED
                if ticket != w.ticket:  # our entry had expired: we joined again at the back
                    queue.remove(w)
                    w.ticket = ticket
                    bisect.insort(queue, w, key=lambda x: x.ticket)
        except BaseException:
            self._leave(key, token)
            raise
        finally:
            self._forget_waiter(w)
        self._leave(key, token)
        return None

    def _forget_waiter(self, w: _Waiter) -> None:
        self._by_token.pop(w.token, None)
        queue = self._waiters.get(w.key, [])
        was_head = bool(queue) and queue[0] is w
        if w in queue:
            queue.remove(w)
        if not queue:
            self._waiters.pop(w.key, None)
        elif was_head:
            queue[0].event.set()  # the next local waiter takes over polling

    def _token(self) -> str:
        return f"r{self._id}:{next(self._ids)}"

    def _leave(self, key: str, token: str) -> None:
        """Leave the queue, and give back a slot granted in a race, in the background."""
        self._held.pop(token, None)
        self._queue_call(self._release_call(key, token, None))

    def _release_call(self, key: str, token: str, lease: Lease | None) -> Call:
        now = self._clock()
        keys = [*self._slot_keys(key), *self._info_keys(key), self._k(key, "svc"),
                self._k(key, "limit"), self._k(key, "samples"), self._k(key, "sver")]
        svc = lease.service_time_s if lease is not None else None
        record = "" if lease is None else sample_record(lease)
        args: list[EncodableT] = [token, now, self._channel, key, now + self.lease_s,
                                  "" if svc is None else repr(float(svc)), EWMA_ALPHA, record,
                                  SAMPLE_WINDOW]
        return self._release, keys, args

    def release_nowait(self, lease: Lease) -> None:
        """Stop renewing the lease and release it in the next background batch."""
        if lease.released:
            return
        lease.released = True
        self._held.pop(lease.token, None)
        self._queue_call(self._release_call(lease.key, lease.token, lease))

    async def release_slot(self, lease: Lease) -> None:
        """Release now, in one round trip of the caller's (`release_nowait` waits for none)."""
        if lease.released:
            return
        lease.released = True
        self._held.pop(lease.token, None)
        task = self._spawn(self._call(self._release_call(lease.key, lease.token, lease)))
        await asyncio.shield(task)  # a cancelled caller still gives the slot back

    def note_prediction(self, lease: Lease, predicted_s: float | None) -> None:
        """Record a held lease's predicted service time, in the background."""
        lease.predicted_s = predicted_s
        if predicted_s is not None and not lease.released:
            self._queue_call((self._predict, [self._k(lease.key, "hinfo")],
                              [lease.token, repr(float(predicted_s))]))

    def _failed(self, exc: Exception) -> StoreUnavailable:
        self.errors_total += 1
        self._degraded = True
        self._wake_all()
        return StoreUnavailable(f"{type(exc).__name__}: {exc}")

    # ---- lease renewal and wake-ups --------------------------------------------------------

    async def renew(self) -> None:
        """Push the expiry of every lease and queue entry this process holds (one round trip)."""
        exp = self._clock() + self.lease_s
        pipe = self._redis.pipeline(transaction=False)
        for token, key in list(self._held.items()):
            pipe.zadd(self._k(key, "held"), {token: exp}, xx=True)
        for token, w in list(self._by_token.items()):
            pipe.zadd(self._k(w.key, "qexp"), {token: exp}, xx=True)
        if len(pipe):
            await self._rt(pipe.execute(), background=True)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            with contextlib.suppress(StoreUnavailable):
                await self.renew()

    async def _listen(self) -> None:
        backoff = 0.05
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                self.background_round_trips += 1
                await pubsub.subscribe(self._channel)
                backoff = 0.05
                async for msg in pubsub.listen():
                    if msg.get("type") == "message":
                        key, _, token = str(msg["data"]).partition("\n")
                        w = self._by_token.get(token)
                        if w is not None and w.key == key:
                            w.event.set()
            except (RedisError, OSError) as exc:
                log.debug("redis store pub/sub lost (%r); waiters poll meanwhile", exc)
                self._wake_all()
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    def _wake_all(self) -> None:
        for w in self._by_token.values():
            w.event.set()

    # ---- service time (the breakers, spend, blobs, replicas and snapshot: RedisRecords) ---

    async def record_service_time(self, key: str, seconds: float) -> None:
        await self._start()
        await self._rt(self._ewma(keys=[self._k(key, "svc")], args=[seconds, EWMA_ALPHA]))

    # ---- health and lifecycle ------------------------------------------------------------

    async def ping(self) -> bool:
        try:
            return bool(await self._rt(self._redis.ping(), background=True))
        except StoreUnavailable:
            return False

    def status(self) -> dict[str, object]:
        return {
            "kind": self.kind, "url": redact_url(self.url), "degraded": self._degraded,
            "prefix": self.prefix, "lease_s": self.lease_s, "leases_held": len(self._held),
            "waiting": len(self._by_token), "round_trips": self.round_trips,
            "background_round_trips": self.background_round_trips,
            "errors_total": self.errors_total,
        }

    async def aclose(self) -> None:
        """Send the pending background batch, stop renewal and pub/sub and close the
        connections. Leases still held are not released: they expire within `lease_s`, as
        after a crash."""
        self._closed = True
        for task in (self._renewer, self._listener):
            if task is not None:
                task.cancel()
        if self._tasks:  # pending releases and queue exits: give them a moment
            await asyncio.wait(list(self._tasks), timeout=max(0.2, 4 * self.op_timeout_s))
        for task in (self._renewer, self._listener):
            if task is not None:
                with contextlib.suppress(BaseException):
                    await task
        self._held.clear()
        await self._redis.aclose()

