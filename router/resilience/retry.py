"""Retries on one backend (the only module that imports tenacity).

Retry is not failover: this retries transient errors on the same backend with exponential
backoff and jitter, honouring `Retry-After` (and AWS throttling hints) up to a cap, for a
bounded number of attempts, never past the request's deadline, and only while the backend's
retry budget allows (so a failing backend is not hammered by many requests at once; a floor
of retries per second keeps sparse traffic retrying). The executor then moves to the next
candidate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from router.errors import BackendContextExceeded, BackendError
from router.policy.schema import RetryConfig

T = TypeVar("T")


class RetryBudget:
    """Retries allowed per backend: a share of the traffic plus a floor per second.

    As in Finagle's and Envoy's retry budgets, two allowances, either of which lets a retry
    through:

    - the ratio: each request deposits `ratio` of a retry (capped at `cap`; the bucket starts
      with `reserve`), so a busy failing backend gets at most that share of extra load;
    - the floor: `min_per_s` retries per second whatever the traffic (a bucket refilled at
      that rate, holding at most one second's worth, at least one), so sparse traffic, which
      deposits little, is not left with a single attempt once the reserve is spent.

    The clock is injected (monotonic seconds); the floor is used before the earned balance.
    """

    def __init__(self, ratio: float, reserve: float = 10.0, cap: float = 100.0,
                 min_per_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ratio = ratio
        self.balance = reserve
        self.cap = cap
        self.min_per_s = min_per_s
        self.clock = clock
        self._floor_cap = max(min_per_s, 1.0) if min_per_s > 0 else 0.0
        self._floor = self._floor_cap
        self._floor_at = clock()

    def deposit(self) -> None:
        self.balance = min(self.cap, self.balance + self.ratio)

    def _refill_floor(self) -> None:
        if self.min_per_s <= 0:
            return
        now = self.clock()
        elapsed = max(0.0, now - self._floor_at)
        self._floor_at = now
        self._floor = min(self._floor_cap, self._floor + elapsed * self.min_per_s)

    def withdraw(self) -> bool:
        self._refill_floor()
        if self._floor >= 1.0:
            self._floor -= 1.0
            return True
        if self.balance >= 1.0:
            self.balance -= 1.0
            return True
        return False


def is_retryable(exc: BaseException) -> bool:
    return (
        isinstance(exc, BackendError)
        and exc.retryable
        and not isinstance(exc, BackendContextExceeded)
    )


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    config: RetryConfig,
    deadline: float,
    clock: Callable[[], float],
    budget: RetryBudget | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_retry: Callable[[BackendError, float], None] | None = None,
) -> T:
    """Run `attempt` until it succeeds, fails non-transiently, or attempts/deadline/budget end.

    Raises the last error unchanged (reraise), so the caller sees the backend's own error.
    """
    if budget is not None:
        budget.deposit()
    # Fast path: most calls succeed at once, and building tenacity's machinery costs more than
    # the rest of the request's routing. Only a retryable failure enters the retry loop, which
    # replays that first failure as its attempt 1, so the policy below sees every attempt.
    try:
        return await attempt()
    except BackendError as exc:
        if not is_retryable(exc) or config.attempts <= 1:
            raise
        first: BackendError | None = exc

    jitter = wait_exponential_jitter(multiplier=config.initial_s, max=config.max_s,
                                     jitter=config.jitter_s)

    def wait(rs: RetryCallState) -> float:
        delay = float(jitter(rs))
        exc = rs.outcome.exception() if rs.outcome else None
        hint = getattr(exc, "retry_after", None)
        if hint:
            delay = max(delay, min(float(hint), config.retry_after_cap_s))
        return delay

    def stop(rs: RetryCallState) -> bool:
        if rs.attempt_number >= config.attempts:
            return True
        if clock() + (rs.upcoming_sleep or 0.0) >= deadline:
            return True
        return budget is not None and not budget.withdraw()

    def before_sleep(rs: RetryCallState) -> None:
        exc = rs.outcome.exception() if rs.outcome else None
        if on_retry is not None and isinstance(exc, BackendError):
            on_retry(exc, rs.upcoming_sleep or 0.0)

    async def replay() -> T:
        nonlocal first
        if first is not None:
            exc, first = first, None
            raise exc
        return await attempt()

    retrying = AsyncRetrying(
        retry=retry_if_exception(is_retryable),
        wait=wait,
        stop=stop,
        sleep=sleep,
        reraise=True,
        before_sleep=before_sleep,
    )
    async for attempt_ctx in retrying:
        with attempt_ctx:
            return await replay()
    raise AssertionError("unreachable")  # pragma: no cover
