"""The Redis store's plain-key records, one round trip each: breakers (`Pbreaker:B` hashes),
daily spend (`Pspend:DAY:S`, TTL two days), blobs (`Pblob:N`, with a TTL), the replica
registry (`redis_replicas.py`) and the snapshot that reads slots, breakers and spend in one
pipeline — with a claim, the CLAIM script goes last in that same pipeline, after the reads, so
the loads are those before it (one round trip for both). Each slot key is one SLOT_SNAPSHOT
script whose answer is a few joined strings (parsing a RESP item per lease, waiter and sample
was most of the snapshot's CPU), its sample window read as a delta: only the samples pushed
since this store's last read, in front of the window it kept. `RedisStore` (`redis_store.py`)
mixes it in and owns the connection, the slot scripts, leases and queues; `_rt` (one bounded,
counted round trip), `_k` and the claim's helpers come from it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote

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
_SLOT_PARTS = ("held", "qexp", "svc", "hinfo", "queue", "qinfo", "samples", "sver")
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

        async def _call(self, call: Any, background: bool = False) -> Any: ...

        _slot_snapshot: Any
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
        pipe = self._redis.pipeline(transaction=False)
        reads = []
        for key in slot_keys:
            seen = self._sample_cache.get(key)
            keys = [self._k(key, part) for part in _SLOT_PARTS]
            args: list[EncodableT] = [repr(now), -1 if seen is None else seen[0],
                                      SAMPLE_WINDOW]
            reads.append((self._slot_snapshot, keys, args))
            pipe.evalsha(self._slot_snapshot.sha, len(keys), *keys, *args)
        for b in backends:
            pipe.hgetall(f"{self.prefix}breaker:{b}")
        for s in spend_keys:
            pipe.get(self._spend_key(s, now))
        call = None if claim is None else self._claim_call(claim, now)
        if call is not None:
            script, keys, args = call
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        results, snap.claimed = await self._send_snapshot(pipe, reads, claim, call)
        try:
            self._parse(snap, now, slot_keys, backends, spend_keys, iter(results))
        except BaseException:
            if snap.claimed is not None:
                self.release_nowait(snap.claimed)
            raise
        return snap

    async def _send_snapshot(self, pipe: Any, reads: list[Any], claim: SlotClaim | None,
                             call: Any) -> tuple[list[Any], Lease | None]:
        """The snapshot's one round trip: the answers of the reads, and the claimed lease."""
        try:
            results: list[Any] = await self._rt(pipe.execute(raise_on_error=False))
            for i, read in enumerate(reads):  # before the claim's retry: loads before it
                if isinstance(results[i], NoScriptError):  # Redis lost its scripts: again
                    self._scripts_loaded = False
                    results[i] = await self._call(read)
            if claim is None:
                return results, None
            return results, await self._claimed(claim, call, results.pop())
        except BaseException:
            if claim is not None:
                self._abandon_claim(claim, call)  # it may have run
            raise

    def _parse(self, snap: StoreSnapshot, now: float, slot_keys: Sequence[str],
               backends: Sequence[str], spend_keys: Sequence[str], res: Iterator[Any]) -> None:
        for key in slot_keys:
            held, queued, svc, running, waiting, version, whole, entries = _ok(self, next(res))
            snap.slots[key] = SlotLoad(
                int(held), int(queued), float(svc) if svc else None,
                running=_running(now, running), waiting=_waiting(waiting),
                samples=self._window(key, int(version), int(whole), entries))
        for b in backends:
            snap.breakers[b] = _parse_breaker(_ok(self, next(res)))
        for s in spend_keys:
            v = _ok(self, next(res))
            snap.spend_usd[s] = 0.0 if v is None else float(v)

    def _window(self, key: str, version: int, whole: int, entries: str
                ) -> tuple[ServiceSample, ...]:
        """A slot key's sample window: the whole window, or the samples pushed since the last
        read in front of the window kept from it."""
        seen = self._sample_cache.get(key)
        fresh = tuple(s for s in map(_sample, entries.split(";")) if s is not None) \
            if entries else ()
        if not whole and seen is not None:
            fresh = (fresh + seen[1])[:SAMPLE_WINDOW] if fresh else seen[1]
        self._sample_cache[key] = (version, fresh)
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


def _running(now: float, joined: str) -> tuple[tuple[float, float | None], ...]:
    """The live leases, "start|predicted" joined by ';' (a lease without its record: '')."""
    out = []
    for info in joined.split(";") if joined else ():
        start, _, pred = info.partition("|")
        begun = _num(start)
        out.append((0.0 if begun is None else max(0.0, now - begun), _num(pred)))
    return tuple(out)


def _waiting(joined: str) -> tuple[tuple[int, float | None], ...]:
    """The waiters in queue order, "score|predicted|deadline|spillable" joined by ';'."""
    out = []
    for entry in joined.split(";") if joined else ():
        score, _, rest = entry.partition("|")
        out.append((int(float(score) // PRIORITY_STRIDE), _num(rest.partition("|")[0])))
    return tuple(out)


def sample_record(lease: Lease) -> str:
    """A released lease's sample as stored in `P{K}:samples`:
    "service|prompt|output|first_token", then "|route" when the lease has one (the route's
    name percent-encoded, so it holds no '|' or ';'). Empty without a service time."""
    if lease.service_time_s is None:
        return ""
    record = "|".join("" if v is None else repr(v) for v in (
        lease.service_time_s, lease.prompt_tokens, lease.output_tokens, lease.first_token_s))
    return record if lease.route is None else f"{record}|{quote(lease.route, safe='')}"


def _sample(raw: Any) -> ServiceSample | None:
    """Parse a `sample_record`; a record of four fields (written before routes were) has no
    route."""
    parts = str(raw).split("|")
    if len(parts) not in (4, 5) or _num(parts[0]) is None:
        return None
    svc, prompt, output, first = (_num(p) for p in parts[:4])
    route = unquote(parts[4]) if len(parts) == 5 else None
    return ServiceSample(float(svc or 0.0), None if prompt is None else int(prompt),
                         None if output is None else int(output), first, route)


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
