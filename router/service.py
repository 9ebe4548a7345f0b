"""The request pipeline between the HTTP surface and the executor.

prepare: authenticate -> resolve the logical model -> classify privacy -> estimate tokens ->
snapshot state -> plan (pure) -> warm cold models. finish: metrics, one audit record (no
prompt text), cloud spend. Also owns the live `Runtime` and policy reloads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from router.audit import AttemptOutcome, AuditLog, AuditRecord, BackendReason
from router.backends.configs import OllamaConfig
from router.context import RequestContext
from router.errors import ModelNotFound, RouterError
from router.executor import Hooks, StreamSession
from router.ids import new_id
from router.metrics import Metrics, reason_class
from router.planner import (
    BackendView,
    Plan,
    PlannerState,
    RequestFacts,
    estimated_wait,
    plan,
)
from router.policy.schema import ApiKey, Policy
from router.privacy import classify
from router.runtime import Runtime
from router.state.base import StateStore, slot_key
from router.tokens import estimate_prompt_tokens
from router.types import ChatRequest, Usage

log = logging.getLogger("router.service")


@dataclass(slots=True)
class Prepared:
    runtime: Runtime
    ctx: RequestContext
    plan: Plan
    key: ApiKey | None


class RouterService:
    def __init__(
        self,
        policy: Policy,
        store: StateStore,
        *,
        metrics: Metrics | None = None,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.monotonic,
        runtime_factory: Callable[[Policy], Runtime] | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.audit = audit or AuditLog(None)
        self.clock = clock
        self.hooks = Hooks(
            on_retry=lambda b, e: self.metrics.retries_total.labels(backend=b).inc(),
            on_failover=lambda b, r: self.metrics.failovers_total.labels(
                from_backend=b, reason=r).inc(),
            on_stream_error=lambda b, k: self.metrics.stream_errors_total.labels(
                backend=b, kind=k).inc(),
        )
        self._factory = runtime_factory or (
            lambda p: Runtime(p, store, clock=clock, hooks=self.hooks))
        self.runtime = self._factory(policy)
        self.reloads = {"ok": 0, "failed": 0}
        self.active_streams: set[StreamSession] = set()
        self._drain_task: asyncio.Task[None] | None = None
        self.last_reload_error: str | None = None

    def begin_drain(self, grace_s: float) -> None:
        """SIGTERM: streams still running shortly before the grace ends get an in-band error
        instead of being cut at the socket (design §7: streams never lie)."""
        if self._drain_task is not None:
            return

        async def drain() -> None:
            await asyncio.sleep(max(0.0, grace_s - min(0.5, grace_s / 4)))
            for session in list(self.active_streams):
                session.interrupt("the router is shutting down; the answer above is incomplete")

        self._drain_task = asyncio.get_running_loop().create_task(drain())

    @property
    def policy(self) -> Policy:
        return self.runtime.policy

    async def start(self) -> None:
        await self.runtime.start()
        if self.runtime.keys.is_open:
            log.warning("no API keys configured: open access (bind to loopback only)")

    async def stop(self) -> None:
        await self.runtime.close()
        await self.store.aclose()

    async def reload(self, policy: Policy) -> None:
        new = self._factory(policy)
        await new.start()
        old, self.runtime = self.runtime, new
        self.reloads["ok"] += 1
        self.metrics.policy_reloads_total.labels(result="ok").inc()
        self.last_reload_error = None
        await old.retire()

    def reload_failed(self, error: str) -> None:
        self.reloads["failed"] += 1
        self.last_reload_error = error
        self.metrics.policy_reloads_total.labels(result="failed").inc()
        log.error("policy reload refused, keeping the old policy: %s", error)

    # -- preparing a request -------------------------------------------------------------

    def resolve_model(self, runtime: Runtime, name: str) -> tuple[str, bool]:
        hit = runtime.aliases.get(name.lower())
        if hit is None:
            from router.policy.schema import normalise_model_name

            hit = runtime.aliases.get(normalise_model_name(name))
        if hit is None:
            known = ", ".join(sorted(runtime.policy.models))
            raise ModelNotFound(f"The model '{name}' does not exist. Known models: {known}",
                                param="model")
        return hit

    async def prepare(
        self, request: ChatRequest, headers: Mapping[str, str], *, dry_run: bool = False
    ) -> Prepared:
        """Everything up to the plan. `dry_run` (explain) sends nothing, not even a warm-up."""
        runtime = self.runtime
        key = runtime.keys.authenticate(headers.get("authorization"), headers.get("x-api-key"))
        logical, alias_private = self.resolve_model(runtime, request.model)
        if key is not None:
            runtime.keys.check_model(key, logical)
        decision = classify(
            request,
            header=headers.get("x-privacy"),
            key_default=key.default_privacy if key else None,
            alias_private=alias_private,
            config=runtime.policy.privacy,
        )
        facts = RequestFacts(
            model=logical,
            privacy=decision.cls,
            prompt_tokens=estimate_prompt_tokens(request),
            max_tokens=request.max_tokens,
            key_name=key.name if key else None,
            headers=headers,
            key_max_queue_wait_s=key.max_queue_wait_s if key else None,
        )
        now = self.clock()
        ctx = RequestContext(
            request_id=headers.get("x-request-id") or new_id("req"),
            request=request,
            facts=facts,
            privacy_sources=tuple(decision.sources),
            started=now,
            deadline=now + runtime.policy.deadline_s,
        )
        state = await self.snapshot(runtime, logical, key)
        result = plan(facts, runtime.policy, state)
        if not dry_run:
            for backend, model_id in result.warm:
                runtime.warm(backend, model_id)
        return Prepared(runtime, ctx, result, key)

    async def snapshot(self, runtime: Runtime, logical: str, key: ApiKey | None) -> PlannerState:
        policy = runtime.policy
        slot_keys = [
            slot_key(name, cfg.models[logical])
            for name, cfg in policy.backends.items()
            if cfg.local and logical in cfg.models
        ]
        spend_keys = [f"backend:{n}" for n, c in policy.backends.items()
                      if c.daily_budget_usd is not None]
        if key is not None and key.daily_budget_usd is not None:
            spend_keys.append(f"key:{key.name}")
        snap = await self.store.snapshot(slot_keys, list(policy.backends), spend_keys)
        runtime.breakers.update_from_snapshot(snap.breakers)
        key_exhausted = bool(key is not None and key.daily_budget_usd is not None
                             and snap.spend_usd.get(f"key:{key.name}", 0.0)
                             >= key.daily_budget_usd)
        views = {}
        for name, cfg in policy.backends.items():
            exhausted = (not cfg.local and key_exhausted) or bool(
                cfg.daily_budget_usd is not None
                and snap.spend_usd.get(f"backend:{name}", 0.0) >= cfg.daily_budget_usd)
            views[name] = BackendView(
                healthy=runtime.breakers.allows(name),
                probe=runtime.prober.results.get(name),
                budget_exhausted=exhausted,
            )
        return PlannerState(now=self.clock(), slots=snap.slots, backends=views)

    def export_load(self, policy: Policy, slots: Mapping[str, Any]) -> None:
        """Queue gauges, set when /metrics is scraped (not on the request path)."""
        m = self.metrics
        for key, load in slots.items():
            backend, model = key.split("|", 1)
            m.local_in_flight.labels(backend=backend, model=model).set(load.in_flight)
            m.local_queued.labels(backend=backend, model=model).set(load.queued)
            cfg = policy.backends.get(backend)
            if isinstance(cfg, OllamaConfig):
                m.local_estimated_wait_seconds.labels(backend=backend, model=model).set(
                    estimated_wait(load, cfg.parallel))

    # -- finishing a request -------------------------------------------------------------

    async def finish(
        self,
        prep: Prepared | None,
        *,
        status: int,
        outcome: str,
        usage: Usage | None = None,
        stream: bool = False,
        request: ChatRequest | None = None,
        request_id: str = "",
    ) -> None:
        """Metrics, audit and spend for one request. Never raises."""
        try:
            await self._finish(prep, status=status, outcome=outcome, usage=usage, stream=stream,
                               request=request, request_id=request_id)
        except Exception:  # noqa: BLE001 - recording must never break a response
            log.exception("recording request outcome failed")

    async def _finish(self, prep: Prepared | None, *, status: int, outcome: str,
                      usage: Usage | None, stream: bool, request: ChatRequest | None,
                      request_id: str) -> None:
        m = self.metrics
        now = self.clock()
        if prep is None:
            m.requests_total.labels(backend="none", route="none", reason="rejected",
                                    outcome=outcome).inc()
            # Rejected before classification (bad input, auth): counted, not audited,
            # since no routing decision was made.
            return
        ctx, p = prep.ctx, prep.plan
        backend = ctx.served_by or "none"
        reason = ctx.reason or p.reason
        m.requests_total.labels(backend=backend, route=p.route or "none",
                                reason=reason_class(reason), outcome=outcome).inc()
        latency = now - ctx.started
        if ctx.served_by:
            m.request_latency_seconds.labels(backend=backend, stream=str(stream).lower()
                                             ).observe(latency)
            if ctx.first_token_at is not None:
                m.ttft_seconds.labels(backend=backend).observe(ctx.first_token_at - ctx.started)
            local = prep.runtime.local.get(backend, False)
            if not local:
                m.spill_total.labels(reason=reason_class(reason)).inc()
            if usage is not None:
                await self._account_spend(prep, backend, local, usage)
        elif ctx.facts.privacy == "private" and status == 503:
            m.private_refused_total.labels(reason="no_local_capacity").inc()
        if not self.audit.enabled:
            return
        self.audit.write(AuditRecord(
            request_id=ctx.request_id,
            key=ctx.facts.key_name,
            privacy=ctx.facts.privacy,
            privacy_sources=list(ctx.privacy_sources),
            model=ctx.facts.model,
            stream=stream,
            route=p.route,
            candidates=[BackendReason(c.backend, c.reason) for c in p.candidates],
            excluded=[BackendReason(e.backend, e.reason) for e in p.excluded],
            attempts=[AttemptOutcome(a.backend, a.outcome,
                                     None if a.outcome == "ok" else a.outcome)
                      for a in ctx.attempts],
            backend=ctx.served_by,
            outcome=outcome,
            status=status,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            latency_ms=round(latency * 1000, 1),
        ))

    async def _account_spend(self, prep: Prepared, backend: str, local: bool,
                             usage: Usage) -> None:
        policy = prep.runtime.policy
        prices = [c.price for n, c in policy.backends.items()
                  if c.price is not None and (n == backend or local)]
        if not prices:
            return
        price = prices[0]
        usd = (usage.prompt_tokens * price.input_per_mtok
               + usage.completion_tokens * price.output_per_mtok) / 1_000_000
        if local:
            self.metrics.local_savings_usd_total.labels(backend=backend).inc(usd)
            return
        self.metrics.cloud_spend_usd_total.labels(backend=backend).inc(usd)
        await asyncio.shield(self.store.add_spend(f"backend:{backend}", usd))
        if prep.key is not None:
            await asyncio.shield(self.store.add_spend(f"key:{prep.key.name}", usd))


def error_outcome(exc: RouterError) -> str:
    return exc.code or exc.type
