"""Routing reasons: a code from a closed set plus the detail behind it, rendered once at the edge.

The planner gives every candidate and every excluded backend a `Reason`; the executor sets the
request's final one (`failover_after=<error code>` when an attempt failed before the serving
one). Code compares codes (`reason.code is ReasonCode.BUDGET_EXHAUSTED`), never strings; the
wire form (`x-router-reason`, explain JSON, audit records, CLI tables) is `render()`, and metric
labels are `code.value`, so numbers never become label values.

    code                 rendered
    local                local
    queue_wait           queue_wait_1800ms>1000ms   (estimated wait > bound, milliseconds)
    context              context_65536>32768        (tokens needed > context window)
    failover_after       failover_after=backend_timeout   (the error code that moved it)
    hedged               hedged=local   (a hedge beside this slow backend answered first)
    anything else        its value, e.g. vram_insufficient
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ReasonCode(StrEnum):
    LOCAL = "local"  # a local backend with a free (or soon free) slot, model resident
    PRIVATE_LOCAL_ONLY = "private_local_only"  # private: local only (also: cloud excluded)
    QUEUE_WAIT = "queue_wait"  # local wait estimate over the bound
    MODEL_NOT_RESIDENT = "model_not_resident"  # cold model: it is being loaded
    VRAM_INSUFFICIENT = "vram_insufficient"  # does not fit, or partly offloaded to CPU
    CONTEXT = "context"  # prompt plus max_tokens over the context window
    LOCAL_UNHEALTHY = "local_unhealthy"  # a local backend's breaker is open
    UNHEALTHY = "unhealthy"  # a cloud backend's breaker is open
    MODEL_NOT_SERVED = "model_not_served"  # the backend has no id for the model
    BUDGET_EXHAUSTED = "budget_exhausted"  # daily cloud spend cap reached
    OLLAMA_CLOUD_MODEL = "ollama_cloud_model"  # the host forwards this model off the premises
    CLOUD = "cloud"  # a cloud candidate after the first
    CLOUD_ROUTE = "cloud_route"  # the route prefers the cloud (no local reason to give)
    FAILOVER_AFTER = "failover_after"  # served after an earlier attempt failed
    HEDGED = "hedged"  # served by a hedge started beside a slow first event
    NO_ROUTE = "no_route"  # no candidate and nothing excluded
    EXCLUDED = "excluded"  # excluded for a reason the planner has no code for


@dataclass(frozen=True, slots=True)
class Reason:
    code: ReasonCode
    wait_ms: int | None = None  # queue_wait: estimated wait
    bound_ms: int | None = None  # queue_wait: the route's (or key's) bound
    needed: int | None = None  # context: tokens the request needs
    window: int | None = None  # context: the largest window on that backend
    cause: str | None = None  # failover_after: the failed attempt's error code; hedged: the
    # slow backend the hedge was started beside

    @classmethod
    def queue_wait(cls, wait_s: float, bound_s: float) -> Reason:
        return cls(ReasonCode.QUEUE_WAIT, wait_ms=_ms(wait_s), bound_ms=_ms(bound_s))

    @classmethod
    def context(cls, needed: int, window: int) -> Reason:
        return cls(ReasonCode.CONTEXT, needed=needed, window=window)

    @classmethod
    def failover_after(cls, cause: str) -> Reason:
        return cls(ReasonCode.FAILOVER_AFTER, cause=cause)

    @classmethod
    def hedged(cls, slow_backend: str) -> Reason:
        return cls(ReasonCode.HEDGED, cause=slow_backend)

    def render(self) -> str:
        """The wire form, e.g. `queue_wait_1800ms>1000ms`."""
        if self.code is ReasonCode.QUEUE_WAIT:
            return f"queue_wait_{self.wait_ms}ms>{self.bound_ms}ms"
        if self.code is ReasonCode.CONTEXT:
            return f"context_{self.needed}>{self.window}"
        if self.code is ReasonCode.FAILOVER_AFTER:
            return f"failover_after={self.cause}"
        if self.code is ReasonCode.HEDGED:
            return f"hedged={self.cause}"
        return self.code.value

    def __str__(self) -> str:
        return self.render()


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


LOCAL = Reason(ReasonCode.LOCAL)
PRIVATE_LOCAL_ONLY = Reason(ReasonCode.PRIVATE_LOCAL_ONLY)
MODEL_NOT_RESIDENT = Reason(ReasonCode.MODEL_NOT_RESIDENT)
VRAM_INSUFFICIENT = Reason(ReasonCode.VRAM_INSUFFICIENT)
NO_ROUTE = Reason(ReasonCode.NO_ROUTE)
