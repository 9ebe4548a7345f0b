"""Hedged first tokens (issue 12 item 2): a slow first event (stream) or answer (whole) gets a
parallel attempt on the next eligible candidate after the hedge delay; the first to deliver
wins, the other is cancelled with its slot released. The hedge timer is injected."""

from __future__ import annotations

import asyncio

from router.context import RequestContext
from router.executor import Executor, Hooks
from router.resilience.circuit import BreakerBook
from router.state.memory import MemoryStore
from tests.fakes import FakeBackend
from tests.unit.router.test_executor import POLICY, Clock, ctx, plan_of


class Timer:
    """The hedge timer: fires when the test says so; records the delays asked for."""

    def __init__(self) -> None:
        self.fire = asyncio.Event()
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await self.fire.wait()


def setup(local: FakeBackend, cloud: FakeBackend,
          ) -> tuple[Executor, MemoryStore, Clock, Timer, list[tuple[str, str]]]:
    store = MemoryStore()
    clock = Clock()
    timer = Timer()
    hedges: list[tuple[str, str]] = []

    async def sleep(d: float) -> None:
        clock.t += d

    breakers = BreakerBook(store, POLICY.circuit, {"local": True, "bedrock": False}, clock)
    ex = Executor(backends={"local": local, "bedrock": cloud}, policy=POLICY, store=store,
                  breakers=breakers, clock=clock, sleep=sleep, hedge_sleep=timer,
                  hooks=Hooks(on_hedge=lambda b, o: hedges.append((b, o))))
    return ex, store, clock, timer, hedges


async def _yield(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_silent_stream_is_rescued_by_a_hedge() -> None:
    local = FakeBackend("local", local=True, gate=asyncio.Event())  # never answers
    cloud = FakeBackend("bedrock")
    ex, store, clock, timer, hedges = setup(local, cloud)
    c = ctx(clock, stream=True)
    opening = asyncio.create_task(ex.open_stream(c, plan_of("local", "bedrock")))
    await _yield()
    assert timer.delays == [POLICY.hedge.default_s]  # no samples yet: the default
    assert not cloud.calls
    timer.fire.set()
    session = await opening
    assert session.candidate.backend == "bedrock" and c.served_by == "bedrock"
    assert c.reason is not None and c.reason.render() == "hedged=local"
    assert [(a.backend, a.outcome, a.hedge) for a in c.attempts] == [
        ("local", "hedge_lost", False), ("bedrock", "ok", True)]
    assert hedges == [("bedrock", "won")]
    assert len(local.calls) == 1
    events = [e async for e in session.events()]
    assert events[-1].finish_reason == "stop"
    assert store.held() == 0  # the loser's local slot went back


async def test_a_slow_whole_answer_is_hedged_and_the_first_answer_wins() -> None:
    local = FakeBackend("local", local=True, gate=asyncio.Event())
    cloud = FakeBackend("bedrock")
    ex, store, clock, timer, hedges = setup(local, cloud)
    c = ctx(clock)
    timer.fire.set()
    result = await ex.chat(c, plan_of("local", "bedrock"))
    assert result.content == "answer from bedrock"
    assert hedges == [("bedrock", "won")] and store.held() == 0


async def test_the_primary_may_still_win_after_a_hedge_started() -> None:
    local = FakeBackend("local", local=True, gate=asyncio.Event())
    cloud = FakeBackend("bedrock", gate=asyncio.Event())
    ex, store, clock, timer, hedges = setup(local, cloud)
    c = ctx(clock)
    timer.fire.set()
    calling = asyncio.create_task(ex.chat(c, plan_of("local", "bedrock")))
    await _yield()
    assert len(cloud.calls) == 1  # the hedge is in flight
    assert local.gate is not None
    local.gate.set()
    result = await calling
    assert result.content == "answer from local" and c.served_by == "local"
    assert c.reason is not None and c.reason.render() == "local"
    assert [(a.backend, a.outcome) for a in c.attempts] == [("local", "ok"),
                                                            ("bedrock", "hedge_lost")]
    assert hedges == [("bedrock", "lost")] and store.held() == 0


async def test_a_private_request_is_never_hedged_to_the_cloud() -> None:
    local = FakeBackend("local", local=True, gate=asyncio.Event())
    cloud = FakeBackend("bedrock")
    ex, store, clock, timer, hedges = setup(local, cloud)
    c: RequestContext = ctx(clock, privacy="private")
    timer.fire.set()
    calling = asyncio.create_task(ex.chat(c, plan_of("local", "bedrock", privacy="private")))
    await _yield()
    assert not cloud.calls and hedges == []
    assert local.gate is not None
    local.gate.set()
    assert (await calling).content == "answer from local"
    assert [a.backend for a in c.attempts] == ["local"]


async def test_no_hedge_once_the_retry_budget_is_spent() -> None:
    local = FakeBackend("local", local=True, gate=asyncio.Event())
    cloud = FakeBackend("bedrock")
    ex, store, clock, timer, hedges = setup(local, cloud)
    budget = ex._budget("local")
    budget.balance, budget._floor, budget.min_per_s = 0.0, 0.0, 0.0
    budget.ratio = 0.0
    c = ctx(clock)
    timer.fire.set()
    calling = asyncio.create_task(ex.chat(c, plan_of("local", "bedrock")))
    await _yield()
    assert not cloud.calls and hedges == []
    calling.cancel()
    await asyncio.gather(calling, return_exceptions=True)
    assert store.held() == 0


async def test_a_client_leaving_cancels_both_attempts_and_frees_the_slot() -> None:
    local = FakeBackend("local", local=True, gate=asyncio.Event())
    cloud = FakeBackend("bedrock", gate=asyncio.Event())
    ex, store, clock, timer, hedges = setup(local, cloud)
    c = ctx(clock)
    timer.fire.set()
    calling = asyncio.create_task(ex.chat(c, plan_of("local", "bedrock")))
    await _yield()
    assert len(cloud.calls) == 1
    calling.cancel()
    await asyncio.gather(calling, return_exceptions=True)
    assert [a.outcome for a in c.attempts] == ["cancelled", "cancelled"]
    assert store.held() == 0


async def test_a_failed_hedge_leaves_the_primary_running() -> None:
    from router.errors import BackendUnavailable
    local = FakeBackend("local", local=True, gate=asyncio.Event())
    cloud = FakeBackend("bedrock", script=[BackendUnavailable("down", backend="bedrock",
                                                              retryable=False)])
    ex, store, clock, timer, hedges = setup(local, cloud)
    c = ctx(clock)
    timer.fire.set()
    calling = asyncio.create_task(ex.chat(c, plan_of("local", "bedrock")))
    await _yield()
    assert local.gate is not None
    local.gate.set()
    assert (await calling).content == "answer from local"
    assert hedges == [("bedrock", "lost")]


def test_the_audit_marks_a_hedge_attempt_only_when_it_is_one() -> None:
    from router.audit import AttemptOutcome
    assert "hedge" not in AttemptOutcome("local", "ok").to_dict()
    hedge = AttemptOutcome("bedrock", "hedge_lost", "hedge_lost", hedge=True)
    assert hedge.to_dict()["hedge"] is True
