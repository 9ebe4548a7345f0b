"""Circuit breaker per backend: closed -> open -> half-open -> closed, with an injected clock.

The transition rules are pure functions over `BreakerState` (so the state can live in any
store, shared by replicas); `BreakerBook` applies them, caches the states read with each
request's snapshot, and writes to the store only on transitions.

- closed: every request allowed; `failure_threshold` consecutive failures open it.
- open: requests skip the backend at no cost until `open_for_s` has passed, then it is
  half-open. A successful probe half-opens a local breaker at once only when probe failures
  alone opened it (`opened_by`): a host whose `/api/version` answers while its inference
  fails (a 503 flap) must not be put back on trial by its probes; a breaker that request
  failures opened closes only on a successful request.
- half-open: one trial request at a time; success closes, failure re-opens.
Local backends use a short `local_open_for_s` and a 429 does not count as a failure for them:
a busy GPU is not a broken one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from router.errors import (
    BackendError,
    BackendRateLimited,
    BackendStreamError,
    BackendTimeout,
    BackendUnavailable,
)
from router.policy.schema import CircuitConfig
from router.state.base import BreakerCause, BreakerState, StateStore

BREAKER_GAUGE = {"closed": 0, "half_open": 1, "open": 2}


def is_open(state: BreakerState, now: float) -> bool:
    """True while the breaker blocks traffic (open and not yet due for a trial)."""
    return state.state == "open" and now < state.opened_at + state.open_for_s


def after_success(state: BreakerState) -> BreakerState:
    return BreakerState()


def _cause_so_far(state: BreakerState) -> BreakerCause | None:
    """An open breaker from a record without `opened_by` counts as opened by requests."""
    if state.opened_by is None and state.state != "closed":
        return "request"
    return state.opened_by


def after_failure(
    state: BreakerState, now: float, threshold: int, open_for_s: float,
    cause: BreakerCause = "request",
) -> BreakerState:
    by: BreakerCause = "request" if "request" in (cause, _cause_so_far(state)) else "probe"
    if state.state in ("open", "half_open"):
        return BreakerState("open", threshold, now, open_for_s, by)
    failures = state.failures + 1
    if failures >= threshold:
        return BreakerState("open", failures, now, open_for_s, by)
    return replace(state, failures=failures, opened_by=by)


def after_probe_success(state: BreakerState) -> BreakerState | None:
    """An open breaker that only probe failures opened goes half-open; anything else stays
    as it is (None)."""
    if state.state == "open" and _cause_so_far(state) == "probe":
        return replace(state, state="half_open")
    return None


def counts_as_failure(error: BackendError, local: bool) -> bool:
    """Health failures only: a rejected request says nothing about the backend's health."""
    if isinstance(error, BackendRateLimited):
        return not local
    return isinstance(error, BackendUnavailable | BackendTimeout | BackendStreamError)


class BreakerBook:
    def __init__(
        self,
        store: StateStore,
        config: CircuitConfig,
        local: dict[str, bool],
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.config = config
        self.local = local
        self.clock = clock
        self.states: dict[str, BreakerState] = {}
        self._trials: set[str] = set()  # backends with a half-open trial in flight here

    def update_from_snapshot(self, states: dict[str, BreakerState]) -> None:
        self.states.update(states)

    def _half_open(self, backend: str) -> bool:
        state = self.states.get(backend)
        return state is not None and state.state != "closed" and not is_open(state, self.clock())

    def allows(self, backend: str) -> bool:
        """Would a request be let through now? (No side effects: planner, /readyz.)"""
        state = self.states.get(backend)
        if state is None or state.state == "closed":
            return True
        return not is_open(state, self.clock()) and backend not in self._trials

    def try_pass(self, backend: str) -> bool:
        """Let one request through, at the moment of sending. Half-open lets one trial at a
        time (per process); the caller must call `end_attempt` when the attempt is over."""
        if not self.allows(backend):
            return False
        if self._half_open(backend):
            self._trials.add(backend)
        return True

    def end_attempt(self, backend: str) -> None:
        self._trials.discard(backend)

    def state_name(self, backend: str) -> str:
        state = self.states.get(backend) or BreakerState()
        if state.state == "open" and not is_open(state, self.clock()):
            return "half_open"
        return state.state

    def _open_for(self, backend: str) -> float:
        return self.config.local_open_for_s if self.local.get(backend) else self.config.open_for_s

    async def record_success(self, backend: str) -> None:
        state = self.states.get(backend)
        if state is None or (state.state == "closed" and state.failures == 0):
            return
        new = after_success(state)
        self.states[backend] = new
        await self.store.set_breaker(backend, new)

    async def record_failure(self, backend: str, error: BackendError) -> None:
        """A request failed on the backend."""
        if not counts_as_failure(error, self.local.get(backend, False)):
            return
        await self._failed(backend, "request")

    async def record_health_failure(self, backend: str) -> None:
        """A health probe of the backend failed."""
        await self._failed(backend, "probe")

    async def _failed(self, backend: str, cause: BreakerCause) -> None:
        state = self.states.get(backend) or BreakerState()
        new = after_failure(state, self.clock(), self.config.failure_threshold,
                            self._open_for(backend), cause)
        self.states[backend] = new
        await self.store.set_breaker(backend, new)

    async def probe_succeeded(self, backend: str) -> None:
        """A cheap probe answered: an open local breaker that probe failures opened goes
        half-open at once; one that request failures opened waits for its trial request."""
        state = self.states.get(backend)
        new = after_probe_success(state) if state is not None else None
        if new is not None:
            self.states[backend] = new
            await self.store.set_breaker(backend, new)
