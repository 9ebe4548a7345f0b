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
    after_probe_success,
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
    assert not b.allows("local") and b.states["local"].opened_by == "request"
    # A request failure opened it: a good probe does not put it on trial ...
    await b.probe_succeeded("local")
    assert not b.allows("local") and b.state_name("local") == "open"
    t[0] += CircuitConfig().local_open_for_s  # ... its open time does
    assert b.allows("local") and b.state_name("local") == "half_open"
    await b.record_success("local")
    assert b.state_name("local") == "closed"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_budget_floor_keeps_sparse_traffic_retrying() -> None:
    """Sparse traffic deposits little: once the reserve is spent, the floor of retries per
    second still lets each failing request retry (it used to get one attempt only)."""
    def granted(min_per_s: float) -> int:
        clock = Clock()
        budget = RetryBudget(ratio=0.2, reserve=10.0, min_per_s=min_per_s, clock=clock)
        n = 0
        for _ in range(40):  # one request with two retries every 5 s
            clock.now += 5.0
            budget.deposit()
            n += budget.withdraw() + budget.withdraw()
        return n

    assert granted(0.0) < 20  # the reserve and the ratio alone: dry after ~10 requests
    assert granted(2.0) == 80


def test_budget_floor_is_a_rate_not_a_reserve() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.0, reserve=0.0, min_per_s=10.0, clock=clock)
    assert sum(budget.withdraw() for _ in range(50)) == 10  # one second's worth at once
    clock.now += 0.5
    assert sum(budget.withdraw() for _ in range(50)) == 5
    clock.now += 100.0  # a long quiet spell does not bank more than a second's worth
    assert sum(budget.withdraw() for _ in range(50)) == 10


def test_budget_floor_zero_is_the_ratio_only() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.5, reserve=0.0, min_per_s=0.0, clock=clock)
    clock.now += 10.0
    assert not budget.withdraw()
    budget.deposit()
    budget.deposit()
    assert budget.withdraw() and not budget.withdraw()


def test_retry_config_floor_default() -> None:
    assert RetryConfig().min_retries_per_s == 10.0


async def test_probe_successes_do_not_reopen_trials_while_requests_fail() -> None:
    """A 503 flap with `/api/version` still answering: the breaker that failed requests
    opened stays open through good probes, and only a successful request closes it."""
    store, clock = MemoryStore(), Clock()
    book = BreakerBook(store, CircuitConfig(failure_threshold=2, local_open_for_s=2.0),
                       {"local": True}, clock)
    for _ in range(2):
        await book.record_failure("local", BackendUnavailable("503"))
    for _ in range(5):  # probes every 0.2 s, all fine
        clock.now += 0.2
        await book.probe_succeeded("local")
        assert not book.allows("local") and book.state_name("local") == "open"
    assert (await store.get_breaker("local")).state == "open"  # nothing shared either
    clock.now += 1.0  # open_for_s over: one trial request, which fails again
    assert book.try_pass("local")
    await book.record_failure("local", BackendUnavailable("503"))
    book.end_attempt("local")
    await book.probe_succeeded("local")
    assert not book.allows("local")
    clock.now += 2.0
    assert book.try_pass("local")
    await book.record_success("local")
    book.end_attempt("local")
    assert book.state_name("local") == "closed" and book.allows("local")


async def test_a_breaker_probes_opened_is_half_opened_by_a_good_probe() -> None:
    store, clock = MemoryStore(), Clock()
    book = BreakerBook(store, CircuitConfig(failure_threshold=2), {"local": True}, clock)
    for _ in range(2):
        await book.record_health_failure("local")
    assert book.states["local"].opened_by == "probe" and not book.allows("local")
    await book.probe_succeeded("local")
    assert book.state_name("local") == "half_open" and book.allows("local")
    # one request failure among the probe failures makes it a request-opened breaker
    book2 = BreakerBook(MemoryStore(), CircuitConfig(failure_threshold=2), {"local": True},
                        clock)
    await book2.record_failure("local", BackendUnavailable("503"))
    await book2.record_health_failure("local")
    assert book2.states["local"].opened_by == "request"
    await book2.probe_succeeded("local")
    assert book2.state_name("local") == "open"


def test_an_open_breaker_from_an_older_record_counts_as_opened_by_requests() -> None:
    assert after_probe_success(BreakerState("open", 5, 0.0, 30.0)) is None
    assert after_probe_success(BreakerState("open", 5, 0.0, 30.0, "probe")) is not None
