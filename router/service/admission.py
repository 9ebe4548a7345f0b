"""Admission: from a decoded request to a plan, without sending anything.

open access (no keys: loopback clients only) -> authenticate -> resolve the logical model ->
check the key may use it -> classify privacy -> estimate tokens -> snapshot shared state
(slots, breakers, spend) -> plan (pure) -> warm cold models (not for explain).

The snapshot also claims a slot (`StateStore.snapshot(..., claim=)`: one Redis round trip for
both): on the first local target of the request's route, in route order, that has one free
and nobody queued — the candidate the planner puts first when a slot is free. The snapshot's
loads are those before the claim, so the plan is the one it would be without it. When the
plan's first candidate is on that slot key the lease goes on `RequestContext.claim` (local
admission hands it to that attempt instead of acquiring; the executor releases it when no
attempt takes it); else it is released at once, in the background. Explain never claims.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from router.context import RequestContext
from router.errors import ModelNotFound, Unauthorized
from router.planner import BackendView, Plan, PlannerState, RequestFacts, match_route, plan
from router.policy.schema import ApiKey, normalise_model_name
from router.privacy import classify
from router.runtime import Runtime
from router.service.client import ClientContext
from router.state.base import Lease, SlotClaim, StateStore, slot_key
from router.tokens import estimate_prompt_tokens
from router.types import ChatRequest

_LOOPBACK_PREFIXES = ("127.", "::1", "::ffff:127.", "localhost")


def is_loopback(address: str) -> bool:
    return address.startswith(_LOOPBACK_PREFIXES)


@dataclass(slots=True)
class Prepared:
    runtime: Runtime
    ctx: RequestContext
    plan: Plan
    key: ApiKey | None


class Admission:
    def __init__(self, store: StateStore, clock: Callable[[], float], open_remote: bool) -> None:
        self.store = store
        self.clock = clock
        self.open_remote = open_remote

    def check_open_access(self, runtime: Runtime, client: ClientContext, what: str = "it"
                          ) -> None:
        """No API keys configured means open access for loopback clients only."""
        if self.open_remote or not runtime.keys.is_open or is_loopback(client.address):
            return
        raise Unauthorized(
            f"This router has no API keys configured, so {what} serves loopback clients only. "
            "Configure keys (hybrid-router keygen) or set ROUTER_OPEN_REMOTE=true.")

    @staticmethod
    def resolve_model(runtime: Runtime, name: str) -> tuple[str, bool]:
        hit = runtime.aliases.get(name.lower()) or runtime.aliases.get(normalise_model_name(name))
        if hit is None:
            known = ", ".join(sorted(runtime.policy.models))
            raise ModelNotFound(f"The model '{name}' does not exist. Known models: {known}",
                                param="model")
        return hit

    async def prepare(self, runtime: Runtime, request: ChatRequest, client: ClientContext,
                      *, dry_run: bool = False) -> Prepared:
        """Everything up to the plan. `dry_run` (explain) sends nothing, not even a warm-up."""
        self.check_open_access(runtime, client)
        key = runtime.keys.authenticate(client.authorization, client.api_key)
        logical, alias_private = self.resolve_model(runtime, request.model)
        if key is not None:
            runtime.keys.check_model(key, logical)
        decision = classify(
            request,
            header=client.privacy,
            key_default=key.default_privacy if key else None,
            alias_private=alias_private,
            config=runtime.policy.privacy,
            forced_private=client.private_sources,
        )
        facts = RequestFacts(
            model=logical,
            privacy=decision.cls,
            prompt_tokens=estimate_prompt_tokens(request),
            max_tokens=request.max_tokens,
            key_name=key.name if key else None,
            headers=client.headers,
            key_max_queue_wait_s=key.max_queue_wait_s if key else None,
            num_ctx=request.num_ctx,
        )
        now = self.clock()
        ctx = RequestContext(
            request_id=client.request_id,
            request=request,
            facts=facts,
            privacy_sources=tuple(decision.sources),
            started=now,
            deadline=now + runtime.policy.deadline_s,
        )
        claim = None if dry_run else claim_for(runtime, facts)
        state, claimed = await self._snapshot(runtime, logical, key, claim)
        try:
            result = plan(facts, runtime.policy, state)
        except BaseException:
            if claimed is not None:
                self.store.release_nowait(claimed)
            raise
        if claimed is not None:
            self._hand_over(ctx, result, claimed)
        if not dry_run:
            for backend, model_id in result.warm:
                runtime.warm(backend, model_id)
        return Prepared(runtime, ctx, result, key)

    def _hand_over(self, ctx: RequestContext, result: Plan, claimed: Lease) -> None:
        """Keep the claimed slot for the plan's first candidate, or give it back."""
        first = result.candidates[0] if result.candidates and result.error is None else None
        if first is not None and first.local \
                and slot_key(first.backend, first.model_id) == claimed.key:
            self.store.note_prediction(claimed, first.pred_service_s)
            ctx.claim = claimed
        else:
            self.store.release_nowait(claimed)

    async def snapshot(self, runtime: Runtime, logical: str, key: ApiKey | None) -> PlannerState:
        """The planner's view of shared state (no claim)."""
        return (await self._snapshot(runtime, logical, key, None))[0]

    async def _snapshot(self, runtime: Runtime, logical: str, key: ApiKey | None,
                        claim: SlotClaim | None) -> tuple[PlannerState, Lease | None]:
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
        snap = await self.store.snapshot(slot_keys, list(policy.backends), spend_keys, claim)
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
        return PlannerState(now=self.clock(), slots=snap.slots, backends=views), snap.claimed


def claim_for(runtime: Runtime, facts: RequestFacts) -> SlotClaim | None:
    """The slot keys a request may claim at snapshot time: its route's local targets serving
    its model on the premises, breaker closed, in route order (the planner's tie order)."""
    policy = runtime.policy
    route = match_route(policy, facts)
    if route is None:
        return None
    keys = []
    for name in route.targets:
        cfg = policy.backends[name]
        model_id = cfg.models.get(facts.model)
        cap = cfg.local_capacity() if cfg.local and model_id is not None else None
        if cap is None or model_id is None or cap.slots <= 0 \
                or not runtime.breakers.allows(name) \
                or cfg.remote_model_reason(model_id, runtime.prober.results.get(name)):
            continue
        keys.append((slot_key(name, model_id), cap.slots))
    return SlotClaim(tuple(keys)) if keys else None
