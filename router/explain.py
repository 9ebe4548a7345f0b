"""Offline planning for `hybrid-router explain`: the same planner as the server, no I/O.

With no probes and an empty state store, the plan shows what the policy decides for an idle,
healthy, warm fleet; `POST /v1/router/explain` on a running router shows the live decision.
"""

from __future__ import annotations

from typing import Any

from router.errors import RouterError
from router.planner import PlannerState, RequestFacts, plan
from router.policy.schema import Policy, normalise_model_name
from router.tokens import estimate_prompt_tokens
from router.types import ChatRequest, Message, Privacy


async def explain_offline(
    policy: Policy, model: str, privacy: str, prompt_tokens: int, max_tokens: int | None
) -> dict[str, Any]:
    aliases = policy.alias_table()
    hit = aliases.get(model.lower()) or aliases.get(normalise_model_name(model))
    if hit is None:
        return {"error": f"unknown model '{model}' (known: {', '.join(sorted(policy.models))})"}
    logical, alias_private = hit
    cls: Privacy = "private" if privacy == "private" or alias_private else "standard"
    text = "x" * (3 * prompt_tokens)
    request = ChatRequest(model=model, messages=[Message(role="user", content=text)],
                          max_tokens=max_tokens)
    facts = RequestFacts(model=logical, privacy=cls, prompt_tokens=estimate_prompt_tokens(request),
                         max_tokens=max_tokens)
    p = plan(facts, policy, PlannerState())
    err: RouterError | None = p.error
    return {
        "model": logical,
        "privacy": cls,
        "privacy_sources": ["cli"] if privacy == "private"
        else (["model_alias"] if alias_private else []),
        "needed_tokens": p.needed_tokens,
        "route": p.route,
        "reason": p.reason,
        "candidates": [
            {"backend": c.backend, "model_id": c.model_id, "local": c.local, "reason": c.reason,
             "estimated_wait_s": c.est_wait_s}
            for c in p.candidates
        ],
        "excluded": [{"backend": e.backend, "reason": e.reason} for e in p.excluded],
        "error": err.body()["error"] if err else None,
    }
