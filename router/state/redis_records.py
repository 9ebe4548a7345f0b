"""The Redis store's plain-key records, one round trip each: breakers (`Pbreaker:B` hashes),
daily spend (`Pspend:DAY:S`, TTL two days), blobs (`Pblob:N`, with a TTL), the replica
registry (`redis_replicas.py`) and the snapshot that reads slots, breakers and spend in one
pipeline — with a claim, the CLAIM script goes last in that same pipeline, after the reads, so
the loads are those before it (one round trip for both). A slot key's sample window is read as
a delta (SAMPLES script): only the samples pushed since this store's last read are sent and
parsed, in front of the window it kept. `RedisStore` (`redis_store.py`) mixes
it in and owns the connection, the slot scripts, leases and queues; `_rt` (one bounded,
counted round trip), `_k` and the claim's helpers come from it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import NoScriptError
from redis.typing import EncodableT, FieldT

from router.state import redis_replicas
from router.state.base import (
    SAMPLE_WINDOW,
    BreakerCause,
    BreakerName,
    BreakerState,
    Lease,
    ReplicaInfo,
    ServiceSample,
    SlotClaim,
    SlotLoad,
    StoreSnapshot,
)
from router.state.redis_scripts import PRIORITY_STRIDE

T = TypeVar("T")
SPEND_TTL_S = 2 * 86400
_BREAKER_NAMES: dict[str, BreakerName] = {n: n for n in ("closed", "open", "half_open")}
_BREAKER_CAUSES: dict[str, BreakerCause] = {n: n for n in ("request", "probe")}


class RedisRecords:
    prefix: str
    _redis: Any
    _clock: Callable[[], float]

    if TYPE_CHECKING:
        async def _rt(self, aw: Awaitable[T], background: bool = False) -> T: ...

        def _k(self, key: str, part: str) -> str: ...

        async def _start(self) -> None: ...

        def _claim_call(self, claim: SlotClaim, now: float) -> Any: ...

        async def _claimed(self, claim: SlotClaim, call: Any, result: Any) -> Lease | None: ...

        def _abandon_claim(self, claim: SlotClaim, call: Any) -> None: ...

        def _failed(self, exc: Exception) -> Exception: ...

        def release_nowait(self, lease: Lease) -> None: ...

        _samples: Any
        _scripts_loaded: bool
        _sample_cache: dict[str, tuple[int, tuple[ServiceSample, ...]]]

    def _spend_key(self, spend_key: str, now: float) -> str:
        day = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d")
        return f"{self.prefix}spend:{day}:{spend_key}"

    async def get_breaker(self, backend: str) -> BreakerState:
        raw = await self._rt(self._redis.hgetall(f"{self.prefix}breaker:{backend}"))
        return _parse_breaker(raw)

    async def set_breaker(self, backend: str, state: BreakerState) -> None:
        mapping: dict[FieldT, EncodableT] = {
            "state": state.state, "failures": state.failures,
            "opened_at": state.opened_at, "open_for_s": state.open_for_s,
            "opened_by": state.opened_by or "",  # older replicas ignore the field
        }
        await self._rt(self._redis.hset(f"{self.prefix}breaker:{backend}", mapping=mapping))

    async def add_spend(self, spend_key: str, usd: float) -> float:
        k = self._spend_key(spend_key, self._clock())
        pipe = self._redis.pipeline(transaction=True)
        pipe.incrbyfloat(k, usd)
        pipe.expire(k, SPEND_TTL_S)
        total, _ = await self._rt(pipe.execute())
        return float(total)

    async def put_blob(self, key: str, data: str, ttl_s: float) -> None:
        await self._rt(self._redis.set(f"{self.prefix}blob:{key}", data,
                                       px=max(1, int(ttl_s * 1000))))

    async def get_blob(self, key: str) -> str | None:
        value = await self._rt(self._redis.get(f"{self.prefix}blob:{key}"))
        return None if value is None else str(value)

    async def delete_blob(self, key: str) -> bool:
        return bool(await self._rt(self._redis.delete(f"{self.prefix}blob:{key}")))

    async def heartbeat(self, info: ReplicaInfo, ttl_s: float) -> None:
        pipe = redis_replicas.heartbeat_pipeline(self._redis, self.prefix, info, ttl_s,
                                                 self._clock())
        await self._rt(pipe.execute(), background=True)

    async def replicas(self) -> list[ReplicaInfo]:
        index = redis_replicas.index_key(self.prefix)
        ids = await self._rt(self._redis.zrangebyscore(index, f"({self._clock()!r}", "+inf"))
        if not ids:
            return []
        pipe = redis_replicas.records_pipeline(self._redis, self.prefix, [str(i) for i in ids])
        return redis_replicas.parse_records(await self._rt(pipe.execute()))

    async def snapshot(
        self, slot_keys: Sequence[str], backends: Sequence[str], spend_keys: Sequence[str] = (),
        claim: SlotClaim | None = None,
    ) -> StoreSnapshot:
        snap = StoreSnapshot()
        if claim is not None and not claim.keys:
            claim = None
        if not (slot_keys or backends or spend_keys or claim):
            return snap
        if slot_keys or claim is not None:
            await self._start()  # the scripts are loaded (once, in the background)
        now = self._clock()
        live = f"({now!r}"
        pipe = self._redis.pipeline(transaction=False)
        for key in slot_keys:
            pipe.zcount(self._k(key, "held"), live, "+inf")
            pipe.zcount(self._k(key, "qexp"), live, "+inf")
            pipe.get(self._k(key, "svc"))
            pipe.zrangebyscore(self._k(key, "held"), live, "+inf")
            pipe.hgetall(self._k(key, "hinfo"))
            pipe.zrange(self._k(key, "queue"), 0, -1, withscores=True)
            pipe.hgetall(self._k(key, "qinfo"))
            seen = self._sample_cache.get(key)
            pipe.evalsha(self._samples.sha, 2, self._k(key, "samples"), self._k(key, "sver"),
                         -1 if seen is None else seen[0], SAMPLE_WINDOW)
        for b in backends:
            pipe.hgetall(f"{self.prefix}breaker:{b}")
        for s in spend_keys:
            pipe.get(self._spend_key(s, now))
        call = None if claim is None else self._claim_call(claim, now)
        if call is not None:
            script, keys, args = call
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        try:
            results = await self._rt(pipe.execute(raise_on_error=False))
            if claim is not None:
                snap.claimed = await self._claimed(claim, call, results.pop())
        except BaseException:
            if claim is not None:
                self._abandon_claim(claim, call)
            raise
        try:
            self._parse(snap, now, slot_keys, backends, spend_keys, iter(results))
        except BaseException:
            if snap.claimed is not None:
                self.release_nowait(snap.claimed)
            raise
        return snap

    def _parse(self, snap: StoreSnapshot, now: float, slot_keys: Sequence[str],
               backends: Sequence[str], spend_keys: Sequence[str], res: Iterator[Any]) -> None:
        for key in slot_keys:
            held, queued, svc, tokens, hinfo, queue, qinfo = (
                _ok(self, next(res)) for _ in range(7))
            snap.slots[key] = SlotLoad(
                int(held), int(queued), None if svc is None else float(svc),
                running=tuple(_running(now, [str(t) for t in tokens], hinfo)),
                waiting=tuple(_waiting(queue, qinfo)),
                samples=self._window(key, next(res)))
        for b in backends:
            snap.breakers[b] = _parse_breaker(_ok(self, next(res)))
        for s in spend_keys:
            v = _ok(self, next(res))
            snap.spend_usd[s] = 0.0 if v is None else float(v)

    def _window(self, key: str, raw: Any) -> tuple[ServiceSample, ...]:
        """A slot key's sample window from SAMPLES' answer: the whole window, or the samples
        pushed since the last read in front of the window kept from it."""
        seen = self._sample_cache.get(key)
        if isinstance(raw, NoScriptError):  # Redis lost its scripts: loaded again next time
            self._scripts_loaded = False
            return () if seen is None else seen[1]
        version, whole, entries = _ok(self, raw)
        fresh = tuple(s for s in map(_sample, entries) if s is not None)
        if not int(whole) and seen is not None:
            fresh = (fresh + seen[1])[:SAMPLE_WINDOW] if fresh else seen[1]
        self._sample_cache[key] = (int(version), fresh)
        return fresh


def _ok(store: RedisRecords, result: Any) -> Any:
    """A pipeline's answer, or StoreUnavailable for a command that failed."""
    if isinstance(result, Exception):
        raise store._failed(result)
    return result


