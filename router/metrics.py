"""Prometheus metrics, on a registry of their own (`Metrics()` builds a fresh one: tests and
several apps in one process never collide with `prometheus_client`'s global registry).

Names carry the `router_` namespace (`router_requests_total`, ...). Label values stay bounded:
backends, routes and models come from the policy; outcomes are error codes; free-form reason
strings such as `queue_wait_1800ms>1000ms` are reduced to their class (`queue_wait`) by
`reason_class` before they become labels; the recording helpers below do that for callers.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from router.reasons import Reason

__all__ = ["BREAKER_STATES", "Metrics", "SlowClient", "reason_class"]

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
BREAKER_STATES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}



class SlowClient(StrEnum):
    """Why a client was cut off by the server's own limits."""

    HEADER_TIMEOUT = "header_timeout"
    BODY_TIMEOUT = "body_timeout"
    SEND_TIMEOUT = "send_timeout"
    OVER_CAPACITY = "over_capacity"


_REASON_HEAD = re.compile(r"[a-z][a-z_]*")
_MAX_CLASS_LEN = 40


def reason_class(reason: Reason | str) -> str:
    """The bounded class of a routing reason, for labels: a `Reason` gives its code.

    Plain strings (error codes, legacy callers) are reduced to their class:

    `queue_wait_1800ms>1000ms` -> `queue_wait`, `context_65536>32768` -> `context`,
    `failover_after=timeout` -> `failover_after`, `local` -> `local`; anything without a
    lower-case identifier head -> `other`. Only the leading identifier is kept, and a trailing
    `_<number...>` part of it is dropped, so numbers and free text never become label values.
    """
    if isinstance(reason, Reason):
        return reason.code.value
    m = _REASON_HEAD.match(reason.strip().lower())
    if m is None:
        return "other"
    head = m.group().rstrip("_")
    # `queue_wait_1800ms` stops the match at the digit: the head is `queue_wait_` -> strip "_".
    if not head or len(head) > _MAX_CLASS_LEN:
        return "other"
    return head


