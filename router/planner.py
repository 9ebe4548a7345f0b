"""The routing decision: a pure function of (request facts, policy, state snapshot).

No I/O and no clock reads: time and every measurement arrive in `PlannerState`. The result is
an ordered list of candidates plus every excluded backend with a typed `Reason` (`reasons.py`;
rendered to strings only at the edge). A backend is planned as local when its config has a
`local_capacity()`; no backend class is named here. Order of the decision:

1. the first route whose `match` fits the request;
2. filter each target by privacy (a private request never gets a non-local candidate, and a
   model a local backend forwards off the premises, such as one of Ollama's cloud models, is
   not local: `ollama_cloud_model`), by the model being served, by the context window, by
   health (breaker) and by budget;
3. local candidates that fit in VRAM and whose estimated wait (`estimator.py`: a quantile of
   the predicted wait distribution) is within the bound come first (shortest wait first,
   across several hosts); a standard request that would queue behind
   `admission.max_waiting_ahead` waiters (default 1: it waits only as the next in line) has
   a bound of 0 there (`queue_wait_<est>ms>0ms` when its estimate fits the bound), unless
   their predicted service drains within `admission.drain_share` (0.1) of its bound; then
   cloud targets (forwarded models included, for standard requests) in policy order; then,
   for standard requests only, local candidates that are cold or over the wait bound (last
   resort).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

from router import estimator
from router.backends.base import ProbeResult
from router.backends.capacity import GB, LocalCapacity
from router.backends.ollama_names import same_model
from router.errors import BudgetExhausted, ContextLengthExceeded, NoLocalCapacity, RouterError
from router.policy.schema import AdmissionConfig, Policy, Route
from router.reasons import (
    LOCAL,
    MODEL_NOT_RESIDENT,
    NO_ROUTE,
    PRIVATE_LOCAL_ONLY,
    VRAM_INSUFFICIENT,
    Reason,
    ReasonCode,
)
from router.state.base import SlotLoad, slot_key
from router.types import Privacy

DEFAULT_LOCAL_CONTEXT = 8192  # Ollama's context when neither /api/ps nor the policy says
DEFAULT_SERVICE_TIME_S = estimator.DEFAULT_SERVICE_TIME_S  # before the first measurement


@dataclass(frozen=True, slots=True)
class RequestFacts:
    model: str  # logical model
    privacy: Privacy
    prompt_tokens: int
    max_tokens: int | None = None
    key_name: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    key_max_queue_wait_s: float | None = None
    num_ctx: int | None = None  # the context window the client asks a local Ollama for


@dataclass(slots=True)
class BackendView:
    healthy: bool = True  # breaker allows traffic
    probe: ProbeResult | None = None  # last probe (local backends)
    budget_exhausted: bool = False


@dataclass(slots=True)
class PlannerState:
    now: float = 0.0
    slots: dict[str, SlotLoad] = field(default_factory=dict)
    backends: dict[str, BackendView] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Candidate:
    backend: str
    model_id: str
    local: bool
    reason: Reason
    est_wait_s: float = 0.0
    max_wait_s: float = 0.0  # how long admission may wait for a local slot
    slots: int = 0  # local parallel slots (0 for cloud)
    context_window: int = 0
    cold: bool = False
    pred_service_s: float | None = None  # local: predicted service time once admitted
    private_first: bool = True  # local: private requests queue ahead of standard ones
    early_spill: bool = True  # local: a standard waiter leaves once it cannot make its bound


@dataclass(frozen=True, slots=True)
class Excluded:
    backend: str
    reason: Reason


@dataclass(slots=True)
class Plan:
    route: str
    privacy: Privacy
    needed_tokens: int
    candidates: list[Candidate]
    excluded: list[Excluded]
    warm: list[tuple[str, str]] = field(default_factory=list)
    error: RouterError | None = None

    @property
    def reason(self) -> Reason:
        if self.candidates:
            return self.candidates[0].reason
        return self.excluded[0].reason if self.excluded else NO_ROUTE


def match_route(policy: Policy, facts: RequestFacts) -> Route | None:
    for route in policy.routes:
        m = route.match
        if m.model is not None:
            models = [m.model] if isinstance(m.model, str) else m.model
            if facts.model not in models:
                continue
        if m.privacy is not None and m.privacy != facts.privacy:
            continue
        if m.api_key is not None:
            keys = [m.api_key] if isinstance(m.api_key, str) else m.api_key
            if facts.key_name not in keys:
                continue
        if any(facts.headers.get(k.lower()) != v for k, v in m.headers.items()):
            continue
        return route
    return None


def estimated_wait(load: SlotLoad, slots: int, cfg: AdmissionConfig | None = None,
                   private: bool = False) -> float:
    """The wait estimate of docs/design.md: the configured quantile (`admission.wait_quantile`)
    of the estimator's wait distribution; 0 when a slot is free."""
    return estimator.wait_quantile(load, slots, cfg or _DEFAULT_ADMISSION, private)


