"""Planning for `hybrid-router explain`: the same planner as the server.

Offline (no I/O): with no probes and an empty state store, the plan shows what the policy
decides for an idle, healthy, warm fleet. Live (`--url`): asks a running router's
`POST /v1/router/explain`, which plans against its real queues, VRAM and breakers and sends
nothing upstream.

Reasons are rendered to their wire strings here (`Reason.render()`), as in `x-router-reason`.
`notes` says in words what a reason code alone cannot: a local backend whose model id it
forwards off the premises (one of Ollama's cloud models, forwarded to ollama.com) is not local
and never serves private requests (reason `ollama_cloud_model`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
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
        "reason": p.reason.render(),
        "candidates": [
            {"backend": c.backend, "model_id": c.model_id, "local": c.local,
             "reason": c.reason.render(), "estimated_wait_s": c.est_wait_s}
            for c in p.candidates
        ],
        "excluded": [{"backend": e.backend, "reason": e.reason.render()} for e in p.excluded],
        "error": err.body()["error"] if err else None,
        "notes": ollama_cloud_notes(policy, logical),
    }


def ollama_cloud_notes(policy: Policy, logical: str) -> list[str]:
    """One line per backend that forwards `logical` off the premises (Ollama cloud models)."""
    notes = []
    for name, cfg in policy.backends.items():
        model_id = cfg.models.get(logical)
        why = cfg.remote_model_reason(model_id, None) if model_id else None
        if why:
            notes.append(f"{name}: {why}; it is not local and never serves private requests")
    return notes


def explain_live(
    url: str, model: str, privacy: str, prompt_tokens: int, max_tokens: int | None,
    api_key: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model,
                            "messages": [{"role": "user", "content": "x" * (3 * prompt_tokens)}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    headers = {"content-type": "application/json", "x-privacy": privacy}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url.rstrip("/") + "/v1/router/explain",
                                 data=json.dumps(body).encode(), headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except urllib.error.HTTPError as exc:
        err = json.loads(exc.read() or b"{}").get("error") or {}
        return {"error": f"{exc.code}: {err.get('message', exc.reason)}"}
    except (urllib.error.URLError, OSError) as exc:
        return {"error": f"cannot reach {url}: {exc}"}
