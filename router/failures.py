"""How an executor run ends when it does not succeed: the final error once no candidate
served the request, and what a non-backend exception from an attempt becomes (the router's
own RouterError as it is; a bug as a 500 `internal_error`, logged by type and place only).
"""

from __future__ import annotations

import logging

from router.context import AttemptRecord, AttemptStatus, RequestContext
from router.errors import (
    AllBackendsFailed,
    BackendContextExceeded,
    BackendError,
    BudgetExhausted,
    ContextLengthExceeded,
    DeadlineExceeded,
    InternalError,
    NoLocalCapacity,
    QueueTimeout,
    RouterError,
    describe_exception,
)
from router.planner import Candidate, Plan
from router.reasons import ReasonCode

log = logging.getLogger("router.executor")


def not_an_outage(ctx: RequestContext, cand: Candidate, record: AttemptRecord,
                  exc: Exception) -> RouterError:
    """What to raise for a non-BackendError from an attempt: the router's own RouterError as
    it is; a bug (RequestBuildError, anything else) logged by type and place only, as a
    500 internal_error."""
    if isinstance(exc, RouterError) and not isinstance(exc, InternalError):
        record.outcome = exc.code or AttemptStatus.ERROR
        return exc
    record.outcome = AttemptStatus.INTERNAL_ERROR
    if isinstance(exc, InternalError):
        err, where = exc, exc.where
    else:
        where = describe_exception(exc)
        err = InternalError("The router hit an internal error; it has been logged.",
                            backend=cand.backend, where=where)
    log.error("internal error on an attempt to %s (req %s): %s; not retried, no failover",
              cand.backend, ctx.request_id, where or type(exc).__name__)
    return err


def final_error(ctx: RequestContext, errors: list[BackendError], plan: Plan,
                remaining: float) -> RouterError:
    """The error a request ends with when no candidate served it (docs/design.md, Failure
    semantics): deadline, context overflow, private, capacity or budget, the last real error."""
    if remaining <= 0:
        return DeadlineExceeded(
            f"the request's deadline passed after {len(ctx.attempts)} attempt(s)")
    real = [e for e in errors if e.code != "circuit_open"]
    if real and isinstance(real[-1], BackendContextExceeded):
        # Refused for its length with nothing larger left (private requests too): the
        # client's to fix, a clean 400 in its dialect's error shape, not a 502 or 503.
        return ContextLengthExceeded(
            "the request does not fit the context window of any backend that can serve "
            f"it (refused by {real[-1].backend}); shorten the prompt or max_tokens")
    if ctx.facts.privacy == "private":
        detail = "; ".join(f"{e.backend}: {e.code}" for e in errors) or "none available"
        return NoLocalCapacity(
            f"no local backend could serve this private request ({detail}); private "
            "requests are never sent to the cloud", retry_after=5)
    capacity_only = errors and all(isinstance(e, QueueTimeout) or e.code == "circuit_open"
                                   for e in errors)
    if capacity_only and any(e.reason.code is ReasonCode.BUDGET_EXHAUSTED
                             for e in plan.excluded):
        return BudgetExhausted("the daily cloud budget is spent and no local slot freed "
                               "up within the wait bound", retry_after=60)
    if capacity_only:
        return NoLocalCapacity("no local capacity and no other backend available",
                               code="no_backend_available", retry_after=5)
    if not errors:
        return NoLocalCapacity("no backend available", code="no_backend_available",
                               retry_after=5)
    return AllBackendsFailed(real or errors)