_DEFAULT_ADMISSION = AdmissionConfig()


def _queue_full(load: SlotLoad, slots: int, bound: float, adm: AdmissionConfig) -> bool:
    """Whether a standard request would queue behind `admission.max_waiting_ahead` waiters
    that the slots do not drain, at their predicted service times, within
    `admission.drain_share` of its bound."""
    limit = adm.max_waiting_ahead
    ahead = max(load.queued, len(load.waiting))
    if limit is None or ahead < limit:
        return False
    default = load.service_time_s or DEFAULT_SERVICE_TIME_S
    drain = sum(p or default for _, p in load.waiting) + default * (ahead - len(load.waiting))
    return drain / max(slots, 1) > adm.drain_share * bound


@dataclass(slots=True)
class _LocalFit:
    reason: Reason | None  # None: fits and is ready; else why not preferred
    excluded: bool  # True: not a candidate at all
    cold: bool = False
    window: int = DEFAULT_LOCAL_CONTEXT


def _local_fit(
    policy: Policy, cap: LocalCapacity, view: BackendView, model: str, model_id: str, needed: int,
    num_ctx: int | None = None,
) -> _LocalFit:
    """A requested `num_ctx` is the local window (capped at the model's own); a model loaded
    with another context length must be reloaded for it, so it counts as not resident."""
    spec = policy.models[model]
    probe = view.probe
    loaded = None
    if probe is not None:
        loaded = next((m for m in probe.loaded if same_model(m.model_id, model_id)), None)
    if num_ctx is not None and loaded is not None and loaded.context_length not in (
            None, num_ctx):
        loaded = None
    window = num_ctx or (loaded.context_length if loaded and loaded.context_length else None) or (
        cap.configured_window or DEFAULT_LOCAL_CONTEXT
    )
    window = min(window, spec.context_length)
    if needed > window:
        return _LocalFit(Reason.context(needed, window), True, window=window)
    if loaded is not None:
        if not loaded.fully_on_gpu:
            return _LocalFit(VRAM_INSUFFICIENT, True, window=window)
        return _LocalFit(None, False, window=window)
    need_bytes = spec.vram_gb * GB + spec.kv_bytes_per_token * window
    total = (probe.gpu_total_bytes if probe else None) or cap.gpu_memory_bytes
    if total is not None and need_bytes > total:
        return _LocalFit(VRAM_INSUFFICIENT, True, window=window)
    if probe is None or not probe.ok:
        return _LocalFit(None, False, window=window)  # unknown residency: assume warm
    return _LocalFit(MODEL_NOT_RESIDENT, False, cold=True, window=window)


