"""Executor: retries, failover, privacy re-check, admission and the streaming contract,
with scripted in-process backends and no real sleeps."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from router.context import RequestContext
from router.errors import (
    AllBackendsFailed,
    BackendContextExceeded,
    BackendError,
    BackendRateLimited,
    BackendRejected,
    BackendStreamError,
    BackendTimeout,
    BackendUnavailable,
    NoLocalCapacity,
)
from router.executor import Executor
from router.planner import Candidate, Plan, RequestFacts
from router.policy.loader import parse_policy
from router.reasons import Reason, ReasonCode
from router.resilience.circuit import BreakerBook
from router.state.memory import MemoryStore
from router.types import ChatRequest, Message
from tests.fakes import FakeBackend


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


POLICY = parse_policy({
    "models": {"gpt-oss-20b": {"vram_gb": 14}},
    "backends": {
        "local": {"type": "ollama", "parallel": 1, "models": {"gpt-oss-20b": "gpt-oss:20b"}},
        "bedrock": {"type": "bedrock", "models": {"gpt-oss-20b": "openai.gpt-oss-20b-1:0"}},
    },
    "routes": [{"name": "r", "targets": ["local", "bedrock"]}],
    "retry": {"attempts": 3, "initial_s": 0.1, "max_s": 1},
    "circuit": {"failure_threshold": 2, "open_for_s": 30, "local_open_for_s": 2},
    "stream": {"first_token_timeout_s": 5, "idle_timeout_s": 5},
})


def setup(local: FakeBackend | None = None, cloud: FakeBackend | None = None,
          ) -> tuple[Executor, MemoryStore, Clock, list[float], dict[str, Any]]:
    store = MemoryStore()
    clock = Clock()
    slept: list[float] = []

    async def sleep(d: float) -> None:
        slept.append(d)
        clock.t += d

    backends = {"local": local or FakeBackend("local", local=True),
                "bedrock": cloud or FakeBackend("bedrock")}
    breakers = BreakerBook(store, POLICY.circuit, {"local": True, "bedrock": False}, clock)
    ex = Executor(backends=backends, policy=POLICY, store=store, breakers=breakers,
                  clock=clock, sleep=sleep)
    return ex, store, clock, slept, backends


def ctx(clock: Clock, privacy: str = "standard", stream: bool = False) -> RequestContext:
    req = ChatRequest(model="gpt-oss-20b", messages=[Message(role="user", content="hi")],
                      stream=stream)
    facts = RequestFacts(model="gpt-oss-20b", privacy=privacy, prompt_tokens=5)  # type: ignore[arg-type]
    return RequestContext("r1", req, facts, (), clock(), clock() + 60)


def plan_of(*names: str, privacy: str = "standard") -> Plan:
    cands = []
    for n in names:
        local = n == "local"
        cands.append(Candidate(n, "gpt-oss:20b" if local else "openai.gpt-oss-20b-1:0", local,
                               Reason(ReasonCode.LOCAL if local else ReasonCode.CLOUD),
                               max_wait_s=1.0,
                               slots=1 if local else 0))
    return Plan("r", privacy, 10, cands, [])  # type: ignore[arg-type]


async def test_success_on_first_candidate() -> None:
    ex, store, clock, slept, b = setup()
    c = ctx(clock)
    result = await ex.chat(c, plan_of("local", "bedrock"))
    assert result.content == "answer from local"
    assert c.served_by == "local" and c.reason == Reason(ReasonCode.LOCAL)
    assert store.held() == 0


async def test_retry_honours_retry_after_then_succeeds() -> None:
    local = FakeBackend("local", local=True, script=[BackendRateLimited("busy", retry_after=2)])
    ex, store, clock, slept, b = setup(local=local)
    c = ctx(clock)
    await ex.chat(c, plan_of("local", "bedrock"))
    assert c.served_by == "local"
    assert len(local.calls) == 2 and slept == [2.0]
    assert c.attempts[0].retries == 1


async def test_persistent_5xx_fails_over_and_reason_says_so() -> None:
    errs = [BackendUnavailable("down", backend="local") for _ in range(5)]
    local = FakeBackend("local", local=True, script=list(errs))
    ex, store, clock, slept, b = setup(local=local)
    c = ctx(clock)
    result = await ex.chat(c, plan_of("local", "bedrock"))
    assert result.content == "answer from bedrock"
    assert len(local.calls) == 2  # the breaker (threshold 2) stops the third attempt
    assert c.reason is not None and c.reason.render() == "failover_after=backend_unavailable"
    assert store.held() == 0


async def test_validation_error_is_returned_not_failed_over() -> None:
    local = FakeBackend("local", local=True, script=[BackendRejected("bad", backend="local")])
    ex, store, clock, slept, b = setup(local=local)
    with pytest.raises(BackendRejected):
        await ex.chat(ctx(clock), plan_of("local", "bedrock"))
    assert b["bedrock"].calls == [] and len(local.calls) == 1


async def test_context_exceeded_moves_without_retry() -> None:
    local = FakeBackend("local", local=True,
                        script=[BackendContextExceeded("too long", backend="local")])
    ex, store, clock, slept, b = setup(local=local)
    c = ctx(clock)
    await ex.chat(c, plan_of("local", "bedrock"))
    assert len(local.calls) == 1 and c.served_by == "bedrock"


async def test_private_request_never_attempted_on_cloud_even_if_plan_says_so() -> None:
    local = FakeBackend("local", local=True,
                        script=[BackendUnavailable("x", backend="local")] * 3)
    ex, store, clock, slept, b = setup(local=local)
    with pytest.raises(NoLocalCapacity):
        await ex.chat(ctx(clock, "private"), plan_of("local", "bedrock"))
    assert b["bedrock"].calls == []


async def test_all_failed_reports_last_error() -> None:
    local = FakeBackend("local", local=True, script=[BackendRejected("x")])
    cloud = FakeBackend("bedrock", script=[BackendUnavailable("c", backend="bedrock")] * 3)
    ex, *_ = setup(cloud=cloud)
    ex2, store, clock, slept, b = setup(local=FakeBackend(
        "local", local=True, script=[BackendUnavailable("l", backend="local")] * 3), cloud=cloud)
    with pytest.raises(AllBackendsFailed) as info:
        await ex2.chat(ctx(clock), plan_of("local", "bedrock"))
    assert info.value.status == 502 and info.value.backend == "bedrock"
    del local


async def test_breaker_opens_and_skips_at_no_cost_then_half_opens() -> None:
    errs = [BackendUnavailable("down", backend="local")] * 6
    local = FakeBackend("local", local=True, script=list(errs))
    ex, store, clock, slept, b = setup(local=local)
    await ex.chat(ctx(clock), plan_of("local", "bedrock"))  # 2 failed attempts -> open
    assert not ex.breakers.allows("local")
    n = len(local.calls)
    await ex.chat(ctx(clock), plan_of("local", "bedrock"))
    assert len(local.calls) == n  # skipped
    clock.t += 3  # local_open_for_s = 2
    assert ex.breakers.allows("local")
    local.script.clear()
    c = ctx(clock)
    await ex.chat(c, plan_of("local", "bedrock"))
    assert c.served_by == "local" and ex.breakers.state_name("local") == "closed"


async def test_queue_timeout_fails_over_for_standard_and_503_for_private() -> None:
    gate = asyncio.Event()
    local = FakeBackend("local", local=True, gate=gate)
    ex, store, clock, slept, b = setup(local=local)
    holder = asyncio.create_task(ex.chat(ctx(clock), plan_of("local")))
    await asyncio.sleep(0)
    p = plan_of("local", "bedrock")
    p.candidates[0] = Candidate("local", "gpt-oss:20b", True, Reason(ReasonCode.LOCAL),
                                max_wait_s=0.0, slots=1)
    c = ctx(clock)
    await ex.chat(c, p)
    assert c.served_by == "bedrock"
    with pytest.raises(NoLocalCapacity):
        await ex.chat(ctx(clock, "private"), Plan("r", "private", 1, [p.candidates[0]], []))
    gate.set()
    await holder
    assert store.held() == 0


async def test_stream_fails_over_before_first_event() -> None:
    local = FakeBackend("local", local=True, script=[BackendUnavailable("x")] * 3)
    ex, store, clock, slept, b = setup(local=local)
    c = ctx(clock, stream=True)
    session = await ex.open_stream(c, plan_of("local", "bedrock"))
    events = [e async for e in session.events()]
    assert session.candidate.backend == "bedrock" and events[-1].finish_reason == "stop"


async def test_stream_error_after_first_event_raises_and_releases_slot() -> None:
    local = FakeBackend("local", local=True, stream_fail_after=3,
                        stream_error=BackendStreamError("cut", backend="local"))
    ex, store, clock, slept, b = setup(local=local)
    session = await ex.open_stream(ctx(clock, stream=True), plan_of("local", "bedrock"))
    got = []
    with pytest.raises(BackendStreamError):
        async for e in session.events():
            got.append(e)
    assert len(got) == 3 and not any(e.finish_reason for e in got)
    assert b["bedrock"].calls == []  # no failover after the first byte
    assert store.held() == 0


async def test_stream_stall_hits_idle_timeout() -> None:
    local = FakeBackend("local", local=True, stall_after=2)
    ex, store, clock, slept, b = setup(local=local)
    ex.policy = POLICY.model_copy(update={"stream": POLICY.stream.model_copy(
        update={"idle_timeout_s": 0.05})})
    session = await ex.open_stream(ctx(clock, stream=True), plan_of("local"))
    with pytest.raises(BackendTimeout):
        async for _ in session.events():
            pass
    assert store.held() == 0


async def test_cancelled_stream_consumer_releases_slot() -> None:
    local = FakeBackend("local", local=True, stall_after=2)
    ex, store, clock, slept, b = setup(local=local)
    session = await ex.open_stream(ctx(clock, stream=True), plan_of("local"))

    async def consume() -> None:
        async for _ in session.events():
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.held() == 0


async def test_half_open_lets_one_trial_at_a_time() -> None:
    gate = asyncio.Event()
    local = FakeBackend("local", local=True,
                        script=[BackendUnavailable("down", backend="local")] * 2)
    ex, store, clock, slept, b = setup(local=local)
    await ex.chat(ctx(clock), plan_of("local", "bedrock"))  # opens the breaker
    clock.t += 3  # due for a trial
    local.gate = gate
    trial = asyncio.create_task(ex.chat(ctx(clock), plan_of("local", "bedrock")))
    await asyncio.sleep(0.01)
    c = ctx(clock)
    await ex.chat(c, plan_of("local", "bedrock"))  # a second request skips local meanwhile
    assert c.served_by == "bedrock"
    gate.set()
    await trial
    assert ex.breakers.state_name("local") == "closed"


async def test_cold_candidate_gets_the_load_time_for_its_first_token() -> None:
    gate = asyncio.Event()
    local = FakeBackend("local", local=True, gate=gate)
    ex, store, clock, slept, b = setup(local=local)
    ex.policy = POLICY.model_copy(update={
        "stream": POLICY.stream.model_copy(update={"first_token_timeout_s": 0.01}),
        "privacy": POLICY.privacy.model_copy(update={"load_timeout_s": 5.0})})
    cold = Candidate("local", "gpt-oss:20b", True, Reason(ReasonCode.PRIVATE_LOCAL_ONLY),
                     max_wait_s=1.0,
                     slots=1, cold=True)
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, gate.set)  # the "load" outlasts the normal first-token limit
    session = await ex.open_stream(ctx(clock, "private", stream=True),
                                   Plan("r", "private", 1, [cold], []))
    events = [e async for e in session.events()]
    assert events[-1].finish_reason == "stop" and store.held() == 0


# -- the router's own bugs are not outages ---------------------------------------------------

def _ollama_backend() -> Any:
    from router.backends.configs import OllamaConfig
    from router.backends.ollama import OllamaBackend

    # Port 1 refuses connections: if the request were ever sent, it would be "unreachable".
    return OllamaBackend("local", OllamaConfig(base_url="http://127.0.0.1:1",
                                               models={"gpt-oss-20b": "gpt-oss:20b"}))


def _broken_builder(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from router.backends import ollama as ollama_mod

    calls: list[int] = []

    def boom(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        raise TypeError("'int' object has no attribute 'get' (secret prompt text)")

    monkeypatch.setattr(ollama_mod, "build_payload", boom)
    return calls


@pytest.mark.parametrize("stream", [False, True])
async def test_request_build_bug_is_one_attempt_500_no_failover_no_breaker(
        monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    from router.api.error_responses import error_response
    from router.errors import InternalError

    built = _broken_builder(monkeypatch)
    local = _ollama_backend()
    ex, store, clock, slept, b = setup(local=local)
    c = ctx(clock, stream=stream)
    with pytest.raises(InternalError) as info:
        if stream:
            await ex.open_stream(c, plan_of("local", "bedrock"))
        else:
            await ex.chat(c, plan_of("local", "bedrock"))
    await local.aclose()
    assert built == [1] and slept == []  # one attempt, no retry
    assert b["bedrock"].calls == []  # no failover to the cloud
    assert [a.outcome for a in c.attempts] == ["internal_error"]
    assert ex.breakers.state_name("local") == "closed" and store.held() == 0
    resp = error_response(info.value)
    body = bytes(resp.body).decode()
    assert resp.status_code == 500
    assert '"code":"internal_error"' in body and '"type":"api_error"' in body
    assert "Traceback" not in body and "secret" not in body and "TypeError" not in body


async def test_two_request_build_bugs_do_not_open_the_local_breaker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from router.errors import InternalError

    _broken_builder(monkeypatch)
    local = _ollama_backend()
    ex, store, clock, slept, b = setup(local=local)
    for _ in range(2):  # the policy's failure_threshold is 2
        with pytest.raises(InternalError):
            await ex.chat(ctx(clock), plan_of("local", "bedrock"))
    await local.aclose()
    assert ex.breakers.allows("local") and ex.breakers.state_name("local") == "closed"
    monkeypatch.undo()
    good = FakeBackend("local", local=True)
    ex.backends = {"local": good, "bedrock": b["bedrock"]}
    c = ctx(clock, "private")
    await ex.chat(c, plan_of("local"))  # the next valid private request is served locally
    assert c.served_by == "local"


async def test_unexpected_exception_in_a_backend_is_internal_not_failed_over() -> None:
    from router.errors import InternalError

    class Buggy(FakeBackend):
        async def chat(self, call: Any) -> Any:
            self.calls.append(call)
            raise KeyError("choices")

    local = Buggy("local", local=True)
    ex, store, clock, slept, b = setup(local=local)
    c = ctx(clock)
    with pytest.raises(InternalError) as info:
        await ex.chat(c, plan_of("local", "bedrock"))
    assert info.value.status == 500 and info.value.code == "internal_error"
    assert len(local.calls) == 1 and b["bedrock"].calls == [] and store.held() == 0
    assert ex.breakers.state_name("local") == "closed"


# -- Ollama's cloud models are not local -----------------------------------------------------

async def test_private_request_never_attempted_on_an_ollama_cloud_tag() -> None:
    ex, store, clock, slept, b = setup()
    cand = Candidate("local", "gpt-oss:120b-cloud", True, Reason(ReasonCode.PRIVATE_LOCAL_ONLY),
                     max_wait_s=1.0, slots=1)
    with pytest.raises(NoLocalCapacity):
        await ex.chat(ctx(clock, "private"), Plan("r", "private", 1, [cand], []))
    assert b["local"].calls == []


async def test_private_request_never_attempted_on_a_model_the_backend_saw_as_remote() -> None:
    class RemoteAware(FakeBackend):
        def serves_locally(self, model_id: str) -> bool:
            return model_id != "gpt-oss:20b"  # e.g. /api/tags listed it with remote_host

    local = RemoteAware("local", local=True)
    ex, store, clock, slept, b = setup(local=local)
    with pytest.raises(NoLocalCapacity):
        await ex.chat(ctx(clock, "private"), plan_of("local", "bedrock"))
    assert local.calls == [] and b["bedrock"].calls == []
    c = ctx(clock)
    await ex.chat(c, plan_of("local"))  # a standard request may use it
    assert c.served_by == "local"


async def test_a_bug_mid_stream_ends_it_in_band_without_a_breaker_failure() -> None:
    from router.types import StreamEvent

    class BuggyStream(FakeBackend):
        async def stream(self, call: Any) -> Any:
            self.calls.append(call)
            yield StreamEvent(content="a")
            raise ValueError("bad state")

    local = BuggyStream("local", local=True)
    ex, store, clock, slept, b = setup(local=local)
    for _ in range(2):  # twice: the breaker (threshold 2) would open if these counted
        session = await ex.open_stream(ctx(clock, stream=True), plan_of("local", "bedrock"))
        with pytest.raises(BackendStreamError) as info:
            async for _ in session.events():
                pass
        assert info.value.code == "internal_error" and "bad state" not in info.value.message
    assert ex.breakers.state_name("local") == "closed" and store.held() == 0


async def test_sparse_traffic_keeps_retrying_on_the_budget_floor() -> None:
    """One request every 5 s, each hit by one transient 503: the policy's floor of retries
    per second lets each one retry on its backend long after the reserve is spent (the budget
    used to run dry after ~18 retries, then a request got one attempt and failed over)."""
    script: list[BackendError | None] = []
    for _ in range(40):
        script += [BackendUnavailable("flap", backend="local"), None]
    local = FakeBackend("local", local=True, script=script)
    ex, store, clock, slept, b = setup(local=local)
    served = []
    for _ in range(40):
        clock.t += 5.0
        c = ctx(clock)
        await ex.chat(c, plan_of("local", "bedrock"))
        served.append(c.served_by)
    assert served == ["local"] * 40 and not b["bedrock"].calls
    assert store.held() == 0


async def test_silence_is_not_retried_on_the_same_backend() -> None:
    """A connect/header/first-event timeout moves to the next candidate at once (issue 12)."""
    local = FakeBackend("local", local=True,
                        script=[BackendTimeout("no answer", backend="local")] * 3)
    ex, store, clock, slept, b = setup(local=local)
    c = ctx(clock)
    result = await ex.chat(c, plan_of("local", "bedrock"))
    assert result.content == "answer from bedrock"
    assert len(local.calls) == 1 and slept == []
    assert c.attempts[0].retries == 0 and c.attempts[0].outcome == "backend_timeout"
    assert c.reason is not None and c.reason.render() == "failover_after=backend_timeout"
    assert store.held() == 0


async def test_a_503_is_still_retried_on_the_same_backend() -> None:
    local = FakeBackend("local", local=True,
                        script=[BackendUnavailable("busy", backend="local")])
    ex, store, clock, slept, b = setup(local=local)
    c = ctx(clock)
    await ex.chat(c, plan_of("local", "bedrock"))
    assert c.served_by == "local" and len(local.calls) == 2


def _windowed(plan: Plan, **windows: int) -> Plan:
    import dataclasses
    return dataclasses.replace(plan, candidates=[
        dataclasses.replace(c, context_window=windows.get(c.backend, 0)) for c in plan.candidates])


async def test_context_overflow_with_nothing_larger_left_is_a_clean_400() -> None:
    from router.errors import ContextLengthExceeded
    local = FakeBackend("local", local=True,
                        script=[BackendContextExceeded("too long", backend="local")])
    ex, store, clock, slept, b = setup(local=local)
    with pytest.raises(ContextLengthExceeded) as info:
        await ex.chat(ctx(clock), _windowed(plan_of("local", "bedrock"), local=32768,
                                            bedrock=32768))
    assert info.value.status == 400 and info.value.code == "context_length_exceeded"
    assert len(local.calls) == 1 and b["bedrock"].calls == []  # not larger: skipped
    assert store.held() == 0


async def test_context_overflow_moves_to_a_larger_window_or_when_unknown_the_next() -> None:
    for windows in ({"local": 32768, "bedrock": 131072}, {}):
        local = FakeBackend("local", local=True,
                            script=[BackendContextExceeded("too long", backend="local")])
        ex, store, clock, slept, b = setup(local=local)
        c = ctx(clock)
        await ex.chat(c, _windowed(plan_of("local", "bedrock"), **windows))
        assert c.served_by == "bedrock" and len(local.calls) == 1
        assert c.reason is not None
        assert c.reason.render() == "failover_after=context_length_exceeded"


async def test_a_private_context_overflow_is_a_400_not_no_local_capacity() -> None:
    from router.errors import ContextLengthExceeded
    local = FakeBackend("local", local=True,
                        script=[BackendContextExceeded("too long", backend="local")])
    ex, store, clock, slept, b = setup(local=local)
    with pytest.raises(ContextLengthExceeded):
        await ex.chat(ctx(clock, privacy="private"),
                      plan_of("local", "bedrock", privacy="private"))
    assert b["bedrock"].calls == []


async def test_a_served_local_request_leaves_the_estimators_samples() -> None:
    """Whole and streamed answers record service time, answer tokens and (streams) the time
    to the first event with the slot's release: what the wait estimator learns from."""
    ex, store, clock, slept, b = setup()
    await ex.chat(ctx(clock), plan_of("local", "bedrock"))
    session = await ex.open_stream(ctx(clock, stream=True), plan_of("local", "bedrock"))
    async for _ in session.events():
        pass
    samples = store._get("local|gpt-oss:20b").samples
    assert [s.output_tokens for s in samples] == [5, 5]
    assert samples[0].first_token_s is not None and samples[1].first_token_s is None
    assert store.held() == 0