def _num(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _running(now: float, tokens: list[str], hinfo: Mapping[Any, Any]
             ) -> list[tuple[float, float | None]]:
    out = []
    for t in tokens:
        start, _, pred = str(hinfo.get(t, "")).partition("|")
        begun = _num(start)
        out.append((0.0 if begun is None else max(0.0, now - begun), _num(pred)))
    return out


def _waiting(queue: Sequence[tuple[Any, float]], qinfo: Mapping[Any, Any]
             ) -> list[tuple[int, float | None]]:
    out = []
    for token, score in queue:
        info = qinfo.get(token)
        if info is None:
            continue  # an entry that expired or left between the two reads
        out.append((int(score // PRIORITY_STRIDE), _num(str(info).split("|")[0])))
    return out


def _sample(raw: Any) -> ServiceSample | None:
    parts = str(raw).split("|")
    if len(parts) != 4 or _num(parts[0]) is None:
        return None
    svc, prompt, output, first = (_num(p) for p in parts)
    return ServiceSample(float(svc or 0.0), None if prompt is None else int(prompt),
                         None if output is None else int(output), first)


def _parse_breaker(raw: Mapping[Any, Any]) -> BreakerState:
    if not raw:
        return BreakerState()
    try:
        return BreakerState(
            state=_BREAKER_NAMES.get(str(raw.get("state")), "closed"),
            failures=int(raw.get("failures", 0)),
            opened_at=float(raw.get("opened_at", 0.0)),
            open_for_s=float(raw.get("open_for_s", 0.0)),
            opened_by=_BREAKER_CAUSES.get(str(raw.get("opened_by"))),
        )
    except ValueError:
        return BreakerState()
