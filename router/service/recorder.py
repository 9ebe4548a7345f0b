"""Finishing a request: metrics, one audit record (no prompt text), cloud spend, and the
live page's decision ring and the request's trace span (`dashboard.py`, `router/tracing.py`).

Also the executor's metric hooks (retries, failovers, stream errors) and the reload counts.
Recording never raises into a response.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from router import tracing
from router.audit import AttemptOutcome, AuditLog, AuditRecord, BackendReason
from router.continuation import ContinuationOutcome
from router.errors import RouterError
from router.executor import Hooks
from router.metrics import Metrics
from router.service.admission import Prepared
from router.service.client import reason_label, render_reason
from router.service.dashboard import Dashboard
from router.state.base import StateStore
from router.types import Usage

log = logging.getLogger("router.service")


def error_outcome(exc: RouterError) -> str:
    """The `outcome` of a request that ended with `exc`: its code, else its type."""
    return exc.code or exc.type


# Attempt outcomes that served (part of) the answer: no error code in the audit record.
_SERVED = frozenset({"ok", *(f"continuation_{o.value}" for o in (
    ContinuationOutcome.PREFILL, ContinuationOutcome.REGENERATED, ContinuationOutcome.RESTARTED))})


class Recorder:
    def __init__(self, metrics: Metrics, audit: AuditLog, store: StateStore,
                 clock: Callable[[], float], dashboard: Dashboard | None = None) -> None:
        self.metrics = metrics
        self.dashboard = dashboard
        self.audit = audit
        self.store = store
        self.clock = clock
        self.hooks = Hooks(
            on_retry=lambda b, e: metrics.retries_total.labels(backend=b).inc(),
            on_failover=lambda b, r: metrics.failovers_total.labels(
                from_backend=b, reason=r).inc(),
            on_stream_error=lambda b, k: metrics.stream_errors_total.labels(
                backend=b, kind=k).inc(),
            on_chunk_skipped=lambda b: metrics.stream_chunks_skipped_total.labels(
                backend=b).inc(),
            on_hedge=lambda b, o: metrics.hedges_total.labels(backend=b, outcome=o).inc(),
            on_continuation=lambda b, o: metrics.stream_continuations_total.labels(
                backend=b, outcome=o).inc(),
        )

    def rejected(self, outcome: str) -> None:
        """Rejected before classification (bad input, auth, client gone): counted, not
        audited, since no routing decision was made."""
        self.metrics.count_request(backend=None, route=None, reason="rejected", outcome=outcome)

    async def finish(self, prep: Prepared, *, status: int, outcome: str,
                     usage: Usage | None = None, stream: bool = False) -> None:
        """Metrics, audit and spend for one planned request. Never raises."""
        try:
            await self._finish(prep, status=status, outcome=outcome, usage=usage, stream=stream)
        except Exception:  # noqa: BLE001 - recording must never break a response
            log.exception("recording request outcome failed")

    async def _finish(self, prep: Prepared, *, status: int, outcome: str,
                      usage: Usage | None, stream: bool) -> None:
        m = self.metrics
        ctx, p = prep.ctx, prep.plan
        label = reason_label(ctx.reason or p.reason)
        m.count_request(backend=ctx.served_by, route=p.route, reason=label, outcome=outcome)
        latency = self.clock() - ctx.started
        if ctx.served_by:
            backend = ctx.served_by
            m.observe_latency(backend, stream, latency)
            if ctx.first_token_at is not None:
                m.observe_ttft(backend, ctx.first_token_at - ctx.started)
            local = prep.runtime.local.get(backend, False)
            if not local:
                m.count_spill(label)
            if usage is not None:
                m.count_tokens(backend, usage.prompt_tokens, usage.completion_tokens)
                await self._account_spend(prep, backend, local, usage)
        elif ctx.facts.privacy == "private" and status == 503:
            m.count_private_refused("no_local_capacity")
        try:
            self._observe(prep, status, outcome, usage, stream, label)
        except Exception:  # noqa: BLE001 - the page must never cost an audit record
            log.exception("feeding the dashboard or the trace failed")
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
            candidates=[BackendReason(c.backend, render_reason(c.reason) or "")
                        for c in p.candidates],
            excluded=[BackendReason(e.backend, render_reason(e.reason) or "")
                      for e in p.excluded],
            attempts=[AttemptOutcome(a.backend, a.outcome,
                                     None if a.outcome in _SERVED else a.outcome,
                                     hedge=a.hedge)
                      for a in ctx.attempts],
            backend=ctx.served_by,
            outcome=outcome,
            status=status,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            latency_ms=round(latency * 1000, 1),
        ))

    def _observe(self, prep: Prepared, status: int, outcome: str, usage: Usage | None,
                 stream: bool, label: str) -> None:
        """The live page's ring and series, and the request's trace span (figures and reasons
        only, never text)."""
        ctx, p, policy = prep.ctx, prep.plan, prep.runtime.policy
        backend = ctx.served_by
        local = prep.runtime.local.get(backend, False) if backend else None
        reason = render_reason(ctx.reason or p.reason)
        if tracing.enabled():
            served = next((c for c in p.candidates if c.backend == backend), None)
            cfg = policy.backends.get(backend) if backend else None
            tracing.end_request(
                ctx.request_id, model=ctx.facts.model, privacy=ctx.facts.privacy,
                backend=backend,
                provider=None if cfg is None else tracing.PROVIDERS.get(cfg.type, cfg.type),
                response_model=served.model_id if served else None, route=p.route,
                reason=reason, outcome=outcome, status=status,
                input_tokens=usage.prompt_tokens if usage else None,
                output_tokens=usage.completion_tokens if usage else None)
        if self.dashboard is None:
            return
        price = next((c.price for n, c in policy.backends.items()
                      if c.price is not None and (n == backend or local)), None)
        self.dashboard.record(
            request_id=ctx.request_id, model=ctx.facts.model, privacy=ctx.facts.privacy,
            route=p.route, backend=backend, local=local, reason=reason, reason_code=label,
            outcome=outcome, status=status, started=ctx.started,
            first_token_at=ctx.first_token_at, admitted_at=ctx.admitted_at, usage=usage,
            stream=stream, price_per_mtok=None if price is None else (
                price.input_per_mtok, price.output_per_mtok))

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

    def reload(self, ok: bool) -> None:
        self.metrics.policy_reloads_total.labels(result="ok" if ok else "failed").inc()
