"""The executor's race over a plan's candidates (`Executor._run_candidates`): one attempt at a
time in plan order, failover on an error another backend may fix, and hedged first tokens
(the next eligible candidate started beside a silent one after the hedge delay; the first to
deliver wins, the other is cancelled and audited `hedge_lost`). The rules are the executor's
(its module docstring); this module is their loop.

Fast path: when no hedge can start beside an attempt (hedging is off, the delay would not
come before the deadline, or no later candidate is left in the plan that the context
refusals have not ruled out), the attempt runs in the calling task: no task per attempt, no
slot-grant event, no `asyncio.wait`. Its outcomes are handled exactly as a raced attempt's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from router import tracing
from router.context import AttemptRecord, AttemptStatus, RequestContext
from router.errors import (
    BackendAuthError,
    BackendContextExceeded,
    BackendError,
    BackendModelMissing,
    BackendTimeout,
    CircuitOpened,
    QueueTimeout,
)
from router.failures import final_error
from router.planner import Candidate, Plan
from router.reasons import Reason
from router.state.base import Lease, slot_key

if TYPE_CHECKING:
    from router.executor import Executor

log = logging.getLogger("router.executor")
T = TypeVar("T")

# Errors another backend may fix: fail over. Others (validation, content filter) go back as is.
# A timeout (connect, headers, first event: silence) is never retried on the same backend.
FAILOVER_ERRORS = (BackendAuthError, BackendModelMissing, BackendContextExceeded,
                   BackendTimeout)
_GOES_ON = FAILOVER_ERRORS + (QueueTimeout, CircuitOpened)


@dataclass(slots=True)
class Refused:
    """What context refusals ruled out: the (backend, model) pairs and the largest window."""

    models: set[tuple[str, str]] = field(default_factory=set)
    window: int = 0

    def rules_out(self, cand: Candidate) -> bool:
        if (cand.backend, cand.model_id) in self.models:
            return True  # a context refusal: never resent to the same model
        return bool(self.window and cand.context_window
                    and cand.context_window <= self.window)


@dataclass(slots=True)
class _Running:
    """One candidate in flight: its audit record, its slot grant, what it hedges (if it is a
    hedge)."""

    cand: Candidate
    record: AttemptRecord
    admitted: asyncio.Event | None
    hedge_of: str | None = None


Outcome = tuple[T, Lease | None, float | None]  # (value, lease, slot granted at)


class Race(Generic[T]):
    """One request's run over its plan (see the module)."""

    __slots__ = ("attempt", "ctx", "discard", "eligible", "errors", "ex", "hedged", "keep_lease",
                 "plan", "refused", "running", "target")

    def __init__(self, ex: Executor, ctx: RequestContext, plan: Plan,
                 attempt: Callable[[Candidate], Awaitable[T]], keep_lease: bool,
                 discard: Callable[[T], Awaitable[None]] | None) -> None:
        self.ex = ex
        self.ctx = ctx
        self.plan = plan
        self.attempt = attempt
        self.keep_lease = keep_lease
        self.discard = discard
        self.errors: list[BackendError] = []
        self.refused = Refused()
        self.eligible: Iterator[tuple[int, Candidate]] = ex._eligible(ctx, plan, self.errors,
                                                                      self.refused)
        self.running: dict[asyncio.Task[Outcome[T]], _Running] = {}
        self.hedged = False  # a hedge was considered for the attempt in flight (one at most)
        self.target: str | None = None  # the backend a hedge was started on, if one was

    def _record(self, cand: Candidate, hedge_of: str | None) -> AttemptRecord:
        ex, ctx, errors = self.ex, self.ctx, self.errors
        if errors and hedge_of is None and ex.hooks.on_failover:
            ex.hooks.on_failover(errors[-1].backend, errors[-1].code or "error")
        claim = ctx.claim
        if claim is not None and not (cand.local and claim.key == slot_key(cand.backend,
                                                                          cand.model_id)):
            ex.admission.drop_claim(ctx)  # the first attempt is elsewhere
        record = AttemptRecord(cand.backend, AttemptStatus.OK, hedge=hedge_of is not None)
        ctx.attempts.append(record)
        return record

    def _start(self, cand: Candidate, hedge_of: str | None = None) -> _Running:
        record = self._record(cand, hedge_of)
        run = _Running(cand, record, asyncio.Event(), hedge_of)
        errors = self.errors
        task = asyncio.create_task(self.ex._try(
            self.ctx, cand, self.attempt, record, run.admitted,
            hedge_of or (errors[-1].backend if errors else None)))
        self.running[task] = run
        return run

    def _may_hedge(self, index: int, cand: Candidate) -> float | None:
        """The hedge delay for the attempt about to start on `cand`, or None when no hedge can
        start beside it (then it runs in the calling task)."""
        later = self.plan.candidates[index + 1:]
        refused = self.refused
        if not later or all(refused.rules_out(c) for c in later):
            return None
        delay = self.ex._hedge_after(self.ctx, self.plan, cand)
        if delay is None or delay >= self.ex._remaining(self.ctx):
            return None
        return delay

    async def run(self) -> tuple[T, Candidate, Lease | None]:
        try:
            while True:
                delay: float | None = None
                if not self.running:
                    nxt = next(self.eligible, None)
                    if nxt is None:
                        break
                    index, cand = nxt
                    delay = self._may_hedge(index, cand)
                    if delay is None:
                        served = await self._direct(cand)
                        if served is not None:
                            return served
                        continue
                    self._start(cand)
                served = await self._wait(delay)
                if served is not None:
                    return served
        except BaseException:
            await self._stop_all("")
            raise
        raise final_error(self.ctx, self.errors, self.plan, self.ex._remaining(self.ctx))

    async def _direct(self, cand: Candidate) -> tuple[T, Candidate, Lease | None] | None:
        """The attempt on `cand` in this task (no hedge can start beside it); None when it
        failed in a way the next candidate may fix."""
        record = self._record(cand, None)
        errors = self.errors
        run = _Running(cand, record, None)
        try:
            value, lease, admitted_at = await self.ex._try(
                self.ctx, cand, self.attempt, record, None,
                errors[-1].backend if errors else None)
        except BackendError as exc:
            self._failed(run, exc, alone=True)
            return None
        return await self._served(run, value, lease, admitted_at)

    async def _wait(self, delay: float | None) -> tuple[T, Candidate, Lease | None] | None:
        """Wait for the attempts in flight (and the hedge timer, if `delay` is set or one
        attempt runs with no hedge considered yet); the served result, or None to go on."""
        running = self.running
        ex = self.ex
        timer: asyncio.Task[None] | None = None
        if len(running) == 1 and not self.hedged:
            (only,) = running.values()
            if delay is None:
                delay = ex._hedge_after(self.ctx, self.plan, only.cand)
                if delay is not None and delay >= ex._remaining(self.ctx):
                    delay = None
            if delay is not None and only.admitted is not None:
                timer = asyncio.create_task(self._hedge_timer(only.admitted, delay))
        waiting: set[asyncio.Future[Any]] = set(running)
        if timer is not None:
            waiting.add(timer)
        try:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if timer is not None and not timer.done():
                timer.cancel()
        if timer is not None and timer in done and len(done) == 1:
            (only,) = running.values()
            self.hedged = True
            self.target = self._start_hedge(only)
            return None
        for task in [t for t in running if t in done]:
            run = running.pop(task)
            exc = task.exception()
            if exc is None:
                value, lease, admitted_at = task.result()
                await self._stop_all(AttemptStatus.HEDGE_LOST)
                if self.target is not None and ex.hooks.on_hedge:
                    ex.hooks.on_hedge(self.target,
                                      "won" if run.hedge_of is not None else "lost")
                return await self._served(run, value, lease, admitted_at)
            if not isinstance(exc, BackendError):
                raise exc
            self._failed(run, exc, alone=not running)
        if not running:  # the next candidate may be hedged in its turn
            if self.target is not None and ex.hooks.on_hedge:
                ex.hooks.on_hedge(self.target, "lost")
            self.hedged, self.target = False, None
        return None

    def _failed(self, run: _Running, exc: BackendError, *, alone: bool) -> None:
        """Note a failed attempt; raise its error when nothing else may serve the request
        (beside an attempt still running, that one decides)."""
        self.errors.append(exc)
        if isinstance(exc, BackendContextExceeded):
            self.refused.models.add((run.cand.backend, run.cand.model_id))
            self.refused.window = run.cand.context_window or self.refused.window
        if alone and not (exc.retryable or isinstance(exc, _GOES_ON)):
            raise exc

    async def _stop_all(self, reason: str) -> None:
        running = self.running
        if not running:
            return
        for task in running:
            task.cancel()
        for task, run in list(running.items()):
            try:
                value, lease, _ = await task
            except BaseException:  # noqa: BLE001 - cancelled or failed: slot released
                pass
            else:  # it finished before the cancel landed: give its stream and slot back
                if self.discard is not None:
                    await self.discard(value)
                await self.ex._release(lease)
                await self.ex.breakers.record_success(run.cand.backend)
            if reason and run.record.outcome in (AttemptStatus.OK, AttemptStatus.CANCELLED):
                run.record.outcome = reason
        running.clear()

    async def _hedge_timer(self, admitted: asyncio.Event, delay: float) -> None:
        await admitted.wait()  # a local slot wait is the queue bound's, not the hedge's
        await self.ex.hedge_sleep(delay)

    def _start_hedge(self, primary: _Running) -> str | None:
        """Start the next eligible candidate beside `primary` (a hedge counts against the
        hedged backend's retry budget); returns its backend, or None when none started."""
        ex, ctx = self.ex, self.ctx
        if not ex._budget(primary.cand.backend).withdraw():
            return None  # the retry budget is spent: no hedge
        nxt = next(self.eligible, None)
        if nxt is None:
            return None
        cand = nxt[1]
        log.info("hedging %s with %s (req %s): no first event yet", primary.cand.backend,
                 cand.backend, ctx.request_id)
        tracing.event("hedge", {"backend": cand.backend, "hedged": primary.cand.backend})
        self._start(cand, primary.cand.backend)
        return cand.backend

    async def _served(self, run: _Running, value: T, lease: Lease | None,
                      admitted_at: float | None) -> tuple[T, Candidate, Lease | None]:
        ex, ctx, cand = self.ex, self.ctx, run.cand
        if admitted_at is not None:
            ctx.admitted_at = admitted_at
        if not self.keep_lease:
            await ex._release(lease)
            lease = None
        await ex.breakers.record_success(cand.backend)
        ctx.served_by = cand.backend
        if run.hedge_of is not None:
            ctx.reason = Reason.hedged(run.hedge_of)
        elif self.errors and any(a.failed and a.outcome != AttemptStatus.HEDGE_LOST
                                 for a in ctx.attempts):
            ctx.reason = Reason.failover_after(str(self.errors[-1].code))
        else:
            ctx.reason = cand.reason
        return value, cand, lease
