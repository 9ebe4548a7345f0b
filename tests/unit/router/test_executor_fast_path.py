"""The executor's fast path (`hedge_race.py`): an attempt beside which no hedge can start runs in
the calling task (no task, no hedge timer), with the same outcomes as a raced one; an attempt
that may be hedged still runs in its own task with the hedge timer armed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from router.backends.base import BackendCall
from router.errors import BackendTimeout, BackendUnavailable, RouterError
from router.resilience.hedge import LatencyTracker, percentile
from router.types import ChatResult
from tests.fakes import FakeBackend
from tests.unit.router.test_executor import POLICY, ctx, plan_of
from tests.unit.router.test_executor_hedge import setup


@dataclass
class TaskSpy(FakeBackend):
    """Records the task each chat() call ran in."""

    tasks: list[asyncio.Task[object] | None] = field(default_factory=list)

    async def chat(self, call: BackendCall) -> ChatResult:
        self.tasks.append(asyncio.current_task())
        return await super().chat(call)


async def test_a_single_candidate_runs_in_the_calling_task_without_a_hedge_timer() -> None:
    local = TaskSpy("local", local=True)
    ex, store, clock, timer, hedges = setup(local, FakeBackend("bedrock"))
    c = ctx(clock)
    result = await ex.chat(c, plan_of("local"))
    assert result.content == "answer from local"
    assert local.tasks == [asyncio.current_task()]
    assert timer.delays == [] and hedges == []
    assert c.served_by == "local" and store.held() == 0
    assert [(a.backend, a.outcome) for a in c.attempts] == [("local", "ok")]


async def test_with_hedging_off_every_attempt_runs_in_the_calling_task() -> None:
    local = TaskSpy("local", local=True, script=[BackendTimeout("silent", backend="local")])
    cloud = TaskSpy("bedrock")
    ex, store, clock, timer, hedges = setup(local, cloud)
    ex.policy = POLICY.model_copy(update={"hedge": POLICY.hedge.model_copy(
        update={"enabled": False})})
    failovers: list[tuple[str, str]] = []
    ex.hooks.on_failover = lambda b, code: failovers.append((b, code))
    c = ctx(clock)
    result = await ex.chat(c, plan_of("local", "bedrock"))
    assert result.content == "answer from bedrock"
    me = asyncio.current_task()
    assert local.tasks == [me] and cloud.tasks == [me]
    assert timer.delays == [] and failovers == [("local", "backend_timeout")]
    assert c.reason is not None and c.reason.render().startswith("failover_after")
    assert store.held() == 0


async def test_a_candidate_that_may_be_hedged_runs_in_its_own_task() -> None:
    local = TaskSpy("local", local=True)
    ex, store, clock, timer, hedges = setup(local, FakeBackend("bedrock"))
    await ex.chat(ctx(clock), plan_of("local", "bedrock"))
    assert len(local.tasks) == 1 and local.tasks[0] is not asyncio.current_task()
    assert timer.delays == [POLICY.hedge.default_s]


async def test_the_last_candidate_after_a_failover_runs_directly() -> None:
    local = TaskSpy("local", local=True, script=[BackendTimeout("silent", backend="local")])
    cloud = TaskSpy("bedrock")
    ex, store, clock, timer, hedges = setup(local, cloud)
    c = ctx(clock)
    assert (await ex.chat(c, plan_of("local", "bedrock"))).content == "answer from bedrock"
    assert local.tasks[0] is not asyncio.current_task()  # it could have been hedged
    assert cloud.tasks == [asyncio.current_task()]  # nothing left to hedge it with
    assert [(a.backend, a.outcome) for a in c.attempts] == [("local", "backend_timeout"),
                                                            ("bedrock", "ok")]


async def test_a_direct_attempt_that_fails_for_good_raises_as_before() -> None:
    local = TaskSpy("local", local=True, script=[BackendUnavailable("down", backend="local",
                                                                    retryable=False)])
    ex, store, clock, timer, hedges = setup(local, FakeBackend("bedrock"))
    c = ctx(clock)
    with pytest.raises(RouterError) as err:
        await ex.chat(c, plan_of("local"))
    assert err.value.code == "backend_unavailable"
    assert store.held() == 0 and [a.outcome for a in c.attempts] == ["backend_unavailable"]


async def test_a_cancelled_direct_attempt_frees_its_slot() -> None:
    local = FakeBackend("local", local=True, gate=asyncio.Event())
    ex, store, clock, timer, hedges = setup(local, FakeBackend("bedrock"))
    c = ctx(clock)
    calling = asyncio.create_task(ex.chat(c, plan_of("local")))
    for _ in range(20):
        await asyncio.sleep(0)
    assert store.held() == 1
    calling.cancel()
    await asyncio.gather(calling, return_exceptions=True)
    assert [a.outcome for a in c.attempts] == ["cancelled"] and store.held() == 0


def test_the_trackers_sorted_window_gives_the_percentile_of_its_samples() -> None:
    t = LatencyTracker(window=7)
    values = [5.0, 1.0, 3.0, 3.0, 9.0, 2.0, 7.0, 4.0, 3.0, 8.0, 0.5, 6.0]
    for i, v in enumerate(values):
        t.observe("b", "chat", v)
        window = t.samples("b", "chat")
        assert window == values[max(0, i - 6):i + 1]
        assert t.count("b", "chat") == len(window)
        for q in (0.05, 0.5, 0.95):
            assert t.quantile("b", "chat", q) == percentile(window, q)
