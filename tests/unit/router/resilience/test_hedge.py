"""The hedge delay rule and the first-event latency tracker (router/resilience/hedge.py)."""

from __future__ import annotations

import pytest

from router.policy.schema import HedgeConfig
from router.resilience.hedge import LatencyTracker, hedge_delay, percentile

CFG = HedgeConfig()


def test_defaults_rescue_a_silent_upstream_well_under_15s() -> None:
    assert CFG.default_s + 0 < 15 and CFG.max_s < 15
    assert hedge_delay(CFG, LatencyTracker(), "b", "stream", route_after_s=None,
                       cold=False) == CFG.default_s


def test_the_route_setting_wins() -> None:
    t = LatencyTracker()
    for _ in range(50):
        t.observe("b", "stream", 0.1)
    assert hedge_delay(CFG, t, "b", "stream", route_after_s=7.5, cold=False) == 7.5


def test_derived_from_a_high_percentile_times_the_factor_within_floor_and_cap() -> None:
    t = LatencyTracker()
    for i in range(100):
        t.observe("b", "stream", 1.0 + i / 100)  # 1.00 .. 1.99 s
    assert hedge_delay(CFG, t, "b", "stream", route_after_s=None, cold=False) == \
        pytest.approx(percentile(t.samples("b", "stream"), 0.95) * CFG.factor)
    fast = LatencyTracker()
    for _ in range(100):
        fast.observe("b", "stream", 0.05)
    assert hedge_delay(CFG, fast, "b", "stream", route_after_s=None, cold=False) == CFG.floor_s
    slow = LatencyTracker()
    for _ in range(100):
        slow.observe("b", "stream", 30.0)
    assert hedge_delay(CFG, slow, "b", "stream", route_after_s=None, cold=False) == CFG.max_s
    for _ in range(100):
        slow.observe("b", "chat", 30.0)  # long whole answers: a long delay, not capped
    assert hedge_delay(CFG, slow, "b", "chat", route_after_s=None, cold=False) == 60.0


def test_kinds_and_backends_are_tracked_apart() -> None:
    t = LatencyTracker()
    for _ in range(50):
        t.observe("b", "chat", 4.0)
    assert hedge_delay(CFG, t, "b", "stream", route_after_s=None, cold=False) == CFG.default_s
    assert t.samples("other", "chat") == []


def test_a_cold_model_is_never_hedged_before_its_load_time() -> None:
    t = LatencyTracker()
    assert hedge_delay(CFG, t, "b", "stream", route_after_s=2.0, cold=True) == CFG.cold_load_s
    t.observe("b", "stream", 90.0, cold=True)
    assert t.samples("b", "stream") == []  # a load is not a first-token sample
    assert hedge_delay(CFG, t, "b", "stream", route_after_s=None, cold=True) == 90.0


def test_the_window_keeps_recent_samples_only() -> None:
    t = LatencyTracker(window=3)
    for v in (9.0, 9.0, 1.0, 1.0, 1.0):
        t.observe("b", "stream", v)
    assert t.samples("b", "stream") == [1.0, 1.0, 1.0]


def test_percentile_nearest_rank() -> None:
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0


def test_a_route_hedge_delay_past_the_first_token_timeout_is_warned_about() -> None:
    from router.policy.loader import parse_policy, policy_warnings
    base = {"models": {"m": {"vram_gb": 1}},
            "backends": {"b": {"type": "bedrock", "models": {"m": "x"}}},
            "stream": {"first_token_timeout_s": 10}}
    late = parse_policy({**base, "routes": [{"name": "r", "targets": ["b"],
                                             "hedge_after_s": 12}]})
    assert any("routes[0].hedge_after_s" in w for w in policy_warnings(late))
    fine = parse_policy({**base, "routes": [{"name": "r", "targets": ["b"],
                                             "hedge_after_s": 3}]})
    assert policy_warnings(fine) == []
    assert fine.routes[0].hedge_after_s == 3 and fine.hedge.default_s == 5.0
