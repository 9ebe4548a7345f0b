"""The estimator: rates from samples, per-request service draws, the wait distribution
(elapsed against predicted, queue ahead, private first), deterministic and pure."""

from __future__ import annotations

import pytest

from router.estimator import (
    DEFAULT_SERVICE_TIME_S,
    ROUTE_MIN_SAMPLES,
    measured_rates,
    predict_service,
    service_draws,
    wait_draws,
    wait_quantile,
)
from router.policy.schema import AdmissionConfig
from router.state.base import ServiceSample, SlotLoad

CFG = AdmissionConfig()


def test_rates_default_until_measured_then_medians() -> None:
    assert measured_rates([], CFG).measured is False
    samples = [ServiceSample(2.0, 500, 60, 0.5), ServiceSample(3.0, 1000, 100, 1.0),
               ServiceSample(9.0, 100, None, None)]
    rates = measured_rates(samples, CFG)
    assert rates.prefill_tps == 1000.0  # 500/0.5 and 1000/1.0
    assert rates.decode_tps == 45.0  # median of 60/1.5=40 and 100/2=50
    # Without a first-token time the prefill rate's share is subtracted.
    only = measured_rates([ServiceSample(1.5, 500, 40, None)], CFG)
    assert only.decode_tps == pytest.approx(40 / 1.0)


def test_service_draws_from_tokens_capped_by_max_tokens() -> None:
    load = SlotLoad(samples=(ServiceSample(2.0, 1000, 40, 1.0), ServiceSample(5.0, 1000, 160, 1.0)))
    # prefill 1000 tps, decode 40 tps: prompt 2000 -> 2 s, outputs 40 and min(160, 80)
    assert service_draws(load, 2000, 80, CFG) == [3.0, 4.0]
    assert predict_service(load, 2000, 80, CFG) == 3.5


def test_service_draws_fall_back_to_service_times_then_ewma_then_default() -> None:
    assert service_draws(SlotLoad(samples=(ServiceSample(3.0), ServiceSample(1.0))), 10, None,
                         CFG) == [1.0, 3.0]
    assert service_draws(SlotLoad(service_time_s=1.5), 10, None, CFG) == [1.5]
    assert service_draws(SlotLoad(), 10, None, CFG) == [DEFAULT_SERVICE_TIME_S]


@pytest.mark.parametrize(("load", "slots", "expected"), [
    (SlotLoad(0, 0, 1.0), 1, 0.0),
    (SlotLoad(1, 0, 1.0), 2, 0.0),
    (SlotLoad(2, 0, 1.0), 2, 1.0),
    (SlotLoad(2, 1, 1.0), 2, 1.0),
    (SlotLoad(2, 2, 1.0), 2, 2.0),
    (SlotLoad(1, 3, 0.5), 1, 2.0),
])
def test_without_samples_it_matches_the_old_formula(load: SlotLoad, slots: int,
                                                     expected: float) -> None:
    assert wait_quantile(load, slots, CFG) == expected


def test_elapsed_against_predicted() -> None:
    # One slot, the request in it predicted 4 s and 3 s in: about 1 s left.
    load = SlotLoad(1, 0, 4.0, running=((3.0, 4.0),))
    assert wait_quantile(load, 1, CFG) == pytest.approx(1.0)
    # Overrunning: a fifth of its prediction is left.
    late = SlotLoad(1, 0, 4.0, running=((6.0, 4.0),))
    assert wait_quantile(late, 1, CFG) == pytest.approx(0.8)


def test_private_counts_only_private_waiters_ahead() -> None:
    load = SlotLoad(1, 3, 1.0, running=((0.0, 1.0),),
                    waiting=((0, 1.0), (1, 5.0), (1, 5.0)))
    assert wait_quantile(load, 1, CFG, private=True) == pytest.approx(2.0)
    assert wait_quantile(load, 1, CFG) == pytest.approx(12.0)
    fifo = AdmissionConfig(private_first=False)
    assert wait_quantile(load, 1, fifo, private=True) == pytest.approx(12.0)


def test_distribution_is_deterministic_and_the_quantile_rises_with_q() -> None:
    samples = tuple(ServiceSample(s) for s in (0.5, 1.0, 1.0, 2.0, 4.0, 8.0))
    load = SlotLoad(2, 2, 2.0, running=((0.2, 2.0), (1.0, 2.0)), waiting=((1, 2.0), (1, 2.0)),
                    samples=samples)
    a, b = wait_draws(load, 2, CFG), wait_draws(load, 2, CFG)
    assert a == b and a == sorted(a) and len(set(a)) > 1
    lo = wait_quantile(load, 2, AdmissionConfig(wait_quantile=0.2))
    hi = wait_quantile(load, 2, AdmissionConfig(wait_quantile=0.95))
    assert 0 < lo < hi


