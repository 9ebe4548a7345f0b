"""Per-request context shared by the service, the executor and the recorders."""

from __future__ import annotations

from dataclasses import dataclass, field

from router.planner import RequestFacts
from router.types import ChatRequest


@dataclass(slots=True)
class AttemptRecord:
    backend: str
    outcome: str  # "ok" or an error code
    retries: int = 0


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
    reason: str = ""
    first_token_at: float | None = None
    admitted_at: float | None = None  # when the serving attempt got its local slot
