"""The routing benchmark's pure parts: seeded trace generators (determinism, shape), the oracle
on tiny hand-computed traces, and the report's classification and estimator numbers.
"""

from __future__ import annotations

import random

import pytest

from benchmarks.routing_oracle import Service, replay
from benchmarks.routing_report import Outcome, estimator, waited_then_spilled
from benchmarks.routing_traces import (
    Dist,
    LengthSpec,
    Mix,
    TraceRequest,
    bursty_trace,
    mmpp_sojourns,
    poisson_trace,
    trace_summary,
)

MIX = Mix(LengthSpec.parse("lognormal:24:1.0:400"))


def test_length_spec_parses_renders_and_caps() -> None:
    for text in ("lognormal:24:1:400", "pareto:10:1.5", "fixed:18"):
        assert LengthSpec.parse(text).render() == text
    spec = LengthSpec.parse("pareto:10:1.1:50")
    assert spec.dist is Dist.PARETO
    rng = random.Random(3)
    draws = [spec.draw(rng) for _ in range(2000)]
    assert min(draws) >= 10 and max(draws) == 50
    with pytest.raises(ValueError):
        LengthSpec.parse("lognormal:24")
    with pytest.raises(ValueError):
        LengthSpec.parse("uniform:1:2")


def test_traces_are_seeded_ordered_and_bounded() -> None:
    for make in (lambda s: poisson_trace(5.0, 60.0, MIX, s),
                 lambda s: bursty_trace(3.0, 10.0, 4.0, 60.0, MIX, s)):
        a = make(7)
        assert a == make(7)
        assert a != make(8)
        assert all(x.at_s <= y.at_s for x, y in zip(a, a[1:], strict=False))
        assert all(0 <= x.at_s < 60.0 for x in a)
        assert 0 < sum(x.private for x in a) < len(a)