def test_predict_service_is_the_mean_of_the_draws_cached_or_not() -> None:
    samples = tuple(ServiceSample(1.0 + i / 10, 100 * i, (7 * i) % 50 or None, 0.1 * i or None)
                    for i in range(20))
    for load in (SlotLoad(samples=samples), SlotLoad(samples=tuple(list(samples))),
                 SlotLoad(samples=samples[:3]), SlotLoad(service_time_s=1.5), SlotLoad()):
        for prompt in (None, 0, 500):
            for cap in (None, 5, 30, 1000):
                draws = service_draws(load, prompt, cap, CFG)
                assert predict_service(load, prompt, cap, CFG) == pytest.approx(
                    sum(draws) / len(draws))
    # Another config on the same samples is not answered from the cache.
    slow = AdmissionConfig(sample_window=2)
    assert predict_service(SlotLoad(samples=samples), 500, None, slow) == pytest.approx(
        sum(d := service_draws(SlotLoad(samples=samples), 500, None, slow)) / len(d))


def _routed(route: str, output: int, n: int) -> list[ServiceSample]:
    # prefill 1000 tps (1000 tokens in 1 s), decode 10 tps: service = 1 + output / 10
    return [ServiceSample(1.0 + output / 10, 1000, output, 1.0, route) for _ in range(n)]


def test_a_route_with_enough_samples_is_predicted_from_its_own_output_lengths() -> None:
    n = ROUTE_MIN_SAMPLES
    load = SlotLoad(samples=tuple(_routed("summarise", 200, n) + _routed("classify", 10, n)))
    whole = predict_service(load, 1000, None, CFG)
    assert whole == pytest.approx(1.0 + 105 / 10)  # the key's mean output: (200 + 10) / 2
    assert predict_service(load, 1000, None, CFG, "summarise") == pytest.approx(21.0)
    assert predict_service(load, 1000, None, CFG, "classify") == pytest.approx(2.0)
    assert service_draws(load, 1000, None, CFG, "classify") == [pytest.approx(2.0)] * n
    # max_tokens still caps the route's lengths; a route never seen gets the key's window.
    assert predict_service(load, 1000, 50, CFG, "summarise") == pytest.approx(6.0)
    assert predict_service(load, 1000, None, CFG, "other") == pytest.approx(whole)


def test_a_route_below_the_minimum_falls_back_to_the_whole_key() -> None:
    few = ROUTE_MIN_SAMPLES - 1
    load = SlotLoad(samples=tuple(_routed("summarise", 200, few) + _routed("classify", 10, 20)))
    whole = predict_service(load, 1000, None, CFG)
    assert predict_service(load, 1000, None, CFG, "summarise") == pytest.approx(whole)
    assert service_draws(load, 1000, None, CFG, "summarise") == service_draws(
        load, 1000, None, CFG)
    # Samples without a route (older records) count for the key, never for a route.
    load = SlotLoad(samples=tuple(_routed("classify", 10, few)
                                  + [ServiceSample(2.0, 1000, 10, 1.0)] * 10))
    assert predict_service(load, 1000, None, CFG, "classify") == pytest.approx(2.0)
    assert len(service_draws(load, 1000, None, CFG, "classify")) == few + 10


def test_per_route_predictions_are_the_mean_of_their_draws_cached_or_not() -> None:
    samples = tuple(ServiceSample(1.0 + i / 10, 100 * i, (7 * i) % 50 or None, 0.1 * i or None,
                                  ("a", "b", None)[i % 3]) for i in range(40))
    for load in (SlotLoad(samples=samples), SlotLoad(samples=tuple(list(samples)))):
        for route in ("b", None, "a", "zzz", "b"):
            for cap in (None, 5, 1000):
                draws = service_draws(load, 500, cap, CFG, route)
                assert predict_service(load, 500, cap, CFG, route) == pytest.approx(
                    sum(draws) / len(draws))
    assert predict_service(SlotLoad(samples=samples), 500, None, CFG, "a") != pytest.approx(
        predict_service(SlotLoad(samples=samples), 500, None, CFG, "b"))


def test_the_planner_predicts_each_route_from_its_own_samples() -> None:
    from router.planner import plan
    from tests.unit.router.test_planner import facts, make_policy, state
    pol = make_policy(routes=[
        {"name": "summarise", "match": {"headers": {"x-task": "summarise"}},
         "targets": ["local", "bedrock"]},
        {"name": "default", "targets": ["local", "bedrock"]}])
    n = ROUTE_MIN_SAMPLES
    load = SlotLoad(samples=tuple(_routed("summarise", 200, n) + _routed("default", 10, n)))
    asks = {"summarise": facts(prompt_tokens=1000, max_tokens=None,
                               headers={"x-task": "summarise"}),
            "default": facts(prompt_tokens=1000, max_tokens=None)}
    got = {name: plan(f, pol, state(load=load)) for name, f in asks.items()}
    assert {name: p.route for name, p in got.items()} == {r: r for r in asks}
    assert got["summarise"].candidates[0].pred_service_s == pytest.approx(21.0)
    assert got["default"].candidates[0].pred_service_s == pytest.approx(2.0)
