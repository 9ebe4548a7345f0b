"""The Redis store's claim and background batches (`RedisStore` mixes this in; the
connection, `_rt`, `_spawn`, the keys and the leases it renews come from it).

The claim: `snapshot(..., claim=)` puts the CLAIM script last in its pipeline
(`redis_records.py`); `_claimed` turns its answer into a lease (renewed from then on) and
retries once alone when Redis lost its scripts; a snapshot that fails or is cancelled gives the
claim back (`_abandon_claim`: it may have run).

Background batches: releases after the response and predictions are queued (`_queue_call`)
and sent by one task, one pipeline per batch: every call queued while a batch is in flight goes
in the next one (up to `MAX_BATCH`), so a burst of releases costs one round trip. A batch that
fails is sent once more (releases and predictions are idempotent; a sample may count twice),
then reported to `on_background_failure` and dropped: its leases, no longer renewed, expire
within `lease_s`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError
from redis.typing import EncodableT

from router.state.base import Lease, SlotClaim
from router.state.redis_connection import StoreUnavailable

log = logging.getLogger("router.state")
T = TypeVar("T")
Call = tuple[AsyncScript, list[str], list[EncodableT]]  # a script call: script, keys, args
MAX_BATCH = 64  # script calls per pipeline: a bigger burst goes out in several


class RedisBatches:
    lease_s: float
    _redis: Any
    _claim: AsyncScript
    _held: dict[str, str]
    _batch: list[Call]
    _flusher: asyncio.Task[None] | None
    _closed: bool
    _scripts_loaded: bool
    on_background_failure: Callable[[StoreUnavailable], None] | None

    if TYPE_CHECKING:
        async def _rt(self, aw: Awaitable[T], background: bool = False) -> T: ...

        def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]: ...

        def _k(self, key: str, part: str) -> str: ...

        def _slot_keys(self, key: str) -> list[str]: ...

        def _info_keys(self, key: str) -> list[str]: ...

        def _token(self) -> str: ...

        def _leave(self, key: str, token: str) -> None: ...

        def _failed(self, exc: Exception) -> Exception: ...

    async def _call(self, call: Call, background: bool = False) -> Any:
        script, keys, args = call
        return await self._rt(script(keys=keys, args=args), background)

    # ---- the snapshot's claim (RedisRecords.snapshot puts it last in its pipeline) -------

    def _claim_call(self, claim: SlotClaim, now: float) -> Call:
        keys: list[str] = []
        args: list[EncodableT] = [self._token(), repr(now), repr(now + self.lease_s)]
        for key, slots in claim.keys:
            keys += [*self._slot_keys(key), *self._info_keys(key), self._k(key, "limit")]
            args.append(slots)
        return self._claim, keys, args

    async def _claimed(self, claim: SlotClaim, call: Call, result: Any) -> Lease | None:
        """The lease the claim took (the CLAIM script's `result`), if any."""
        if isinstance(result, NoScriptError):  # Redis lost its scripts (a restart): once more
            self._scripts_loaded = False
            result = await self._call(call)
        elif isinstance(result, ResponseError):
            raise self._failed(result)
        at = int(result)
        if at <= 0:
            return None
        token = str(call[2][0])
        key = claim.keys[at - 1][0]
        self._held[token] = key  # renewed from now on
        return Lease(key, token)

    def _abandon_claim(self, claim: SlotClaim, call: Call) -> None:
        """The snapshot failed or was cancelled: the claim may have run; give it back."""
        for key, _ in claim.keys:
            self._leave(key, str(call[2][0]))

    # ---- background batches ----------------------------------------------------------------

    def _queue_call(self, call: Call) -> None:
        if self._closed:
            return  # after aclose: the lease, not renewed, expires
        self._batch.append(call)
        if self._flusher is None:
            self._flusher = self._spawn(self._flush())

    async def _flush(self) -> None:
        """Send the queued calls, one pipeline per batch, until none is left."""
        try:
            while self._batch:
                batch, self._batch = self._batch[:MAX_BATCH], self._batch[MAX_BATCH:]
                try:
                    try:
                        await self._send(batch)
                    except StoreUnavailable:
                        # Once more (a slow moment): the scripts are idempotent, at worst a
                        # sample counts twice; a lost release would hold its slot until expiry.
                        await self._send(batch)
                except StoreUnavailable as exc:
                    log.debug("redis store: a background batch of %d failed: %s",
                              len(batch), exc)
                    if self.on_background_failure is not None:
                        self.on_background_failure(exc)
        finally:
            self._flusher = None

    async def _send(self, batch: list[Call]) -> None:
        if len(batch) == 1:
            await self._call(batch[0], background=True)
            return
        pipe = self._redis.pipeline(transaction=False)
        for script, keys, args in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        results = await self._rt(pipe.execute(raise_on_error=False), background=True)
        for call, result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):  # Redis lost its scripts: one by one
                self._scripts_loaded = False
                await self._call(call, background=True)
