"""The one API every client surface calls: `RouterService`.

A surface decodes its wire format into a `ChatRequest` and a `ClientContext`, then calls

    await service.complete(request, client) -> Completed(result, meta, model)
    await service.stream(request, client)   -> OpenedStream (events; aclose releases all)
    await service.explain(request, client)  -> the plan as JSON-ready data (sends nothing)

and encodes the answer back. Behind it: admission (open access, keys, model, privacy, plan;
`admission.py`), runtime enter/leave, the executor, the open-stream registry and the drain
(`streams.py`), and the recording of every outcome (metrics, audit, spend; `recorder.py`).
Errors come out as `RouterError`s carrying `meta` (what the surface shows in its headers); a
surface's own rejections (bad body, client gone) are counted with `record_rejected`. The
operator side — readiness, status, metrics — is `status.py`'s view, exposed here. Reloads swap
in a new `Runtime`; requests keep the one they started on until they leave.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from router import tracing
from router.audit import AuditLog
from router.auth import KeyRing, digest_matches, presented_key
from router.backends.base import LoadedModel
from router.backends.ollama_names import model_key
from router.backends.pool import BlockingPool
from router.errors import PermissionDenied, RouterError, Unauthorized
from router.metrics import Metrics, SlowClient
from router.policy.schema import Policy
from router.route_meta import RouteMeta
from router.runtime import Runtime
from router.service.admission import Admission, Prepared
from router.service.client import ClientContext, Completed, render_reason
from router.service.dashboard import Dashboard
from router.service.model_names import client_model_names
from router.service.model_names import resolve as resolve_model_name
from router.service.recorder import Recorder, error_outcome
from router.service.replicas import ReplicaBeat
from router.service.responses import ResponseStore
from router.service.status import StatusView
from router.service.streams import OpenedStream, StreamRegistry
from router.state.base import StateStore
from router.types import ChatRequest

log = logging.getLogger("router.service")


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
        pool: BlockingPool | None = None,
        open_remote: bool = False,
        admin_key_hash: str | None = None,
        replica_id: str | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.audit = audit or AuditLog(None)
        self.clock = clock
        # This process in the replica registry (heartbeat from `start` to `stop`).
        self.replica = ReplicaBeat(store, lambda: self.runtime.active, replica_id=replica_id)
        self.dashboard = Dashboard(lambda: self.runtime.policy, store, clock,
                                   replica=self.replica.info)
        self.recorder = Recorder(self.metrics, self.audit, store, clock, self.dashboard)
        tracing.setup_from_env()
        self.hooks = self.recorder.hooks
        self._factory = runtime_factory or (
            lambda p: Runtime(p, store, clock=clock, hooks=self.hooks, pool=pool))
        self.runtime = self._factory(policy)
        self.admission = Admission(store, clock, open_remote)
        self.admin_key_hash = admin_key_hash
        self.streams = StreamRegistry()
        self.reloads = {"ok": 0, "failed": 0}
        self.last_reload_error: str | None = None
        self.view = StatusView(lambda: self.runtime, store, self.metrics, lambda: {
            "counts": self.reloads, "last_error": self.last_reload_error})

    @property
    def policy(self) -> Policy:
        return self.runtime.policy

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self.runtime.start()
        await self.replica.start()
        if self.runtime.keys.is_open:
            log.warning("no API keys configured: open access (bind to loopback only)")

    async def stop(self) -> None:
        await self.replica.stop()
        await self.runtime.close()
        await self.store.aclose()

    def begin_drain(self, grace_s: float) -> None:
        """SIGTERM: streams still open near the end of the grace end with an in-band error."""
        self.streams.begin_drain(grace_s)
        self.dashboard.closing = True

    async def reload(self, policy: Policy) -> None:
        new = self._factory(policy)
        await new.start()
        old, self.runtime = self.runtime, new
        self.reloads["ok"] += 1
        self.recorder.reload(ok=True)
        self.last_reload_error = None
        await old.retire()

    def reload_failed(self, error: str) -> None:
        self.reloads["failed"] += 1
        self.last_reload_error = error
        self.recorder.reload(ok=False)
        log.error("policy reload refused, keeping the old policy: %s", error)

    # -- access ----------------------------------------------------------------------------

    def check_open_access(self, client: ClientContext, what: str = "it") -> None:
        """No keys configured: loopback clients only (surfaces call it before reading a body;
        `complete`/`stream`/`explain` check it again)."""
        self.admission.check_open_access(self.runtime, client, what)

    def authorize_client(self, client: ClientContext) -> None:
        """What chat needs, without a request: a valid key, or open access."""
        keys = self.runtime.keys
        if keys.is_open:
            self.check_open_access(client)
            return
        keys.authenticate(client.authorization, client.api_key)

    def authorize_ops(self, client: ClientContext) -> None:
        """Status and metrics: an ops or admin key, ROUTER_ADMIN_KEY, or open access."""
        plaintext = presented_key(client.authorization, client.api_key)
        if plaintext is not None and self.admin_key_hash and digest_matches(
                plaintext, [self.admin_key_hash]):
            return
        keys = self.runtime.keys
        if keys.is_open:
            self.check_open_access(client, "this endpoint")
            return
        key = keys.authenticate(client.authorization, client.api_key)
        if key is None or not KeyRing.may_operate(key):
            raise PermissionDenied("This endpoint needs an ops or admin key.",
                                   code="ops_key_required")

    def authorize_admin(self, client: ClientContext) -> None:
        """Admin calls: a policy key with `admin: true`, or ROUTER_ADMIN_KEY."""
        presented = presented_key(client.authorization, client.api_key)
        if not presented:
            raise Unauthorized("Admin calls need an admin key (Authorization: Bearer ...).")
        candidates = [k.sha256 for k in self.policy.keys if k.admin]
        if self.admin_key_hash:
            candidates.append(self.admin_key_hash)
        if not candidates:
            raise PermissionDenied("Admin calls are disabled: set ROUTER_ADMIN_KEY or give a "
                                   "policy key `admin: true`.", code="admin_disabled")
        if not digest_matches(presented, candidates):
            raise Unauthorized("Invalid admin key.")

    def response_store(self, *, ttl_s: float, max_bytes: int) -> ResponseStore:
        """Stored Responses API conversations, in this service's state store."""
        return ResponseStore(self.store, ttl_s=ttl_s, max_bytes=max_bytes,
                             keys_open=lambda: self.runtime.keys.is_open)

    def served_models(self) -> list[str]:
        """Logical models some backend serves, in policy order."""
        policy = self.policy
        served = {m for cfg in policy.backends.values() for m in cfg.models}
        return [m for m in policy.models if m in served]

    def model_names(self) -> dict[str, str]:
        """Every name a client may send for a served model -> that model (`model_names.py`)."""
        runtime = self.runtime
        return client_model_names(runtime.policy, runtime.aliases, self.served_models())

    def find_model(self, name: str) -> str | None:
        """The served logical model `name` resolves to, as chat resolves it; None if none."""
        logical = resolve_model_name(self.runtime.aliases, name)
        return logical if logical in self.served_models() else None

    def loaded_models(self) -> list[tuple[str, str, LoadedModel]]:
        """What the local backends reported resident at their last probe (Ollama's `/api/ps`):
        (backend, logical model, the loaded model), in policy order; read-only."""
        runtime = self.runtime
        out: list[tuple[str, str, LoadedModel]] = []
        for name, cfg in runtime.policy.backends.items():
            probe = runtime.prober.results.get(name)
            if not cfg.local or probe is None or not probe.ok:
                continue
            by_id = {model_key(model_id): logical for logical, model_id in cfg.models.items()}
            out.extend((name, by_id[model_key(m.model_id)], m) for m in probe.loaded
                       if model_key(m.model_id) in by_id)
        return out

    # -- requests --------------------------------------------------------------------------

    async def complete(self, request: ChatRequest, client: ClientContext) -> Completed:
        prep = await self._plan(request, client)
        runtime, ctx = prep.runtime, prep.ctx
        runtime.enter()
        try:
            with tracing.activate(ctx.request_id):
                result = await runtime.executor.chat(ctx, prep.plan)
        except RouterError as exc:
            raise await self._failed(prep, exc, stream=False) from None
        finally:
            runtime.leave()
        meta = self._meta(prep)
        await self.recorder.finish(prep, status=200, outcome="ok", usage=result.usage)
        return Completed(result, meta, ctx.facts.model, ctx.facts.privacy)

    async def stream(self, request: ChatRequest, client: ClientContext) -> OpenedStream:
        """A stream whose first event has arrived; the caller must `aclose()` it."""
        prep = await self._plan(request, client)
        runtime, ctx = prep.runtime, prep.ctx
        runtime.enter()
        try:
            with tracing.activate(ctx.request_id):
                session = await runtime.executor.open_stream(ctx, prep.plan)
        except RouterError as exc:
            runtime.leave()
            raise await self._failed(prep, exc, stream=True) from None
        except BaseException:
            runtime.leave()
            raise
        return OpenedStream(prep, session, self._meta(prep), self.recorder, self.streams)

    async def explain(self, request: ChatRequest, client: ClientContext) -> dict[str, Any]:
        """The live plan for `request`, as JSON-ready data. Sends nothing upstream."""
        try:
            prep = await self.admission.prepare(self.runtime, request, client, dry_run=True)
        except RouterError as exc:
            exc.meta = RouteMeta(client.request_id)
            raise
        return plan_view(prep)

    def record_rejected(self, outcome: str) -> None:
        """A request the surface refused before calling in (bad body, client gone)."""
        self.recorder.rejected(outcome)

    async def _plan(self, request: ChatRequest, client: ClientContext) -> Prepared:
        tracing.start_request(client.request_id, client.headers, client.dialect)
        try:
            prep = await self.admission.prepare(self.runtime, request, client)
        except RouterError as exc:
            exc.meta = RouteMeta(client.request_id)
            self.recorder.rejected(error_outcome(exc))
            tracing.end_request(client.request_id, outcome=error_outcome(exc),
                                status=exc.status)
            raise
        except BaseException:
            tracing.end_request(client.request_id, outcome="cancelled", status=499)
            raise
        self.dashboard.note_dialect(client.request_id, client.dialect)
        err = prep.plan.error
        if err is not None:
            err.meta = self._meta(prep)
            await self.recorder.finish(prep, status=err.status, outcome=error_outcome(err))
            raise err
        return prep

    async def _failed(self, prep: Prepared, exc: RouterError, *, stream: bool) -> RouterError:
        exc.meta = self._meta(prep)
        await self.recorder.finish(prep, status=exc.status, outcome=error_outcome(exc),
                                   stream=stream)
        return exc

    @staticmethod
    def _meta(prep: Prepared) -> RouteMeta:
        ctx = prep.ctx
        served = next((c.model_id for c in prep.plan.candidates if c.backend == ctx.served_by),
                      None) if ctx.served_by else None
        return RouteMeta(request_id=ctx.request_id, route=prep.plan.route, backend=ctx.served_by,
                         reason=render_reason(ctx.reason or prep.plan.reason), served_model=served)

    # -- the operator's view -----------------------------------------------------------------

    def readiness(self) -> bool:
        return self.view.ready()

    def usable_backends(self) -> list[str]:
        return self.view.usable_backends()

    async def status_view(self) -> dict[str, Any]:
        return await self.view.status()

    async def dashboard_view(self) -> dict[str, Any]:
        """What the live page and `hybrid-router top` show (`dashboard.py`): the status view
        joined with the recent decisions and series. Figures and reasons only, no text."""
        return await self.dashboard.view(await self.view.status())

    async def render_metrics(self) -> tuple[bytes, str]:
        return await self.view.render_metrics()

    def count_slow_client(self, kind: SlowClient) -> None:
        self.metrics.count_slow_client(kind)


def plan_view(prep: Prepared) -> dict[str, Any]:
    """`POST /v1/router/explain`'s answer: the plan, its reasons rendered once."""
    p, ctx = prep.plan, prep.ctx
    return {
        "model": ctx.facts.model,
        "privacy": ctx.facts.privacy,
        "privacy_sources": list(ctx.privacy_sources),
        "estimated_prompt_tokens": ctx.facts.prompt_tokens,
        "needed_tokens": p.needed_tokens,
        "route": p.route,
        "reason": render_reason(p.reason),
        "candidates": [
            {"backend": c.backend, "model_id": c.model_id, "local": c.local,
             "reason": render_reason(c.reason),
             "estimated_wait_s": round(c.est_wait_s, 3), "max_wait_s": c.max_wait_s,
             "cold": c.cold}
            for c in p.candidates
        ],
        "excluded": [{"backend": e.backend, "reason": render_reason(e.reason)}
                     for e in p.excluded],
        "warm": [{"backend": b, "model_id": m} for b, m in p.warm],
        "error": p.error.body()["error"] if p.error else None,
    }


__all__ = ["RouterService", "plan_view"]
