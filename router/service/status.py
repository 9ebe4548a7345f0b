"""The read side for operators: readiness, the status document and the metrics scrape.

Reads the live runtime (probes, breakers), the state store (queues, fallbacks) and the
policy; the HTTP surface only encodes what this returns. Queue gauges are set when
`/metrics` is scraped, not on the request path; so are today's spend per scope (from the
store) and each scope's daily cap (from the policy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from router.backends.ollama_cloud import cloud_features
from router.metrics import Metrics
from router.planner import estimated_wait
from router.policy.schema import Policy
from router.resilience.circuit import BREAKER_GAUGE
from router.runtime import Runtime
from router.service.dashboard import spend_caps
from router.state.base import SlotLoad, StateStore, slot_key


class StatusView:
    def __init__(self, runtime: Callable[[], Runtime], store: StateStore, metrics: Metrics,
                 reloads: Callable[[], dict[str, Any]]) -> None:
        self._runtime = runtime
        self.store = store
        self.metrics = metrics
        self._reloads = reloads
        self._fallbacks_seen = 0

    def usable_backends(self) -> list[str]:
        rt = self._runtime()
        out = []
        for name in rt.backends:
            probe = rt.prober.results.get(name)
            if rt.breakers.allows(name) and (probe is None or probe.ok):
                out.append(name)
        return out

    def ready(self) -> bool:
        return bool(self.usable_backends())

    @staticmethod
    def _slot_keys(policy: Policy) -> list[str]:
        return [slot_key(n, mid) for n, c in policy.backends.items() if c.local
                for mid in c.models.values()]

    async def status(self) -> dict[str, Any]:
        rt = self._runtime()
        policy = rt.policy
        snap = await self.store.snapshot(self._slot_keys(policy), list(policy.backends))
        backends = {}
        for name, cfg in policy.backends.items():
            probe = rt.prober.results.get(name)
            entry: dict[str, object] = {
                "type": cfg.type,
                "local": cfg.local,
                "breaker": rt.breakers.state_name(name),
                "probe": None if probe is None else {
                    "ok": probe.ok, "detail": probe.detail, "version": probe.version,
                    "gpu_free_bytes": probe.gpu_free_bytes,
                    "gpu_total_bytes": probe.gpu_total_bytes,
                    "loaded": [{"model": x.model_id, "size": x.size, "size_vram": x.size_vram,
                                "context_length": x.context_length, "fully_on_gpu":
                                x.fully_on_gpu} for x in probe.loaded],
                },
            }
            if cfg.local:
                cap = cfg.local_capacity()
                slots = cap.slots if cap is not None else 1
                queues = {}
                for logical, mid in cfg.models.items():
                    load = snap.slots[slot_key(name, mid)]
                    queues[logical] = {
                        "model_id": mid, "in_flight": load.in_flight, "queued": load.queued,
                        "slots": slots, "service_time_s": load.service_time_s,
                        "estimated_wait_s": estimated_wait(load, slots, policy.admission),
                    }
                entry["queues"] = queues
                # Ollama's own cloud: whether the host has it off, and models it forwards.
                entry["ollama_cloud"] = cloud_features(probe)
                entry["not_local_models"] = {
                    logical: {"model_id": mid, "reason": "ollama_cloud_model", "why": why}
                    for logical, mid in cfg.models.items()
                    if (why := cfg.remote_model_reason(mid, probe)) is not None}
            backends[name] = entry
        usable = self.usable_backends()
        reloads = self._reloads()
        return {
            "ready": bool(usable),
            "usable_backends": usable,
            "backends": backends,
            "routes": [r.name for r in policy.routes],
            "store": self.store.status(),
            "policy_reloads": reloads["counts"],
            "last_reload_error": reloads["last_error"],
        }

    async def render_metrics(self) -> tuple[bytes, str]:
        """Set the scrape-time gauges, then (body, content type)."""
        m = self.metrics
        rt = self._runtime()
        policy = rt.policy
        caps = spend_caps(policy)
        snap = await self.store.snapshot(self._slot_keys(policy), [], [c[0] for c in caps])
        self._export_load(policy, snap.slots)
        for scope, _, cap in caps:
            m.spend_today_usd.labels(scope=scope).set(snap.spend_usd.get(scope, 0.0))
            if cap is not None:
                m.spend_cap_usd.labels(scope=scope).set(cap)
        for name in rt.backends:
            m.breaker_state.labels(backend=name).set(BREAKER_GAUGE[rt.breakers.state_name(name)])
            probe = rt.prober.results.get(name)
            if probe is not None and probe.gpu_free_bytes is not None:
                m.vram_free_bytes.labels(backend=name).set(probe.gpu_free_bytes)
            if probe is not None and probe.loaded:
                m.vram_used_bytes.labels(backend=name).set(sum(x.size_vram for x in probe.loaded))
        store_status = self.store.status()
        m.state_store_degraded.set(1 if store_status.get("degraded") else 0)
        fallbacks = store_status.get("fallbacks_total")
        if isinstance(fallbacks, int) and fallbacks > self._fallbacks_seen:
            m.state_store_fallbacks_total.inc(fallbacks - self._fallbacks_seen)
            self._fallbacks_seen = fallbacks
        return m.render()

    def _export_load(self, policy: Policy, slots: Mapping[str, SlotLoad]) -> None:
        m = self.metrics
        for key, load in slots.items():
            backend, model = key.split("|", 1)
            m.local_in_flight.labels(backend=backend, model=model).set(load.in_flight)
            m.local_queued.labels(backend=backend, model=model).set(load.queued)
            cfg = policy.backends.get(backend)
            cap = cfg.local_capacity() if cfg is not None else None
            if cap is not None:
                m.local_estimated_wait_seconds.labels(backend=backend, model=model).set(
                    estimated_wait(load, cap.slots, policy.admission))