class Metrics:
    """Every metric the router exports, on `self.registry`."""

    def __init__(self, namespace: str = "router") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[Any, ...], Any] = {}
        r, ns = self.registry, namespace

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=ns, registry=r)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, namespace=ns, registry=r)

        self.requests_total = counter(
            "requests",
            "Requests by serving backend, route, reason class and outcome.",
            ("backend", "route", "reason", "outcome"),
        )
        self.request_latency_seconds = Histogram(
            "request_latency_seconds",
            "End-to-end request latency.",
            ("backend", "stream"),
            namespace=ns,
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.ttft_seconds = Histogram(
            "ttft_seconds",
            "Time to the first streamed token (reasoning counts).",
            ("backend",),
            namespace=ns,
            registry=r,
            buckets=TTFT_BUCKETS,
        )
        self.local_in_flight = gauge(
            "local_in_flight", "Requests running on a local (host, model).", ("backend", "model")
        )
        self.local_queued = gauge(
            "local_queued", "Requests waiting for a local slot.", ("backend", "model")
        )
        self.local_estimated_wait_seconds = gauge(
            "local_estimated_wait_seconds",
            "Estimated wait of a new local request.",
            ("backend", "model"),
        )
        self.vram_used_bytes = gauge("vram_used_bytes", "GPU memory in use.", ("backend",))
        self.vram_free_bytes = gauge("vram_free_bytes", "GPU memory free.", ("backend",))
        self.spill_total = counter(
            "spill",
            "Standard requests sent to the cloud instead of local, by reason class.",
            ("reason",),
        )
        self.private_refused_total = counter(
            "private_refused", "Private requests refused (never sent to the cloud).", ("reason",)
        )
        self.retries_total = counter("retries", "Retries on the same backend.", ("backend",))
        self.failovers_total = counter(
            "failovers", "Moves to the next candidate.", ("from_backend", "reason")
        )
        self.breaker_state = gauge(
            "breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.", ("backend",)
        )
        self.policy_reloads_total = counter(
            "policy_reloads", "Policy reloads by result (ok, invalid).", ("result",)
        )
        self.stream_errors_total = counter(
            "stream_errors", "Streams ended by an error, by kind.", ("backend", "kind")
        )
        self.stream_chunks_skipped_total = counter(
            "stream_chunks_skipped", "Malformed stream chunks skipped.", ("backend",))
        self.hedges_total = counter(
            "hedges", "Hedged attempts started because the first token was late, by the "
            "hedged backend and outcome (won, lost).", ("backend", "outcome"))
        self.stream_continuations_total = counter(
            "stream_continuations", "Broken streams continued on another backend, by the "
            "continuing backend and outcome.", ("backend", "outcome"))
        self.cloud_spend_usd_total = counter(
            "cloud_spend_usd", "Estimated cloud spend in USD.", ("backend",)
        )
        self.tokens_total = counter(
            "tokens", "Tokens served, by backend and kind (prompt, completion), when the "
            "backend reported usage.", ("backend", "kind"))
        self.spend_today_usd = gauge(
            "spend_today_usd", "Today's cloud spend per scope (backend:<name>, key:<name>), "
            "from the state store (shared across replicas on Redis).", ("scope",))
        self.spend_cap_usd = gauge(
            "spend_cap_usd", "The policy's daily_budget_usd per scope (where one is set).",
            ("scope",))
        self.local_savings_usd_total = counter(
            "local_savings_usd", "Estimated cloud cost avoided by serving locally.", ("backend",)
        )
        self.state_store_degraded = gauge(
            "state_store_degraded", "1 while the shared state store is unreachable."
        )
        self.state_store_fallbacks_total = counter(
            "state_store_fallbacks", "Operations that fell back to local state."
        )
        self.slow_clients_total = counter(
            "slow_clients",
            "Clients cut off for being too slow, by kind (header_timeout, body_timeout, "
            "send_timeout, over_capacity).",
            ("kind",),
        )

    # -- recording helpers: bounded labels ------------------------------------------------

    # The per-request series keep their children in a dict of their own (`_child`): one
    # lookup per request instead of prometheus_client's label checks and lock. Label values
    # are bounded (see the module docstring), and so are these dicts.

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def count_request(
        self, *, backend: str | None, route: str | None, reason: Reason | str, outcome: str
    ) -> None:
        self._child(self.requests_total, backend or "none", route or "none",
                    reason_class(reason), outcome).inc()

    def observe_latency(self, backend: str | None, stream: bool, seconds: float) -> None:
        self._child(self.request_latency_seconds, backend or "none",
                    "true" if stream else "false").observe(seconds)

    def observe_ttft(self, backend: str, seconds: float) -> None:
        self._child(self.ttft_seconds, backend).observe(seconds)

    def count_tokens(self, backend: str, prompt: int, completion: int) -> None:
        self._child(self.tokens_total, backend, "prompt").inc(max(0, prompt))
        self._child(self.tokens_total, backend, "completion").inc(max(0, completion))

    def count_spill(self, reason: Reason | str) -> None:
        self.spill_total.labels(reason=reason_class(reason)).inc()

    def count_private_refused(self, reason: str) -> None:
        self.private_refused_total.labels(reason=reason_class(reason)).inc()

    def count_failover(self, from_backend: str, reason: str) -> None:
        self.failovers_total.labels(from_backend=from_backend, reason=reason_class(reason)).inc()

    def set_breaker(self, backend: str, state: str) -> None:
        """`state` is closed, half_open (or half-open) or open."""
        self.breaker_state.labels(backend=backend).set(BREAKER_STATES[state])

    def count_slow_client(self, kind: SlowClient) -> None:
        self.slow_clients_total.labels(kind=kind.value).inc()

    def render(self) -> tuple[bytes, str]:
        """(body, content type) for a `/metrics` response."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
