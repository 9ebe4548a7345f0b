"""The state-store interface: local capacity slots, breaker state, service times, spend.

Everything the router must agree on across replicas goes through a `StateStore`. The memory
store (`memory.py`) serves one process; the Redis store (`redis_store.py`) serves several.
Keys are plain strings built by `slot_key()`; values are small dataclasses.

Blobs (`put_blob` / `get_blob` / `delete_blob`) are small JSON texts kept for a TTL (stored
Responses API conversations): a blob past its TTL is gone, and the memory store also bounds
the total size it keeps (oldest first out).

Replicas (`heartbeat` / `replicas`): each router process writes a small `ReplicaInfo` every few
seconds with a TTL; `replicas()` lists the live ones (the memory store lists only itself, the
Redis store every replica on the same Redis and prefix).

Contract of the capacity ledger (docs/design.md, Routing signals):
- `acquire_slot(key, slots, timeout_s)` takes a slot at once when fewer than `slots` are in
  flight and nobody queued earlier is waiting; otherwise it waits in FIFO order up to
  `timeout_s` and returns None if the wait ran out. It never lets more than `slots` be held.
- `release_slot(lease)` is idempotent and must be called on every path (success, error,
  timeout, cancellation); the executor does it in a `finally`.
- `release_nowait(lease)` is the same release without waiting for it: the request path calls
  it after the response, so the release (and the service-time sample it carries) costs the
  request no round trip. The Redis store sends it in the background, batched with the other
  releases of the same moment; one the store never gets to send (a crash) is covered by the
  lease's expiry. A clean `aclose` sends the pending ones first.
- `snapshot(..., claim=SlotClaim(...))` also takes a slot at once, in the same operation (one
  Redis round trip for both), on the first of the claim's keys that has one free and nobody
  queued — exactly the immediate grant of `acquire_slot`; it never queues. The lease comes
  back as `StoreSnapshot.claimed` (None when no key had room); the loads in the snapshot are
  those before the claim, so the planner decides as it would without one. A claimed lease is
  an ordinary lease: whoever does not use it must release it. `note_prediction(lease, s)`
  records the predicted service time of a claimed lease once the plan knows it.
- A waiter that is cancelled leaves the queue without taking a slot.
- Queue order (`SlotRequest.priority`): private waiters ahead of standard ones, FIFO within a
  class. A spillable (standard) waiter is told to leave — `acquire_slot` returns `SPILLED` —
  as soon as the store's re-evaluation (on every arrival and release, `queue_model.py`)
  predicts that its turn comes after its bound (`timeout_s`) ends; private waiters are never
  told to leave. Requests without a `SlotRequest` are standard, FIFO and never spilled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, Literal, Protocol

BreakerName = Literal["closed", "open", "half_open"]
# What the failures counted since the breaker last closed came from: "request" as soon as one
# of them was a request, else "probe"; None while none was counted (or an older record).
BreakerCause = Literal["request", "probe"]


def slot_key(backend: str, model_id: str) -> str:
    return f"{backend}|{model_id}"


class Priority(IntEnum):
    """Queue class of a slot request: lower goes first."""

    PRIVATE = 0
    STANDARD = 1


@dataclass(frozen=True, slots=True)
class SlotRequest:
    """What the queue keeps about one request besides its place (priority class, prediction)."""

    priority: Priority = Priority.STANDARD
    predicted_s: float | None = None  # predicted service time once it holds a slot
    spillable: bool = False  # may be told to leave the queue (standard requests)


@dataclass(frozen=True, slots=True)
class SlotClaim:
    """Ask `snapshot` to take a slot at once on the first of `keys` with one free."""

    keys: tuple[tuple[str, int], ...]  # (slot key, slots) in the order to try


class Spilled:
    """`acquire_slot`'s answer to a waiter told to leave the queue (see the contract)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SPILLED"


SPILLED: Final = Spilled()


@dataclass(slots=True)
class Lease:
    key: str
    token: str  # unique per acquisition
    released: bool = False
    # Set before release on success: the store folds it into the key's service-time estimate
    # and its window of recent samples in the same operation (one Redis round trip fewer).
    service_time_s: float | None = None
    prompt_tokens: int | None = None  # set at admission
    output_tokens: int | None = None  # set by whoever saw the usage, before release
    first_token_s: float | None = None  # time to first token, when known
    predicted_s: float | None = None  # what admission predicted for its service time
    route: str | None = None  # the policy route that served it: set at admission


