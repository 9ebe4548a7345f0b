"""What the live page (`/ui`) and `hybrid-router top` show: recent decisions and small series.

`Dashboard.record` is fed once per finished, planned request by the recorder. It keeps, in
memory and bounded:
- a ring of the last `RING_SIZE` decisions: time, dialect, logical model, privacy class,
  backend, route, reason, outcome, latency, tokens. Never prompt or answer text, never a key;
- one bucket per second for the last `WINDOW_S` seconds: requests and errors per backend,
  time to first token and tokens per second per backend, spills, private requests kept local
  and refused (by reason), requests that waited for a local slot, tokens served locally and
  what they would have cost on the cloud.

`Dashboard.view(status)` joins that with the status document (health, breakers, queues, VRAM,
resident models, the state store) and today's spend against each cap into one JSON-ready
document: what the page's SSE feed sends every second. It also lists the replicas the state
store knows (each one's store health, in-flight requests, seconds since its heartbeat; this
process is always listed) and the slots per local backend and model, which in Redis are
shared by every replica. Hedges and continuations are counted
as 0 until the executor has them.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from router.policy.schema import Policy
from router.state.base import ReplicaInfo, StateStore
from router.types import Usage

__all__ = ["RING_SIZE", "WINDOW_S", "Dashboard", "Decision", "percentile", "spend_caps"]

RING_SIZE = 200
WINDOW_S = 60
WAITED_S = 0.05  # a local slot granted later than this after arrival counts as "waited"
_MAX_PENDING = 4096  # dialects noted for requests in flight (bounded however they end)


@dataclass(frozen=True, slots=True)
class Decision:
    """One finished request as the page lists it (no text of the conversation)."""

    time: float  # wall clock, seconds
    request_id: str
    dialect: str
    model: str
    privacy: str
    route: str | None
    backend: str | None
    local: bool | None
    reason: str | None
    outcome: str
    status: int
    latency_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None
    stream: bool

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class _Second:
    """Everything that finished within one second."""

    at: int
    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    ttft: dict[str, list[float]] = field(default_factory=dict)
    tps: dict[str, list[float]] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    spills: int = 0
    private_local: int = 0
    private_refused: dict[str, int] = field(default_factory=dict)
    waited: int = 0
    local_tokens: int = 0
    local_value_usd: float = 0.0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def spend_caps(policy: Policy) -> list[tuple[str, str, float | None]]:
    """(spend scope, label, daily cap) for each cloud backend and each key with a budget."""
    caps: list[tuple[str, str, float | None]] = [
        (f"backend:{n}", n, c.daily_budget_usd) for n, c in policy.backends.items()
        if not c.local]
    caps += [(f"key:{k.name}", f"key {k.name}", k.daily_budget_usd) for k in policy.keys
             if k.daily_budget_usd is not None]
    return caps


class Dashboard:
    def __init__(self, policy: Callable[[], Policy], store: StateStore,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, *,
                 replica: Callable[[], ReplicaInfo] | None = None) -> None:
        self._policy = policy
        self._replica = replica
        self.store = store
        self.clock = clock
        self.wall = wall
        self.decisions: deque[Decision] = deque(maxlen=RING_SIZE)
        self.seconds: deque[_Second] = deque(maxlen=WINDOW_S)
        self.totals = {"requests": 0, "errors": 0, "spills": 0, "private_local": 0,
                       "private_refused": 0, "waited": 0, "local_tokens": 0,
                       "hedges": 0, "continuations": 0}
        self.local_value_usd = 0.0
        self._dialects: dict[str, str] = {}
        self.closing = False  # set on shutdown: live feeds end so the drain is not held up

    # -- feeding ---------------------------------------------------------------------------

    def note_dialect(self, request_id: str, dialect: str) -> None:
        """The surface a planned request came in on (the facade calls it)."""
        if len(self._dialects) >= _MAX_PENDING:
            self._dialects.pop(next(iter(self._dialects)))
        self._dialects[request_id] = dialect

    def _bucket(self) -> _Second:
        now = int(self.wall())
        if not self.seconds or self.seconds[-1].at != now:
            self.seconds.append(_Second(now))
        return self.seconds[-1]

    def record(self, *, request_id: str, model: str, privacy: str, route: str | None,
               backend: str | None, local: bool | None, reason: str | None, reason_code: str,
               outcome: str, status: int, started: float, first_token_at: float | None,
               admitted_at: float | None, usage: Usage | None, stream: bool,
               price_per_mtok: tuple[float, float] | None) -> None:
        """One finished request (never raises on odd input; the recorder guards it anyway)."""
        now = self.clock()
        latency = max(0.0, now - started)
        self.decisions.append(Decision(
            time=round(self.wall(), 3), request_id=request_id,
            dialect=self._dialects.pop(request_id, "openai"), model=model, privacy=privacy,
            route=route, backend=backend, local=local, reason=reason, outcome=outcome,
            status=status, latency_ms=round(latency * 1000, 1),
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None, stream=stream))
        b = self._bucket()
        t = self.totals
        t["requests"] += 1
        key = backend or "none"
        b.requests[key] = b.requests.get(key, 0) + 1
        b.reasons[reason_code] = b.reasons.get(reason_code, 0) + 1
        if status >= 500 or (outcome != "ok" and backend is not None):
            b.errors[key] = b.errors.get(key, 0) + 1
            t["errors"] += 1
        if backend is not None and first_token_at is not None:
            b.ttft.setdefault(backend, []).append(first_token_at - started)
        if backend is not None and usage is not None and usage.completion_tokens:
            gen_from = first_token_at if first_token_at is not None else (admitted_at or started)
            gen_s = now - gen_from
            if gen_s > 0:
                b.tps.setdefault(backend, []).append(usage.completion_tokens / gen_s)
        if backend is not None and local is False and privacy != "private":
            b.spills += 1
            t["spills"] += 1
        if privacy == "private":
            if backend is not None and local:
                b.private_local += 1
                t["private_local"] += 1
            elif backend is None:  # refused: never sent anywhere; why = the error code
                b.private_refused[outcome] = b.private_refused.get(outcome, 0) + 1
                t["private_refused"] += 1
        if admitted_at is not None and admitted_at - started >= WAITED_S:
            b.waited += 1
            t["waited"] += 1
        if local and usage is not None:
            tokens = usage.prompt_tokens + usage.completion_tokens
            b.local_tokens += tokens
            t["local_tokens"] += tokens
            if price_per_mtok is not None:
                usd = (usage.prompt_tokens * price_per_mtok[0]
                       + usage.completion_tokens * price_per_mtok[1]) / 1_000_000
                b.local_value_usd += usd
                self.local_value_usd += usd

    # -- reading ---------------------------------------------------------------------------

    def _window(self) -> list[_Second | None]:
        """The last WINDOW_S seconds, oldest first (None: nothing finished that second)."""
        now = int(self.wall())
        by_at = {s.at: s for s in self.seconds}
        return [by_at.get(at) for at in range(now - WINDOW_S + 1, now + 1)]

    async def view(self, status: dict[str, Any]) -> dict[str, Any]:
        window = self._window()
        live = [s for s in window if s is not None]
        policy = self._policy()
        backends: dict[str, Any] = {}
        for name, entry in status.get("backends", {}).items():
            reqs = [s.requests.get(name, 0) if s else 0 for s in window]
            errs = sum(s.errors.get(name, 0) for s in live)
            ttft = [v for s in live for v in s.ttft.get(name, ())]
            tps = [v for s in live for v in s.tps.get(name, ())]
            probe = entry.get("probe") or {}
            backends[name] = {
                **entry,
                "healthy": bool(probe.get("ok", True)) and entry.get("breaker") != "open",
                "rps": round(sum(reqs[-10:]) / 10, 2),
                "rps_series": reqs,
                "error_rate": round(errs / sum(reqs), 4) if sum(reqs) else 0.0,
                "ttft_s": _pcts(ttft),
                "ttft_series": _series(window, name, "ttft"),
                "tokens_per_s": _pcts(tps),
                "tps_series": _series(window, name, "tps"),
            }
        served = sum(sum(s.requests.values()) for s in live)
        spills = sum(s.spills for s in live)
        by_reason: dict[str, int] = {}
        by_backend: dict[str, int] = {}
        refused: dict[str, int] = {}
        for s in live:
            for k, v in s.reasons.items():
                by_reason[k] = by_reason.get(k, 0) + v
            for k, v in s.requests.items():
                by_backend[k] = by_backend.get(k, 0) + v
            for k, v in s.private_refused.items():
                refused[k] = refused.get(k, 0) + v
        return {
            "time": round(self.wall(), 3),
            "ready": status.get("ready", False),
            "window_s": WINDOW_S,
            "totals": dict(self.totals),
            "backends": backends,
            "routing": {
                "by_backend": by_backend,
                "by_reason": by_reason,
                "rps_series": [sum(s.requests.values()) if s else 0 for s in window],
                "spill_series": [s.spills if s else 0 for s in window],
                "spill_rate": round(spills / served, 4) if served else 0.0,
                "hedges": self.totals["hedges"],
                "continuations": self.totals["continuations"],
                "private_local": sum(s.private_local for s in live),
                "private_refused": refused,
                "waited": sum(s.waited for s in live),
            },
            "money": await self._money(policy),
            "store": status.get("store", {}),
            "replicas": await self._replicas(),
            "shared_slots": _shared_slots(status),
            "routes": status.get("routes", []),
            # The bound each estimated wait is held against: per route, and for private.
            "wait_bounds": {**{r.name: r.max_queue_wait_s for r in policy.routes},
                            "private": policy.privacy.private_max_queue_wait_s},
            "closing": self.closing,
            "decisions": [d.as_dict() for d in reversed(self.decisions)][:50],
        }

    async def _money(self, policy: Policy) -> dict[str, Any]:
        caps = spend_caps(policy)
        try:
            snap = await self.store.snapshot([], [], [c[0] for c in caps])
            spent = snap.spend_usd
        except Exception:  # noqa: BLE001 - a store outage shows as "unknown", not a broken page
            spent = {}
        return {
            "spend_today": [{"name": label, "spent_usd": round(spent.get(k, 0.0), 6)
                             if k in spent else None, "cap_usd": cap}
                            for k, label, cap in caps],
            "local_tokens": self.totals["local_tokens"],
            "local_value_usd": round(self.local_value_usd, 6),
        }


    async def _replicas(self) -> list[dict[str, Any]]:
        """The live replicas by id; this one always listed (before its first heartbeat, or
        when the store cannot say)."""
        me = self._replica() if self._replica is not None else None
        try:
            listed = await self.store.replicas()
        except Exception:  # noqa: BLE001 - a store outage shows this replica alone
            listed = []
        if me is not None:
            listed = [r for r in listed if r.id != me.id] + [me]
        now = self.wall()
        return [{"id": r.id, "self": me is not None and r.id == me.id,
                 "started": round(r.started, 3),
                 "last_seen_s_ago": round(max(0.0, now - r.last_seen), 1),
                 "store": "degraded" if r.degraded else "ok", "in_flight": r.in_flight}
                for r in sorted(listed, key=lambda r: r.id)]


def _shared_slots(status: dict[str, Any]) -> list[dict[str, Any]]:
    """Per local backend and model: slots in flight and queued, from the state store's
    snapshot (shared by every replica on Redis)."""
    return [{"backend": name, "model": logical, "model_id": q.get("model_id"),
             "in_flight": q.get("in_flight", 0), "queued": q.get("queued", 0),
             "slots": q.get("slots")}
            for name, entry in status.get("backends", {}).items()
            for logical, q in (entry.get("queues") or {}).items()]


def _pcts(values: list[float]) -> dict[str, float | None]:
    return {"p50": _round(percentile(values, 50)), "p95": _round(percentile(values, 95)),
            "n": len(values)}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def _series(window: list[_Second | None], backend: str, what: str) -> list[float | None]:
    """Per second: the median of `what` (ttft or tps) for `backend`, None where none."""
    out: list[float | None] = []
    for s in window:
        values = (s.ttft if what == "ttft" else s.tps).get(backend) if s is not None else None
        out.append(_round(percentile(values, 50)) if values else None)
    return out
