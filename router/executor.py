"""Runs a plan: privacy re-check, breaker gate, local admission, retries, failover, deadline.

For each candidate in plan order:
1. re-check privacy at the moment of sending (a private request is never attempted on a
   backend that is not `local: true`, nor on one of Ollama's cloud models, by its tag or as the
   backend last saw it, whatever the plan says);
2. skip it at no cost if its breaker is open;
3. for a local backend, take a slot in the capacity ledger (FIFO wait up to the candidate's
   bound), or the one admission claimed with its snapshot for the plan's first candidate
   (`local_admission.py`); the slot is released on every path, in the background
   (`StateStore.release_nowait`: the response never waits for the store), and a claim no
   attempt took is released when the first attempt goes elsewhere or the request ends;
4. attempt it with retries (`resilience/retry.py`), all inside the request's deadline; a
   timeout (connect, headers, first event: silence) is never retried on the same backend, it
   moves to the next candidate at once (a 503 or a reset is still retried);
5. on a failure that another backend could fix, fail over to the next candidate.

Hedged first tokens: while a candidate has delivered nothing — for a stream its first event (a
reasoning token counts), for a non-streamed call its whole answer (first to answer wins) —
after the hedge delay (`resilience/hedge.py`: the route's `hedge_after_s`, else derived from the
backend's observed first-event latencies; the timer starts once a local slot is granted), the
next eligible candidate starts in parallel. The first to deliver wins; the other is cancelled,
its slot released and its attempt audited as `hedge_lost`; a winning hedge's reason is
`hedged=<slow backend>`; `Hooks.on_hedge(hedge backend, won|lost)` counts it. One hedge per
attempt in flight; a hedge is withdrawn from the hedged backend's retry budget (none when it is
spent); a private request's next eligible candidate is local by the privacy re-check, so only
local candidates are ever hedged for it. A hedge that fails leaves the other attempt running.
The race itself (failover order, hedges, the fast path that runs an attempt no hedge can join
in the calling task) is `hedge_race.py`; this module owns each attempt and its rules.

Context overflow (`BackendContextExceeded`): never resent to the same model; candidates whose
window is not larger than the refusing one's are skipped (an unknown window skips only that
model); when nothing is left the request ends as a 400 `context_length_exceeded`.

Streams: `open_stream` fails over freely until the first event arrives (time-to-first-token
limit applies); after that `StreamSession.events()` (`stream_session.py`) enforces the idle-gap
limit and raises on a cut, stall or malformed stream, so the HTTP layer can end it with an
in-band error and no `[DONE]` — never a truncated answer that looks complete.

The router's own bugs are not outages: an InternalError (RequestBuildError: a backend failed to
build its request) or any other unexpected exception from an attempt ends the request at once
as a 500 `internal_error` — no retry, no failover, no breaker failure, the slot released — and
is logged with its type and code location only (never its message, which may quote a prompt).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from router import tracing
from router.backends.base import Backend, BackendCall
from router.backends.ollama_cloud import is_cloud_tag
from router.context import AttemptRecord, AttemptStatus, RequestContext
from router.errors import (
    BackendError,
    BackendStreamError,
    BackendTimeout,
    CircuitOpened,
)
from router.failures import not_an_outage
from router.hedge_race import FAILOVER_ERRORS as FAILOVER_ERRORS
from router.hedge_race import Race, Refused
from router.local_admission import LocalAdmission
from router.planner import Candidate, Plan
from router.policy.schema import Policy, Route
from router.resilience.circuit import BreakerBook
from router.resilience.hedge import LatencyTracker, hedge_delay
from router.resilience.retry import RetryBudget, call_with_retries
from router.state.base import Lease, StateStore
from router.stream_session import StreamSession as StreamSession
from router.stream_session import aclose_quietly
from router.types import ChatResult, StreamEvent

log = logging.getLogger("router.executor")
T = TypeVar("T")

@dataclass(slots=True)
class Hooks:
    """Callbacks for metrics; all optional, all cheap."""

    on_retry: Callable[[str, BackendError], None] | None = None
    on_failover: Callable[[str, str], None] | None = None
    on_stream_error: Callable[[str, str], None] | None = None
    on_chunk_skipped: Callable[[str], None] | None = None  # a malformed chunk skipped
    on_hedge: Callable[[str, str], None] | None = None  # (backend hedged, outcome: won|lost)
    on_continuation: Callable[[str, str], None] | None = None  # (backend, outcome)


def _kind(ctx: RequestContext) -> str:
    return "stream" if ctx.request.stream else "chat"


class Executor:
    def __init__(
        self,
        *,
        backends: Mapping[str, Backend],
        policy: Policy,
        store: StateStore,
        breakers: BreakerBook,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        hooks: Hooks | None = None,
        hedge_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.backends = backends
        self.policy = policy
        self.store = store
        self.breakers = breakers
        self.clock = clock
        self.sleep = sleep
        self.hooks = hooks or Hooks()
        self.budgets: dict[str, RetryBudget] = {}
        self.admission = LocalAdmission(store, clock)
        self.hedge_sleep = hedge_sleep  # the hedge timer (real time; tests inject one)
        self.latency = LatencyTracker(policy.hedge.window)  # first-event latencies
        self._routes: tuple[list[Route], dict[str, Route]] | None = None  # by name, per policy

    # -- shared pieces -------------------------------------------------------------------

    def _is_local(self, backend: str, model_id: str) -> bool:
        cfg = self.policy.backends.get(backend)
        impl = self.backends.get(backend)
        if not (cfg is not None and cfg.local and impl is not None and impl.local):
            return False
        if is_cloud_tag(model_id):
            return False  # Ollama forwards it to ollama.com
        serves_locally = getattr(impl, "serves_locally", None)
        return not callable(serves_locally) or bool(serves_locally(model_id))

    def _remaining(self, ctx: RequestContext) -> float:
        return ctx.deadline - self.clock()

    def _budget(self, backend: str) -> RetryBudget:
        b = self.budgets.get(backend)
        if b is None:
            retry = self.policy.retry
            b = self.budgets[backend] = RetryBudget(
                retry.budget_ratio, min_per_s=retry.min_retries_per_s, clock=self.clock)
        return b

    def _call(self, ctx: RequestContext, cand: Candidate) -> BackendCall:
        return BackendCall(ctx.request, cand.model_id, ctx.facts.model, ctx.request_id)

    async def _admit(self, ctx: RequestContext, cand: Candidate) -> Lease | None:
        return await self.admission.admit(ctx, cand)

    async def _release(self, lease: Lease | None) -> None:
        self.admission.release(lease)  # sent in the background: nothing to wait for

    def _eligible(self, ctx: RequestContext, plan: Plan, errors: list[BackendError],
                  refused: Refused) -> Iterator[tuple[int, Candidate]]:
        """The plan's candidates that may be attempted now, with their index in the plan,
        lazily (each is checked when it is reached, after the attempts before it ended or
        started)."""
        for index, cand in enumerate(plan.candidates):
            if ctx.facts.privacy == "private" and not self._is_local(cand.backend,
                                                                    cand.model_id):
                log.critical("blocked a private request from non-local backend %s, model %s "
                             "(req %s)", cand.backend, cand.model_id, ctx.request_id)
                continue
            if refused.rules_out(cand):
                continue  # a context refusal: never resent to the same model, nor a smaller one
            if self._remaining(ctx) <= 0:
                return
            if not self.breakers.try_pass(cand.backend):
                errors.append(BackendError("circuit open", backend=cand.backend,
                                           code="circuit_open"))
                continue
            yield index, cand

    async def _try(self, ctx: RequestContext, cand: Candidate,
                   attempt: Callable[[Candidate], Awaitable[T]], record: AttemptRecord,
                   admitted: asyncio.Event | None, failover_from: str | None,
                   ) -> tuple[T, Lease | None, float | None]:
        """One candidate (admission, retries), its slot released on every failure path."""
        lease: Lease | None = None
        admitted_at: float | None = None
        try:
            with tracing.attempt(backend=cand.backend, model_id=cand.model_id,
                                 backend_type=self.policy.backends[cand.backend].type,
                                 logical_model=ctx.facts.model, local=cand.local,
                                 number=len(ctx.attempts), failover_from=failover_from):
                if cand.local:
                    lease = await self._admit(ctx, cand)
                    admitted_at = self.clock()
                if admitted is not None:
                    admitted.set()
                result = await self._with_retries(ctx, cand, attempt, record)
        except BackendError as exc:
            await self._release(lease)
            record.outcome = exc.code or AttemptStatus.ERROR
            raise
        except Exception as exc:  # the router's own: no retry, no failover, no breaker
            await self._release(lease)
            raise not_an_outage(ctx, cand, record, exc)  # noqa: B904 - chained
        except BaseException:
            await self._release(lease)
            record.outcome = AttemptStatus.CANCELLED
            raise
        finally:
            self.breakers.end_attempt(cand.backend)
        return result, lease, admitted_at

    def _hedge_after(self, ctx: RequestContext, plan: Plan, cand: Candidate) -> float | None:
        """The hedge delay for `cand` (resilience/hedge.py), or None when hedging is off."""
        cfg = self.policy.hedge
        if not cfg.enabled:
            return None
        routes = self._routes
        if routes is None or routes[0] is not self.policy.routes:
            routes = self._routes = (self.policy.routes,
                                     {r.name: r for r in reversed(self.policy.routes)})
        route = routes[1].get(plan.route)
        return hedge_delay(cfg, self.latency, cand.backend, _kind(ctx),
                           route_after_s=route.hedge_after_s if route else None,
                           cold=cand.cold)

    async def _run_candidates(
        self,
        ctx: RequestContext,
        plan: Plan,
        attempt: Callable[[Candidate], Awaitable[T]],
        keep_lease: bool,
        discard: Callable[[T], Awaitable[None]] | None = None,
    ) -> tuple[T, Candidate, Lease | None]:
        """The race over the plan's candidates: failover and hedges (`hedge_race.py`)."""
        return await Race(self, ctx, plan, attempt, keep_lease, discard).run()

    async def _with_retries(
        self,
        ctx: RequestContext,
        cand: Candidate,
        attempt: Callable[[Candidate], Awaitable[T]],
        record: AttemptRecord,
    ) -> T:
        def on_retry(exc: BackendError, delay: float) -> None:
            record.retries += 1
            tracing.event("retry", {"error.type": exc.code or "error", "delay_s": delay})
            if self.hooks.on_retry:
                self.hooks.on_retry(cand.backend, exc)

        last: list[BackendError] = []

        async def bounded() -> T:
            if last and not self.breakers.allows(cand.backend):
                # The breaker opened while we were backing off: stop hammering, fail over.
                raise CircuitOpened(f"'{cand.backend}' failed repeatedly: {last[-1].message}",
                                    backend=cand.backend, code=last[-1].code,
                                    status=last[-1].status)
            remaining = self._remaining(ctx)
            if remaining <= 0:
                raise BackendTimeout("request deadline reached", backend=cand.backend,
                                     retryable=False)
            began = self.clock()
            try:
                async with asyncio.timeout(remaining):
                    value = await attempt(cand)
                self.latency.observe(cand.backend, _kind(ctx), self.clock() - began,
                                     cold=cand.cold)
                return value
            except TimeoutError:
                exc: BackendError = BackendTimeout(
                    f"no answer from '{cand.backend}' before the deadline",
                    backend=cand.backend, retryable=False)
                await self.breakers.record_failure(cand.backend, exc)
                raise exc from None
            except BackendError as exc:
                last.append(exc)
                await self.breakers.record_failure(cand.backend, exc)
                if isinstance(exc, BackendTimeout):
                    exc.retryable = False  # silence: the next candidate at once, no retry
                raise

        return await call_with_retries(
            bounded,
            config=self.policy.retry,
            deadline=ctx.deadline,
            clock=self.clock,
            budget=self._budget(cand.backend),
            sleep=self.sleep,
            on_retry=on_retry,
        )

    # -- non-streamed --------------------------------------------------------------------

    async def chat(self, ctx: RequestContext, plan: Plan) -> ChatResult:
        async def attempt(cand: Candidate) -> ChatResult:
            return await self.backends[cand.backend].chat(self._call(ctx, cand))

        ctx.plan = plan
        try:
            result, cand, lease = await self._run_candidates(ctx, plan, attempt,
                                                             keep_lease=True)
        finally:
            self.admission.drop_claim(ctx)  # no attempt took it
        if lease is not None:
            # Service time runs from the slot grant (queueing is what the estimate predicts);
            # the store records it with the release.
            lease.service_time_s = self.clock() - (ctx.admitted_at or ctx.started)
            if result.usage.completion_tokens > 0:  # the estimator's answer-length sample
                lease.output_tokens = result.usage.completion_tokens
            await self._release(lease)
        return result

    # -- streamed ------------------------------------------------------------------------

    async def open_stream(self, ctx: RequestContext, plan: Plan) -> StreamSession:
        async def attempt(cand: Candidate) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
            # Ollama sends nothing while it loads a cold model: allow the load time.
            ttft = self.policy.stream.first_token_timeout_s
            if cand.cold:
                ttft = max(ttft, self.policy.privacy.load_timeout_s)
            agen = self.backends[cand.backend].stream(self._call(ctx, cand))
            try:
                first = await asyncio.wait_for(anext(agen), ttft)
            except TimeoutError:
                await aclose_quietly(agen)
                raise BackendTimeout(f"no first token from '{cand.backend}' within {ttft:g}s",
                                     backend=cand.backend) from None
            except StopAsyncIteration:
                raise BackendStreamError("the stream ended before any token",
                                         backend=cand.backend) from None
            except BaseException:
                await aclose_quietly(agen)
                raise
            return agen, first

        ctx.plan = plan
        async def discard(opened: tuple[AsyncIterator[StreamEvent], StreamEvent]) -> None:
            await aclose_quietly(opened[0])  # a hedge that lost after its first event

        try:
            (agen, first), cand, lease = await self._run_candidates(ctx, plan, attempt,
                                                                    keep_lease=True,
                                                                    discard=discard)
        finally:
            self.admission.drop_claim(ctx)  # no attempt took it
        ctx.first_token_at = self.clock()
        return StreamSession(self, ctx, cand, agen, first, lease)
