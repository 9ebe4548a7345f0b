"""Local admission: taking and giving back a slot on a local backend for one attempt.

The executor calls `LocalAdmission.admit` before it attempts a local candidate and
`release` on every path afterwards. Today a request waits in the store's FIFO queue up to the
candidate's bound (`max_wait_s`, never past the request's deadline) and a `QueueTimeout` moves
it to the next candidate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from router.context import RequestContext
from router.errors import QueueTimeout
from router.planner import Candidate
from router.state.base import Lease, StateStore, slot_key


class LocalAdmission:
    def __init__(self, store: StateStore, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    async def admit(self, ctx: RequestContext, cand: Candidate) -> Lease:
        wait = max(0.0, min(cand.max_wait_s, ctx.deadline - self.clock()))
        lease = await self.store.acquire_slot(slot_key(cand.backend, cand.model_id),
                                              cand.slots, wait)
        if lease is None:
            raise QueueTimeout(
                f"no local slot on '{cand.backend}' within {wait:.1f}s", backend=cand.backend)
        return lease

    async def release(self, lease: Lease | None) -> None:
        if lease is not None:
            await asyncio.shield(self.store.release_slot(lease))