def test_trace_mix_shape() -> None:
    trace = poisson_trace(20.0, 500.0, MIX, 11)  # ~10,000 requests
    n = len(trace)
    assert 9000 < n < 11000
    assert 0.21 < sum(r.private for r in trace) / n < 0.27
    assert 0.02 < sum(r.long_prompt for r in trace) / n < 0.04
    assert all(r.prompt_tokens > 2000 for r in trace if r.long_prompt)
    with_max = [r for r in trace if r.max_tokens is not None]
    assert 0.07 < len(with_max) / n < 0.13
    assert all(r.answer_tokens <= r.max_tokens for r in with_max if r.max_tokens)
    answers = sorted(r.answer_tokens for r in trace)
    assert 20 <= answers[n // 2] <= 28  # median ~24
    assert answers[-1] <= 400 and answers[int(0.99 * n)] > 5 * answers[n // 2]  # heavy tail
    s = trace_summary(trace, 500.0)
    assert s["requests"] == n and s["private"] == sum(r.private for r in trace)


def test_bursty_trace_averages_its_mean_rate_and_bursts() -> None:
    calm, burst = mmpp_sojourns(1.2, 4.0, 1.7, 2.0)
    assert burst == 2.0 and calm == pytest.approx(2.0 * (1 - 0.5 / 2.8) / (0.5 / 2.8))
    trace = bursty_trace(1.2 * 5, 4.0 * 5, 1.7 * 5, 2000.0, MIX, 5)
    assert len(trace) / 2000.0 == pytest.approx(8.5, rel=0.08)
    per_s = [0] * 2000
    for r in trace:
        per_s[int(r.at_s)] += 1
    assert max(per_s) > 2 * 8.5  # seconds inside a burst
    with pytest.raises(ValueError):
        mmpp_sojourns(2.0, 4.0, 1.7, 2.0)


def _req(at: float, tokens: int, private: bool = False) -> TraceRequest:
    return TraceRequest(at, private, "p", tokens, prompt_tokens=0)


def test_oracle_on_a_hand_computed_trace() -> None:
    # 2 slots, 0.1 s a token, bound 1 s. Slot A: r0 0-1, r2 1-2. Slot B: r1 0-1, r3 1-1.5,
    # r5 1.5-1.6. r4 would start at 1.5 (wait 1.2 > 1): cloud. r6 starts on arrival.
    trace = [_req(0.0, 10), _req(0.0, 10), _req(0.1, 10), _req(0.2, 5), _req(0.3, 10),
             _req(0.4, 1, private=True), _req(3.0, 1, private=True)]
    res = replay(trace, Service(slots=2, token_delay_s=0.1), bound_s=1.0)
    assert res.local == [True, True, True, True, False, True, True]
    assert res.waits == pytest.approx([0.0, 0.0, 0.9, 0.8, 0.0, 1.1, 0.0])
    assert res.horizon_s == 3.0
    assert res.utilisation == pytest.approx((2.0 + 1.6) / (2 * 3.0))


def test_oracle_private_always_local_and_batch_slowdown() -> None:
    # Both slots busy: each token takes 0.1 * (1 + 1 * (2 - 1)) = 0.2 s, so r0 and r1 end
    # at 2.0; r2 waits 2.0 (over the bound) but is private, so it stays local.
    trace = [_req(0.0, 10), _req(0.0, 10), _req(0.0, 5, private=True), _req(0.0, 5)]
    res = replay(trace, Service(2, 0.1, batch_slowdown=1.0), bound_s=1.0)
    assert res.local == [True, True, True, False]
    assert res.waits[2] == pytest.approx(2.0)


def test_oracle_prefill_adds_to_service() -> None:
    trace = [TraceRequest(0.0, False, "p", 10, prompt_tokens=1000), _req(0.0, 1),
             _req(0.0, 1)]
    res = replay(trace, Service(2, 0.1, prefill_tps=1000.0), bound_s=5.0)
    assert res.waits == pytest.approx([0.0, 0.0, 0.1])  # r2 takes r1's slot at 0.1
    long_only = replay(trace[:1], Service(1, 0.1, prefill_tps=1000.0), bound_s=5.0)
    assert long_only.local == [True]


def _outcome(backend: str, reason: str, pred: float | None = None,
             private: bool = False) -> Outcome:
    return Outcome(_req(0.0, 1, private), 0.0, 1.0, 0.5, True, backend, reason,
                   predicted_wait_s=pred)


def test_waited_then_spilled_and_estimator() -> None:
    assert waited_then_spilled(_outcome("bedrock", "failover_after=queue_timeout"))
    assert waited_then_spilled(_outcome("bedrock", "failover_after=queue_spilled"))
    assert not waited_then_spilled(_outcome("bedrock", "queue_wait_1800ms>1000ms"))
    assert not waited_then_spilled(_outcome("local", "local"))
    outs = [_outcome("local", "local", 0.5), _outcome("local", "local", 0.1),
            _outcome("bedrock", "cloud", 0.3), _outcome("local", "local", None)]
    e = estimator(outs, [0.3, 0.3, 0.0, 0.2])
    assert e["available"] and e["pairs"] == 2
    assert e["bias_s"] == pytest.approx(0.0) and e["spread_s"] == pytest.approx(0.2)
    assert e["coverage"] == 0.5  # one of the two waited at most its prediction
    assert estimator(outs[3:], [0.2]) == {"available": False, "pairs": 0}


def test_simulator_flags_follow_the_detected_features() -> None:
    from benchmarks.routing import FEATURES, build_trace, parse_args, sim_flags

    args = parse_args(["--quick", "--batch-slowdown", "0.2"])
    assert sim_flags(args, [], 0) == []
    flags = sim_flags(args, list(FEATURES), 1)
    assert flags == ["--answer-tokens", args.answer_tokens, "--seed", str(args.seed + 1),
                     "--prefill-tps", "6000", "--batch-slowdown", "0.2"]
    spec = LengthSpec.parse(args.answer_tokens)
    drawn = build_trace("bursty", args, 7.0, spec, None)
    fixed = build_trace("bursty", args, 7.0, spec, 18)
    assert [r.at_s for r in drawn] == [r.at_s for r in fixed]
    assert {r.answer_tokens for r in fixed} <= {18} | set(Mix(spec).max_tokens_choices)
    assert len({r.answer_tokens for r in drawn}) > 3


def test_private_first_oracle_counts_the_private_requests_still_to_come() -> None:
    # 1 slot, 0.1 s a token, bound 1 s. FIFO: r0 0-0.5, r1 0.5-0.8, r2 0.8-1.2, r3 1.2-1.4,
    # r4 1.4-1.9. Private first, knowing r2 and r4 will jump ahead: r1 would start at 1.4
    # and r3 at 1.4 (after r0, r2, r4), both over the bound: cloud.
    trace = [_req(0.0, 5), _req(0.1, 3), _req(0.2, 4, private=True), _req(0.3, 2),
             _req(0.35, 5, private=True)]
    fifo = replay(trace, Service(1, 0.1), bound_s=1.0)
    assert fifo.local == [True] * 5
    assert fifo.waits == pytest.approx([0.0, 0.4, 0.6, 0.9, 1.05])
    pf = replay(trace, Service(1, 0.1), bound_s=1.0, private_first=True)
    assert pf.local == [True, False, True, False, True]
    assert pf.waits == pytest.approx([0.0, 0.0, 0.3, 0.0, 0.55])


def test_policy_simulation_replays_the_planner_and_the_queue() -> None:
    from benchmarks import routing_sim

    svc = Service(2, 0.1)
    # r0, r1 take both slots (1.01 s each); r2's estimate (no samples yet: 2 s) is over the
    # 1 s bound: cloud; the private r3 queues until 1.01; r4 would wait behind r3: cloud.
    trace = [_req(0.0, 10), _req(0.0, 10), _req(0.0, 10), _req(0.1, 5, private=True),
             _req(0.2, 5)]
    res = routing_sim.replay(trace, svc, routing_sim.hybrid_policy(svc, 1.0))
    assert res.exits == ["local", "local", "cloud", "local", "cloud"]
    assert res.waits == pytest.approx([0.0, 0.0, 0.0, 0.91, 0.0])
    s = routing_sim.summary(trace, res, 1.0)
    assert s["private_on_cloud"] == 0 and s["waited_then_spilled_share"] == 0.0
    # With no waiter limit r4 queues behind r3; its estimate is then over the bound anyway.
    free = routing_sim.hybrid_policy(svc, 1.0, {"max_waiting_ahead": None})
    assert routing_sim.replay(trace, svc, free).exits[4] == "cloud"
    longer = routing_sim.hybrid_policy(svc, 5.0, {"max_waiting_ahead": None})
    res = routing_sim.replay(trace, svc, longer)
    assert res.exits == ["local"] * 5
    # r2 queued first; the private r3 goes ahead of it: r3 at 1.01, r2 at 1.01 too.
    assert res.waits[3] == pytest.approx(0.91) and res.waits[2] == pytest.approx(1.01)