def plan(facts: RequestFacts, policy: Policy, state: PlannerState) -> Plan:  # noqa: C901
    route = match_route(policy, facts)
    spec = policy.models[facts.model]
    needed = facts.prompt_tokens + (facts.max_tokens or spec.default_max_tokens)
    # With a requested num_ctx and no max_tokens the answer may use the rest of that window
    # (as Ollama does): only the prompt must fit in it.
    local_needed = needed if facts.num_ctx is None or facts.max_tokens is not None else (
        facts.prompt_tokens + 1)
    if route is None:
        return Plan("", facts.privacy, needed, [], [], error=NoLocalCapacity(
            f"no route in the policy matches model '{facts.model}'", code="no_route"))
    private = facts.privacy == "private"
    adm = policy.admission
    if private:
        bound = policy.privacy.private_max_queue_wait_s
    else:
        bound = (
            facts.key_max_queue_wait_s
            if facts.key_max_queue_wait_s is not None
            else route.max_queue_wait_s
        )
    preferred: list[Candidate] = []
    cloud: list[Candidate] = []
    last_resort: list[Candidate] = []
    excluded: list[Excluded] = []
    warm: list[tuple[str, str]] = []
    for name in route.targets:
        cfg = policy.backends[name]
        view = state.backends.get(name) or BackendView()
        model_id = cfg.models.get(facts.model)
        if model_id is None:
            excluded.append(Excluded(name, Reason(ReasonCode.MODEL_NOT_SERVED)))
            continue
        if private and not cfg.local:
            excluded.append(Excluded(name, PRIVATE_LOCAL_ONLY))
            continue
        forwarded = cfg.remote_model_reason(model_id, view.probe) is not None
        if private and forwarded:
            excluded.append(Excluded(name, Reason(ReasonCode.OLLAMA_CLOUD_MODEL)))
            continue
        if not view.healthy:
            excluded.append(Excluded(name, Reason(ReasonCode.LOCAL_UNHEALTHY if cfg.local
                                                  else ReasonCode.UNHEALTHY)))
            continue
        cap = cfg.local_capacity()
        if cap is not None and not forwarded:
            fit = _local_fit(policy, cap, view, facts.model, model_id, local_needed,
                             facts.num_ctx)
            if fit.excluded:
                excluded.append(Excluded(name, fit.reason or Reason(ReasonCode.EXCLUDED)))
                continue
            load = state.slots.get(slot_key(name, model_id)) or SlotLoad()
            wait = estimated_wait(load, cap.slots, adm, private)
            # A standard request behind `max_waiting_ahead` waiters has no bound to wait in.
            limit = bound if private or not _queue_full(load, cap.slots, bound, adm) else 0.0
            local = functools.partial(
                Candidate, name, model_id, True, est_wait_s=wait, slots=cap.slots,
                context_window=fit.window,
                pred_service_s=estimator.predict_service(
                    load, facts.prompt_tokens, facts.max_tokens or spec.default_max_tokens, adm,
                    route.name),
                private_first=adm.private_first, early_spill=adm.early_spill)
            if fit.cold:
                warm.append((name, model_id))
                if private:
                    preferred.append(local(PRIVATE_LOCAL_ONLY, cold=True,
                                           max_wait_s=policy.privacy.load_timeout_s))
                else:
                    last_resort.append(local(MODEL_NOT_RESIDENT, cold=True, max_wait_s=bound))
            elif wait <= limit or private:
                preferred.append(local(PRIVATE_LOCAL_ONLY if private else LOCAL,
                                       max_wait_s=bound))
            else:
                last_resort.append(local(Reason.queue_wait(wait, bound if wait > bound else limit),
                                         max_wait_s=bound))
            continue
        window = min(cfg.context_window or spec.context_length, spec.context_length)
        if needed > window:
            excluded.append(Excluded(name, Reason.context(needed, window)))
            continue
        if view.budget_exhausted and not private:
            excluded.append(Excluded(name, Reason(ReasonCode.BUDGET_EXHAUSTED)))
            continue
        cloud.append(Candidate(name, model_id, False, Reason(ReasonCode.CLOUD),
                               context_window=window))
    preferred.sort(key=lambda c: c.est_wait_s)
    last_resort.sort(key=lambda c: c.est_wait_s)
    if cloud:
        # Why the cloud is first: the best local reason for not going local.
        why = (last_resort[0].reason if last_resort else
               next((e.reason for e in excluded
                     if policy.backends[e.backend].local), Reason(ReasonCode.CLOUD_ROUTE)))
        cloud[0] = Candidate(cloud[0].backend, cloud[0].model_id, False, why,
                             context_window=cloud[0].context_window)
    candidates = preferred + cloud + ([] if private else last_resort)
    result = Plan(route.name, facts.privacy, needed, candidates, excluded, warm)
    if not candidates:
        result.error = _no_candidate_error(facts, needed, excluded)
    return result


def _no_candidate_error(facts: RequestFacts, needed: int, excluded: list[Excluded]) -> RouterError:
    reasons = ", ".join(f"{e.backend}: {e.reason.render()}" for e in excluded) or "no targets"
    codes = [e.reason.code for e in excluded]
    windows = [e.reason.window for e in excluded
               if e.reason.code is ReasonCode.CONTEXT and e.reason.window is not None]
    if windows and len(windows) == len([c for c in codes
                                        if c is not ReasonCode.PRIVATE_LOCAL_ONLY]):
        return ContextLengthExceeded(
            f"this request needs about {needed} tokens (prompt plus max_tokens) but the largest "
            f"context window available to it is {max(windows)} tokens ({reasons})",
            param="messages",
        )
    if facts.privacy == "private":
        return NoLocalCapacity(
            f"no local backend can serve this private request for '{facts.model}' ({reasons}); "
            "private requests are never sent to the cloud",
            retry_after=5,
        )
    if ReasonCode.BUDGET_EXHAUSTED in codes and all(
            c is ReasonCode.BUDGET_EXHAUSTED or c in LOCAL_SHORTFALL for c in codes):
        return BudgetExhausted(f"cloud budget exhausted and no local capacity ({reasons})",
                               retry_after=60)
    return NoLocalCapacity(
        f"no backend can serve '{facts.model}' right now ({reasons})",
        code="no_backend_available",
        retry_after=5,
    )


# Exclusions that mean "no local capacity for this request" (with a spent budget: 429).
LOCAL_SHORTFALL = frozenset({ReasonCode.LOCAL_UNHEALTHY, ReasonCode.VRAM_INSUFFICIENT,
                             ReasonCode.MODEL_NOT_SERVED, ReasonCode.CONTEXT})
