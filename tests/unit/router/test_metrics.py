"""router.metrics: the exported names, bounded labels, and a registry per Metrics()."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.metrics import Metrics, reason_class

NAMES = [
    "router_requests_total",
    "router_request_latency_seconds",
    "router_ttft_seconds",
    "router_local_in_flight",
    "router_local_queued",
    "router_local_estimated_wait_seconds",
    "router_vram_used_bytes",
    "router_vram_free_bytes",
    "router_spill_total",
    "router_private_refused_total",
    "router_retries_total",
    "router_failovers_total",
    "router_breaker_state",
    "router_policy_reloads_total",
    "router_stream_errors_total",
    "router_cloud_spend_usd_total",
    "router_local_savings_usd_total",
    "router_state_store_degraded",
    "router_state_store_fallbacks_total",
]


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = m.render()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
    }


def test_render_lists_every_metric_with_help_and_type() -> None:
    body, content_type = Metrics().render()
    text = body.decode()
    assert content_type.startswith("text/plain")
    for name in NAMES:
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    for gauge in ("router_state_store_degraded",):
        assert f"\n{gauge} 0.0" in text


def test_every_documented_metric_is_recordable() -> None:
    m = Metrics()
    m.count_request(backend="local", route="r", reason="local", outcome="ok")
    m.observe_latency("local", True, 0.42)
    m.observe_ttft("local", 0.1)
    m.local_in_flight.labels(backend="local", model="gpt-oss-20b").set(2)
    m.local_queued.labels(backend="local", model="gpt-oss-20b").set(1)
    m.local_estimated_wait_seconds.labels(backend="local", model="gpt-oss-20b").set(1.5)
    m.vram_used_bytes.labels(backend="local").set(13e9)
    m.vram_free_bytes.labels(backend="local").set(11e9)
    m.count_spill("queue_wait_1800ms>1000ms")
    m.count_private_refused("no_local_capacity")
    m.retries_total.labels(backend="bedrock").inc()
    m.count_failover("local", "timeout")
    m.set_breaker("local", "half-open")
    m.policy_reloads_total.labels(result="ok").inc()
    m.stream_errors_total.labels(backend="local", kind="idle_timeout").inc()
    m.cloud_spend_usd_total.labels(backend="bedrock").inc(0.0123)
    m.local_savings_usd_total.labels(backend="local").inc(0.02)
    m.state_store_degraded.set(1)
    m.state_store_fallbacks_total.inc()

    s = _samples(m)
    labels = (("backend", "local"), ("outcome", "ok"), ("reason", "local"), ("route", "r"))
    assert s[("router_requests_total", labels)] == 1
    assert s[("router_request_latency_seconds_count", (("backend", "local"), ("stream", "true")))]
    assert s[("router_spill_total", (("reason", "queue_wait"),))] == 1
    assert s[("router_private_refused_total", (("reason", "no_local_capacity"),))] == 1
    assert s[("router_failovers_total", (("from_backend", "local"), ("reason", "timeout")))] == 1
    assert s[("router_breaker_state", (("backend", "local"),))] == 1
    assert s[("router_cloud_spend_usd_total", (("backend", "bedrock"),))] == pytest.approx(0.0123)
    assert s[("router_state_store_degraded", ())] == 1
    assert s[("router_state_store_fallbacks_total", ())] == 1


def test_breaker_states() -> None:
    m = Metrics()
    for state, value in [("closed", 0), ("half_open", 1), ("open", 2)]:
        m.set_breaker("b", state)
        assert _samples(m)[("router_breaker_state", (("backend", "b"),))] == value
    with pytest.raises(KeyError):
        m.set_breaker("b", "ajar")


def test_request_labels_stay_bounded() -> None:
    m = Metrics()
    for ms in range(100):
        m.count_request(
            backend="bedrock", route=None, reason=f"queue_wait_{ms}ms>1000ms", outcome="ok"
        )
    m.count_request(backend=None, route=None, reason="", outcome="no_local_capacity")
    series = [k for k in _samples(m) if k[0] == "router_requests_total"]
    assert len(series) == 2
    assert (
        "router_requests_total",
        (("backend", "none"), ("outcome", "no_local_capacity"), ("reason", "other"),
         ("route", "none")),
    ) in series  # fmt: skip


def test_each_metrics_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.retries_total.labels(backend="x").inc()
    assert ("router_retries_total", (("backend", "x"),)) not in _samples(b)


def test_namespace_is_configurable() -> None:
    body, _ = Metrics(namespace="hr").render()
    assert b"hr_requests_total" in body and b"router_requests_total" not in body


@pytest.mark.parametrize(
    ("reason", "cls"),
    [
        ("local", "local"),
        ("private_local_only", "private_local_only"),
        ("queue_wait_1800ms>1000ms", "queue_wait"),
        ("queue_wait_0ms>0ms", "queue_wait"),
        ("model_not_resident", "model_not_resident"),
        ("vram_insufficient", "vram_insufficient"),
        ("context_65536>32768", "context"),
        ("local_unhealthy", "local_unhealthy"),
        ("failover_after=timeout", "failover_after"),
        ("  Local_Unhealthy ", "local_unhealthy"),
        ("", "other"),
        ("1800ms", "other"),
        (">", "other"),
        ("x" * 100, "other"),
    ],
)
def test_reason_class(reason: str, cls: str) -> None:
    assert reason_class(reason) == cls
