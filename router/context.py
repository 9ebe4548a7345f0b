"""Per-request context shared by the service, the executor and the recorders."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from router.planner import Plan, RequestFacts
from router.reasons import Reason
from router.state.base import Lease
from router.types import ChatRequest


class AttemptStatus(StrEnum):
    """Attempt outcomes that are not a backend's error code."""

    OK = "ok"
    ERROR = "error"  # a backend error without a code
    INTERNAL_ERROR = "internal_error"  # the router's own bug: no retry, no failover
    CANCELLED = "cancelled"  # the client went away (or shutdown) mid-attempt
    HEDGE_LOST = "hedge_lost"  # cancelled: a parallel (hedge) attempt delivered first


@dataclass(slots=True)
class AttemptRecord:
    backend: str
    outcome: str  # AttemptStatus.OK, another AttemptStatus, or the backend error's code
    retries: int = 0
    hedge: bool = False  # started as a hedge beside a slow attempt (no first event yet)

    @property
    def failed(self) -> bool:
        return self.outcome != AttemptStatus.OK


@dataclass(slots=True)
class RequestContext:
    request_id: str
    request: ChatRequest
    facts: RequestFacts
    privacy_sources: tuple[str, ...]
    started: float  # monotonic clock
    deadline: float  # monotonic clock
    attempts: list[AttemptRecord] = field(default_factory=list)
    served_by: str | None = None
    reason: Reason | None = None  # the final reason, set by the executor when served
    first_token_at: float | None = None
    admitted_at: float | None = None  # when the serving attempt got its local slot
    plan: Plan | None = None  # the plan being run (set by the executor)
    # The slot admission's snapshot took for the plan's first candidate (service/admission.py):
    # local admission hands it to that attempt, and whoever does not use it releases it.
    claim: Lease | None = None