@dataclass(frozen=True, slots=True)
class ServiceSample:
    """One finished request on a slot key (the estimator's raw material)."""

    service_s: float
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    first_token_s: float | None = None
    route: str | None = None  # the policy route that served it (None: not recorded)


@dataclass(slots=True)
class SlotLoad:
    in_flight: int = 0
    queued: int = 0
    service_time_s: float | None = None  # moving estimate; None until the first sample
    # The estimator's state: requests in service as (elapsed s, predicted s or None), waiters
    # in queue order as (priority, predicted s or None), and recent samples (newest first).
    running: tuple[tuple[float, float | None], ...] = ()
    waiting: tuple[tuple[int, float | None], ...] = ()
    samples: tuple[ServiceSample, ...] = ()


SAMPLE_WINDOW = 64  # samples kept per slot key


@dataclass(slots=True)
class BreakerState:
    state: BreakerName = "closed"
    failures: int = 0  # consecutive failures while closed
    opened_at: float = 0.0  # clock time the breaker last opened
    open_for_s: float = 0.0
    opened_by: BreakerCause | None = None  # a probe success half-opens only a "probe" one


@dataclass(slots=True)
class StoreSnapshot:
    """What the planner reads: one consistent-enough picture, taken in one round trip."""

    slots: dict[str, SlotLoad] = field(default_factory=dict)
    breakers: dict[str, BreakerState] = field(default_factory=dict)
    spend_usd: dict[str, float] = field(default_factory=dict)  # spend key -> today's USD
    claimed: Lease | None = None  # the slot a `SlotClaim` took, if it took one


@dataclass(slots=True)
class ReplicaInfo:
    """One router process as the replica registry keeps it (wall-clock seconds)."""

    id: str
    started: float
    last_seen: float
    degraded: bool = False  # this replica's view of the shared store
    in_flight: int = 0  # requests it is serving

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "started": self.started, "last_seen": self.last_seen,
                "degraded": self.degraded, "in_flight": self.in_flight}

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> ReplicaInfo:
        """Parse a stored record; raises ValueError/TypeError/KeyError on a malformed one."""
        started, seen, flight = raw["started"], raw["last_seen"], raw.get("in_flight", 0)
        if not isinstance(started, int | float) or not isinstance(seen, int | float) \
                or not isinstance(flight, int):
            raise TypeError("malformed replica record")
        return cls(str(raw["id"]), float(started), float(seen), bool(raw.get("degraded")),
                   flight)


class StateStore(Protocol):
    kind: str  # "memory" or "redis"

    async def acquire_slot(self, key: str, slots: int, timeout_s: float,
                           request: SlotRequest | None = None) -> Lease | Spilled | None: ...

    async def release_slot(self, lease: Lease) -> None: ...

    def release_nowait(self, lease: Lease) -> None:
        """`release_slot` without waiting for it (sent in the background)."""
        ...

    def note_prediction(self, lease: Lease, predicted_s: float | None) -> None:
        """Set a held lease's predicted service time (the queue model reads it)."""
        ...

    async def record_service_time(self, key: str, seconds: float) -> None: ...

    async def get_breaker(self, backend: str) -> BreakerState: ...

    async def set_breaker(self, backend: str, state: BreakerState) -> None: ...

    async def add_spend(self, spend_key: str, usd: float) -> float:
        """Add to today's spend for `spend_key` (e.g. `backend:bedrock`, `key:team-a`) and
        return the new total."""
        ...

    async def put_blob(self, key: str, data: str, ttl_s: float) -> None:
        """Keep `data` under `key` for `ttl_s` seconds (replacing any earlier value)."""
        ...

    async def get_blob(self, key: str) -> str | None:
        """The value under `key`, or None when absent or expired."""
        ...

    async def delete_blob(self, key: str) -> bool:
        """Remove `key`; True when it was there."""
        ...

    async def heartbeat(self, info: ReplicaInfo, ttl_s: float) -> None:
        """Record this replica as live for `ttl_s` seconds (replacing its earlier record)."""
        ...

    async def replicas(self) -> list[ReplicaInfo]:
        """The replicas whose last heartbeat has not expired, by id."""
        ...

    async def snapshot(
        self, slot_keys: Sequence[str], backends: Sequence[str], spend_keys: Sequence[str] = (),
        claim: SlotClaim | None = None,
    ) -> StoreSnapshot: ...

    def status(self) -> dict[str, object]:
        """Small JSON-able description for /status (kind, degraded?, ...)."""
        ...

    async def aclose(self) -> None: ...
