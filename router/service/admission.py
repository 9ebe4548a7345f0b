"""Admission: from a decoded request to a plan, without sending anything.

open access (no keys: loopback clients only) -> authenticate -> resolve the logical model ->
check the key may use it -> classify privacy -> estimate tokens -> snapshot shared state
(slots, breakers, spend) -> plan (pure) -> warm cold models (not for explain).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from router.context import RequestContext
from router.errors import ModelNotFound, Unauthorized
from router.planner import BackendView, Plan, PlannerState, RequestFacts, plan
from router.policy.schema import ApiKey, normalise_model_name
from router.privacy import classify
from router.runtime import Runtime
from router.service.client import ClientContext
from router.state.base import StateStore, slot_key
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
