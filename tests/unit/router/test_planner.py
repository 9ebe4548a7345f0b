"""Table-driven tests of the pure planner: one case per routing reason."""

from __future__ import annotations

from typing import Any

import pytest

from router.backends.base import LoadedModel, ProbeResult
from router.errors import BudgetExhausted, ContextLengthExceeded, NoLocalCapacity
from router.planner import (
    BackendView,
    PlannerState,
    RequestFacts,
    estimated_wait,
    plan,
)
from router.policy.loader import PolicyError, parse_policy
from router.reasons import Reason, ReasonCode
from router.state.base import SlotLoad, slot_key

GiB = 1 << 30


def make_policy(**over: Any) -> Any:
    data: dict[str, Any] = {
        "models": {"gpt-oss-20b": {"vram_gb": 14}, "gpt-oss-120b": {"vram_gb": 65}},
        "backends": {
            "local": {"type": "ollama", "parallel": 2, "gpu_memory_gb": 24, "num_ctx": 8192,
                      "models": {"gpt-oss-20b": "gpt-oss:20b", "gpt-oss-120b": "gpt-oss:120b"}},
            "bedrock": {"type": "bedrock", "context_window": 128000, "daily_budget_usd": 10,
                        "models": {"gpt-oss-20b": "openai.gpt-oss-20b-1:0",
                                   "gpt-oss-120b": "openai.gpt-oss-120b-1:0"}},
        },
        "routes": [{"name": "default", "targets": ["local", "bedrock"], "max_queue_wait_s": 1.0}],
    }
    data.update(over)
    return parse_policy(data)


def resident(model: str = "gpt-oss:20b", on_gpu: bool = True, ctx: int = 8192) -> ProbeResult:
    size = 14 * GiB
    return ProbeResult(ok=True, loaded=[LoadedModel(model, size, size if on_gpu else size // 2,
                                                    ctx)])


def facts(**over: Any) -> RequestFacts:
    base: dict[str, Any] = {"model": "gpt-oss-20b", "privacy": "standard", "prompt_tokens": 100,
                            "max_tokens": 100}
    base.update(over)
    return RequestFacts(**base)


def state(probe: ProbeResult | None = None, load: SlotLoad | None = None,
          **views: BackendView) -> PlannerState:
    st = PlannerState(now=0.0)
    st.backends["local"] = views.get("local") or BackendView(probe=probe or resident())
    st.backends["bedrock"] = views.get("bedrock") or BackendView()
    if load is not None:
        st.slots[slot_key("local", "gpt-oss:20b")] = load
    return st


