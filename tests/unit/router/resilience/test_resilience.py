"""Retry policy and circuit-breaker transitions, with injected clock and sleep."""

from __future__ import annotations

import pytest

from router.errors import (
    BackendContextExceeded,
    BackendRateLimited,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)
from router.policy.schema import CircuitConfig, RetryConfig
from router.resilience.circuit import (
    BreakerBook,
    after_failure,
    counts_as_failure,
    is_open,
)
from router.resilience.retry import RetryBudget, call_with_retries, is_retryable
from router.state.base import BreakerState
from router.state.memory import MemoryStore


class Calls:
    def __init__(self, errors: list[Exception | None]) -> None:
        self.errors = errors
        self.n = 0

    async def __call__(self) -> str:
        self.n += 1
        err = self.errors.pop(0) if self.errors else None
        if err is not None:
            raise err
        return "ok"


async def run(calls: Calls, cfg: RetryConfig | None = None, deadline: float = 1e9,
              budget: RetryBudget | None = None) -> tuple[str, list[float]]:
    slept: list[float] = []

    async def sleep(d: float) -> None:
        slept.append(d)

    out = await call_with_retries(calls, config=cfg or RetryConfig(jitter_s=0), deadline=deadline,
                                  clock=lambda: 0.0, sleep=sleep, budget=budget)
    return out, slept


async def test_retry_after_honoured_and_capped() -> None:
    out, slept = await run(Calls([BackendRateLimited("x", retry_after=2),
                                  BackendRateLimited("x", retry_after=60)]))
    assert out == "ok" and slept[0] == 2.0 and slept[1] == 5.0  # cap 5 s


async def test_backoff_grows_without_hint() -> None:
    with pytest.raises(BackendUnavailable):
        await run(Calls([BackendUnavailable("x")] * 5), RetryConfig(attempts=4, jitter_s=0))


async def test_non_retryable_raised_at_once() -> None:
    calls = Calls([BackendRejected("bad")])
    with pytest.raises(BackendRejected):
        await run(calls)
    assert calls.n == 1


async def test_deadline_stops_retrying() -> None:
    calls = Calls([BackendRateLimited("x", retry_after=3)] * 3)
    with pytest.raises(BackendRateLimited):
        await run(calls, deadline=1.0)
    assert calls.n == 1


async def test_budget_limits_retries() -> None:
    budget = RetryBudget(ratio=0.0, reserve=1.0)
    calls = Calls([BackendUnavailable("x")] * 5)
    with pytest.raises(BackendUnavailable):
        await run(calls, budget=budget)
    assert calls.n == 2  # one retry allowed by the reserve, then the budget is empty


def test_retryable_classification() -> None:
    assert is_retryable(BackendUnavailable("x"))
    assert is_retryable(BackendTimeout("x"))
    assert is_retryable(BackendRateLimited("x"))
    assert not is_retryable(BackendRejected("x"))
    assert not is_retryable(BackendContextExceeded("x"))


def test_breaker_transitions() -> None:
    s = BreakerState()
    s = after_failure(s, 0.0, 2, 30)
    assert s.state == "closed" and s.failures == 1
    s = after_failure(s, 1.0, 2, 30)
    assert s.state == "open" and is_open(s, 10.0) and not is_open(s, 31.5)
    s = after_failure(BreakerState("half_open"), 40.0, 2, 30)
    assert s.state == "open" and s.opened_at == 40.0


def test_local_429_is_not_a_health_failure_but_cloud_429_is() -> None:
    assert not counts_as_failure(BackendRateLimited("x"), local=True)
    assert counts_as_failure(BackendRateLimited("x"), local=False)
    assert not counts_as_failure(BackendRejected("x"), local=False)


async def test_breaker_book_shares_state_through_store() -> None:
    store = MemoryStore()
    t = [0.0]
    a = BreakerBook(store, CircuitConfig(failure_threshold=1), {"local": True}, lambda: t[0])
    b = BreakerBook(store, CircuitConfig(failure_threshold=1), {"local": True}, lambda: t[0])
    await a.record_failure("local", BackendUnavailable("x"))
    snap = await store.snapshot([], ["local"])
    b.update_from_snapshot(snap.breakers)
    assert not b.allows("local")
    await b.probe_succeeded("local")
    assert b.allows("local") and b.state_name("local") == "half_open"
    await b.record_success("local")
    assert b.state_name("local") == "closed"
