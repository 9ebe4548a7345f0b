"""Local admission: taking and giving back a slot on a local backend for one attempt.

The executor calls `LocalAdmission.admit` before it attempts a local candidate and
`release` on every path afterwards. A request waits in the store's queue up to the
candidate's bound (`max_wait_s`, never past the request's deadline): private requests ahead
of standard ones when the policy's `admission.private_first` holds. A `QueueTimeout` moves it
to the next candidate: code `queue_timeout` when the bound ran out, `queue_spilled` when the
store told a standard waiter to leave early (a private request took its place, or its
predicted wait no longer fits what is left of its bound).

The lease carries the request's prompt tokens and the plan's route (`RequestContext.plan`):
the store records both with its service-time sample at release, for the estimator.

A slot admission already claimed for the request (`RequestContext.claim`, taken with the
snapshot) is used instead of acquiring when the attempt is on its slot key: no store call at
all. A claim the request does not use is released (`drop_claim`: the executor calls it when
the first attempt is elsewhere and when the request ends). Releases go in the background
(`StateStore.release_nowait`): the response does not wait for the store, and the lease's
expiry covers a process that dies before sending one.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from router.context import RequestContext
from router.errors import QueueTimeout
from router.planner import Candidate
from router.state.base import Lease, Priority, SlotRequest, StateStore, slot_key


class QueueExit(StrEnum):
    TIMEOUT = "queue_timeout"
    SPILLED = "queue_spilled"


class LocalAdmission:
    def __init__(self, store: StateStore, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    async def admit(self, ctx: RequestContext, cand: Candidate) -> Lease:
        key = slot_key(cand.backend, cand.model_id)
        claimed = self.take_claim(ctx, key)
        if claimed is not None:
            claimed.prompt_tokens = ctx.facts.prompt_tokens
            claimed.route = _route(ctx)
            return claimed
        wait = max(0.0, min(cand.max_wait_s, ctx.deadline - self.clock()))
        private = ctx.facts.privacy == "private"
        request = SlotRequest(
            priority=Priority.PRIVATE if private and cand.private_first else Priority.STANDARD,
            predicted_s=cand.pred_service_s,
            spillable=not private and cand.early_spill,
        )
        got = await self.store.acquire_slot(key, cand.slots, wait, request)
        if got is None:
            raise QueueTimeout(
                f"no local slot on '{cand.backend}' within {wait:.1f}s", backend=cand.backend,
                code=QueueExit.TIMEOUT.value)
        if not isinstance(got, Lease):
            raise QueueTimeout(
                f"left the queue of '{cand.backend}' early: its predicted wait no longer fits "
                f"the {wait:.1f}s bound", backend=cand.backend, code=QueueExit.SPILLED.value)
        got.prompt_tokens = ctx.facts.prompt_tokens
        got.route = _route(ctx)
        return got

    def take_claim(self, ctx: RequestContext, key: str) -> Lease | None:
        """The request's claimed slot when it is on `key`; a claim elsewhere is released."""
        claimed, ctx.claim = ctx.claim, None
        if claimed is None or (claimed.key == key and not claimed.released):
            return claimed
        self.store.release_nowait(claimed)
        return None

    def drop_claim(self, ctx: RequestContext) -> None:
        """Release the request's claimed slot if no attempt took it."""
        self.take_claim(ctx, "")

    def release(self, lease: Lease | None) -> None:
        """Give the slot back, in the background (nothing to await, nothing to cancel)."""
        if lease is not None:
            self.store.release_nowait(lease)


def _route(ctx: RequestContext) -> str | None:
    """The route the request's plan runs (its samples predict that route's requests)."""
    return (ctx.plan.route or None) if ctx.plan is not None else None