CASES = [
    # (id, facts, state, expected first backend, expected reason, excluded reasons)
    ("idle-local", facts(), state(), "local", "local", {}),
    ("private-local", facts(privacy="private"), state(), "local", "private_local_only",
     {"bedrock": "private_local_only"}),
    ("queue-over-bound", facts(), state(load=SlotLoad(2, 4, 0.6)), "bedrock",
     "queue_wait_1800ms>1000ms", {}),
    ("queue-under-bound", facts(), state(load=SlotLoad(2, 0, 0.5)), "local", "local", {}),
    ("120b-vram", facts(model="gpt-oss-120b"), state(), "bedrock", "vram_insufficient",
     {"local": "vram_insufficient"}),
    ("partial-offload", facts(), state(probe=resident(on_gpu=False)), "bedrock",
     "vram_insufficient", {"local": "vram_insufficient"}),
    ("cold", facts(), state(probe=ProbeResult(ok=True)), "bedrock", "model_not_resident", {}),
    ("context", facts(prompt_tokens=60000), state(), "bedrock", "context_60100>8192",
     {"local": "context_60100>8192"}),
    ("unhealthy", facts(), state(local=BackendView(healthy=False)), "bedrock", "local_unhealthy",
     {"local": "local_unhealthy"}),
    ("private-cold-waits-locally", facts(privacy="private"), state(probe=ProbeResult(ok=True)),
     "local", "private_local_only", {"bedrock": "private_local_only"}),
    ("private-over-bound-still-local", facts(privacy="private"),
     state(load=SlotLoad(2, 10, 5.0)), "local", "private_local_only", {}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_plan_reasons(case: tuple[Any, ...]) -> None:
    _, f, st, backend, reason, excluded = case
    p = plan(f, make_policy(), st)
    assert p.error is None
    assert p.candidates[0].backend == backend
    assert p.reason.render() == reason
    got = {e.backend: e.reason.render() for e in p.excluded}
    for b, r in excluded.items():
        assert got[b] == r


def test_cold_standard_goes_cloud_and_warms_and_keeps_local_as_last_resort() -> None:
    p = plan(facts(), make_policy(), state(probe=ProbeResult(ok=True)))
    assert [c.backend for c in p.candidates] == ["bedrock", "local"]
    assert p.warm == [("local", "gpt-oss:20b")]


def test_private_never_gets_cloud_candidate() -> None:
    for st in (state(), state(local=BackendView(healthy=False)), state(load=SlotLoad(2, 50, 9))):
        p = plan(facts(privacy="private"), make_policy(), st)
        assert all(c.local for c in p.candidates)


def test_private_unhealthy_local_is_503() -> None:
    p = plan(facts(privacy="private"), make_policy(), state(local=BackendView(healthy=False)))
    assert isinstance(p.error, NoLocalCapacity)
    assert p.error.status == 503 and p.error.retry_after


def test_private_context_too_large_is_400_with_both_numbers() -> None:
    p = plan(facts(privacy="private", prompt_tokens=50000), make_policy(), state())
    assert isinstance(p.error, ContextLengthExceeded)
    assert "50100" in p.error.message and "8192" in p.error.message


def test_budget_exhausted_excludes_cloud_for_standard() -> None:
    st = state(bedrock=BackendView(budget_exhausted=True), local=BackendView(healthy=False))
    p = plan(facts(), make_policy(), st)
    assert isinstance(p.error, BudgetExhausted)
    assert p.error.status == 429


def test_several_hosts_shortest_wait_first() -> None:
    pol = make_policy(
        backends={
            "a": {"type": "ollama", "parallel": 1, "models": {"gpt-oss-20b": "gpt-oss:20b"}},
            "b": {"type": "ollama", "parallel": 1, "models": {"gpt-oss-20b": "gpt-oss:20b"}},
        },
        routes=[{"name": "r", "targets": ["a", "b"], "max_queue_wait_s": 10}],
    )
    st = PlannerState()
    st.backends = {"a": BackendView(probe=resident()), "b": BackendView(probe=resident())}
    st.slots[slot_key("a", "gpt-oss:20b")] = SlotLoad(1, 2, 1.0)
    st.slots[slot_key("b", "gpt-oss:20b")] = SlotLoad(1, 0, 1.0)
    p = plan(facts(), pol, st)
    assert [c.backend for c in p.candidates] == ["b", "a"]


def test_route_matching_by_header_key_and_model() -> None:
    pol = make_policy(routes=[
        {"name": "hdr", "match": {"headers": {"x-team": "research"}}, "targets": ["bedrock"]},
        {"name": "key", "match": {"api_key": "batch"}, "targets": ["local"]},
        {"name": "big", "match": {"model": "gpt-oss-120b"}, "targets": ["bedrock"]},
        {"name": "rest", "targets": ["local", "bedrock"]},
    ])
    assert plan(facts(headers={"x-team": "research"}), pol, state()).route == "hdr"
    assert plan(facts(key_name="batch"), pol, state()).route == "key"
    assert plan(facts(model="gpt-oss-120b"), pol, state()).route == "big"
    assert plan(facts(), pol, state()).route == "rest"


def test_key_max_queue_wait_overrides_route() -> None:
    st = state(load=SlotLoad(2, 0, 3.0))  # 3 s estimated wait, nobody queued
    assert plan(facts(), make_policy(), st).candidates[0].backend == "bedrock"
    assert plan(facts(key_max_queue_wait_s=5.0), make_policy(), st).reason.render() == "local"
    queued = state(load=SlotLoad(2, 4, 0.6))  # 1.8 s, behind four waiters
    unlimited = make_policy(admission={"max_waiting_ahead": None})
    assert plan(facts(key_max_queue_wait_s=5.0), unlimited, queued).reason.render() == "local"


@pytest.mark.parametrize(("load", "slots", "expected"), [
    (SlotLoad(0, 0, 1.0), 1, 0.0),
    (SlotLoad(1, 0, 1.0), 2, 0.0),
    (SlotLoad(2, 0, 1.0), 2, 1.0),
    (SlotLoad(2, 1, 1.0), 2, 1.0),
    (SlotLoad(2, 2, 1.0), 2, 2.0),
    (SlotLoad(1, 3, 0.5), 1, 2.0),
])
def test_estimated_wait_formula(load: SlotLoad, slots: int, expected: float) -> None:
    assert estimated_wait(load, slots) == expected


# -- Ollama's cloud models are not local -------------------------------------------------------

def cloud_policy(model_id: str = "gpt-oss:120b-cloud") -> Any:
    return make_policy(backends={
        "local": {"type": "ollama", "parallel": 2, "gpu_memory_gb": 24, "num_ctx": 8192,
                  "models": {"gpt-oss-20b": "gpt-oss:20b", "gpt-oss-120b": model_id}},
        "bedrock": {"type": "bedrock", "context_window": 128000,
                    "models": {"gpt-oss-120b": "openai.gpt-oss-120b-1:0"}},
    })


@pytest.mark.parametrize("model_id", ["gpt-oss:120b-cloud", "gpt-oss:120b:cloud"])
def test_private_request_excludes_an_ollama_cloud_tag(model_id: str) -> None:
    p = plan(facts(model="gpt-oss-120b", privacy="private"), cloud_policy(model_id), state())
    assert p.candidates == []
    assert {e.backend: e.reason.render() for e in p.excluded} == {"local": "ollama_cloud_model",
                                                         "bedrock": "private_local_only"}
    assert isinstance(p.error, NoLocalCapacity) and "ollama_cloud_model" in p.error.message


def test_private_request_excludes_a_model_the_probe_lists_with_remote_host() -> None:
    probe = ProbeResult(ok=True, remote_models={"team-120b:latest": "https://ollama.com:443"})
    p = plan(facts(model="gpt-oss-120b", privacy="private"), cloud_policy("team-120b"),
             state(probe=probe))
    assert p.candidates == [] and p.excluded[0].reason.render() == "ollama_cloud_model"
    # and a local model on the same host stays eligible
    p = plan(facts(privacy="private"), cloud_policy("team-120b"), state(probe=probe))
    assert [(c.backend, c.local) for c in p.candidates] == [("local", True)]


def test_standard_request_may_use_an_ollama_cloud_model_as_a_cloud_candidate() -> None:
    p = plan(facts(model="gpt-oss-120b"), cloud_policy(), state())
    assert [(c.backend, c.local, c.slots) for c in p.candidates] == [
        ("local", False, 0), ("bedrock", False, 0)]
    assert p.warm == [] and not any(e.reason.render() == "vram_insufficient" for e in p.excluded)


# -- typed reasons: rendered once, at the edge -------------------------------------------------

@pytest.mark.parametrize(("reason", "wire"), [
    (Reason(ReasonCode.LOCAL), "local"),
    (Reason.queue_wait(1.8, 1.0), "queue_wait_1800ms>1000ms"),
    (Reason.queue_wait(0.0, 0.0), "queue_wait_0ms>0ms"),
    (Reason.context(65536, 32768), "context_65536>32768"),
    (Reason.failover_after("backend_timeout"), "failover_after=backend_timeout"),
    (Reason(ReasonCode.OLLAMA_CLOUD_MODEL), "ollama_cloud_model"),
])
def test_reasons_render_to_the_wire_strings(reason: Reason, wire: str) -> None:
    assert reason.render() == wire == str(reason)


def test_plan_reasons_carry_their_detail() -> None:
    p = plan(facts(), make_policy(), state(load=SlotLoad(2, 4, 0.6)))
    spilled = p.candidates[-1].reason
    assert (spilled.code, spilled.wait_ms, spilled.bound_ms) == (ReasonCode.QUEUE_WAIT, 1800,
                                                                 1000)
    p = plan(facts(prompt_tokens=60000), make_policy(), state())
    assert p.excluded[0].reason == Reason.context(60100, 8192)


def test_context_error_takes_the_window_from_the_reason_detail() -> None:
    pol = make_policy(backends={
        "local": {"type": "ollama", "parallel": 2, "gpu_memory_gb": 24, "num_ctx": 8192,
                  "models": {"gpt-oss-20b": "gpt-oss:20b"}},
        "bedrock": {"type": "bedrock", "context_window": 16000,
                    "models": {"gpt-oss-20b": "openai.gpt-oss-20b-1:0"}},
    })
    p = plan(facts(prompt_tokens=60000), pol, state())
    assert isinstance(p.error, ContextLengthExceeded)
    assert "largest context window available to it is 16000 tokens" in p.error.message


# -- the estimator in the plan (private first, prediction on the candidate) --------------------

def test_private_wait_counts_only_private_waiters_ahead() -> None:
    load = SlotLoad(2, 6, 1.0, running=((0.0, 1.0), (0.0, 1.0)),
                    waiting=((0, 1.0),) + ((1, 1.0),) * 5)
    pol = make_policy(privacy={"private_max_queue_wait_s": 1.5})
    private = plan(facts(privacy="private"), pol, state(load=load))
    assert private.candidates[0].est_wait_s == 1.0 and private.candidates[0].private_first
    standard = plan(facts(), pol, state(load=load))
    assert standard.candidates[0].backend == "bedrock"  # 4 s > 1 s: over the bound


def test_candidate_carries_a_token_based_prediction_and_the_knobs() -> None:
    from router.state.base import ServiceSample
    load = SlotLoad(0, 0, 1.0, samples=(ServiceSample(2.0, 1000, 40, 1.0),))
    pol = make_policy(admission={"early_spill": False, "decode_tps_default": 10})
    cand = plan(facts(prompt_tokens=2000, max_tokens=20), pol, state(load=load)).candidates[0]
    assert cand.local and cand.pred_service_s == pytest.approx(2.0 + 20 / 40)
    assert cand.early_spill is False


def test_wait_quantile_knob_changes_the_admission() -> None:
    from router.state.base import ServiceSample
    samples = tuple(ServiceSample(s) for s in (0.2, 0.2, 0.2, 0.2, 0.2, 3.0, 3.0, 3.0))
    load = SlotLoad(2, 0, 1.0, running=((0.0, 0.5), (0.0, 0.5)), samples=samples)
    low = make_policy(admission={"wait_quantile": 0.5})
    high = make_policy(admission={"wait_quantile": 0.99})
    assert plan(facts(), low, state(load=load)).candidates[0].backend == "local"
    assert plan(facts(), high, state(load=load)).candidates[0].backend == "bedrock"


def test_standard_request_queues_only_behind_fewer_than_max_waiting_ahead() -> None:
    # Both slots busy, 0.5 s left each: a 0.5 s wait fits the 1 s bound when nobody waits.
    running = ((0.0, 0.5), (0.0, 0.5))
    alone = SlotLoad(2, 0, 0.5, running=running)
    behind_one = SlotLoad(2, 1, 0.5, running=running, waiting=((0, 0.5),))
    assert plan(facts(), make_policy(), state(load=alone)).reason.render() == "local"
    p = plan(facts(), make_policy(), state(load=behind_one))
    assert p.candidates[0].backend == "bedrock"
    assert p.reason.render() == f"queue_wait_{round(p.candidates[-1].est_wait_s * 1000)}ms>0ms"
    assert p.candidates[-1].local and p.candidates[-1].max_wait_s == 1.0  # last resort
    two = make_policy(admission={"max_waiting_ahead": 2})
    assert plan(facts(), two, state(load=behind_one)).reason.render() == "local"
    with pytest.raises(PolicyError):  # a bound of 0 is how to never queue
        make_policy(admission={"max_waiting_ahead": 0})
    # Private requests are not limited by it.
    private = plan(facts(privacy="private"), make_policy(), state(load=behind_one))
    assert private.candidates[0].local
    # Waiters that drain within a tenth of the bound do not count: a short one here, four
    # ordinary ones under a 30 s bound (0.25 s / 2 slots > 0.1 s; 4 x 0.5 / 2 = 1 <= 3 s).
    short = SlotLoad(2, 1, 0.5, running=running, waiting=((1, 0.1),))
    assert plan(facts(), make_policy(), state(load=short)).reason.render() == "local"
    four = SlotLoad(2, 4, 0.5, running=running, waiting=((1, 0.5),) * 4)
    assert plan(facts(), make_policy(), state(load=four)).candidates[0].backend == "bedrock"
    assert plan(facts(key_max_queue_wait_s=30.0), make_policy(),
                state(load=four)).reason.render() == "local"
