"""Operational endpoints: /healthz, /readyz, /metrics, /v1/router/status, POST /admin/reload.

/healthz and /readyz answer with a status word only (200, or 503 while no backend is usable);
who may read status and metrics is decided in `access.py` (the routes are wrapped in app.py).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from router.api.error_responses import error_response
from router.auth import hash_key
from router.errors import PermissionDenied, Unauthorized
from router.planner import estimated_wait
from router.resilience.circuit import BREAKER_GAUGE
from router.service import RouterService
from router.state.base import slot_key


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


class HealthRoutes:
    def __init__(
        self,
        service: RouterService,
        reload: Callable[[], Awaitable[tuple[bool, str]]],
        admin_key_hash: str | None,
    ) -> None:
        self.service = service
        self._reload = reload
        self._admin_key_hash = admin_key_hash
        self._fallbacks_seen = 0

    async def healthz(self, request: Request) -> Response:
        return _json({"status": "ok"})

    def usable_backends(self) -> list[str]:
        rt = self.service.runtime
        out = []
        for name in rt.backends:
            probe = rt.prober.results.get(name)
            if rt.breakers.allows(name) and (probe is None or probe.ok):
                out.append(name)
        return out

    async def readyz(self, request: Request) -> Response:
        # A status word only: which backends are usable is for /v1/router/status (ops).
        if self.usable_backends():
            return _json({"status": "ready"})
        return _json({"status": "unavailable"}, 503)

    async def metrics(self, request: Request) -> Response:
        m = self.service.metrics
        rt = self.service.runtime
        policy = rt.policy
        slot_keys = [slot_key(n, mid) for n, c in policy.backends.items() if c.local
                     for mid in c.models.values()]
        snap = await self.service.store.snapshot(slot_keys, [])
        self.service.export_load(policy, snap.slots)
        for name in rt.backends:
            m.breaker_state.labels(backend=name).set(BREAKER_GAUGE[rt.breakers.state_name(name)])
            probe = rt.prober.results.get(name)
            if probe is not None and probe.gpu_free_bytes is not None:
                m.vram_free_bytes.labels(backend=name).set(probe.gpu_free_bytes)
            if probe is not None and probe.loaded:
                m.vram_used_bytes.labels(backend=name).set(sum(x.size_vram for x in probe.loaded))
        store_status = self.service.store.status()
        m.state_store_degraded.set(1 if store_status.get("degraded") else 0)
        fallbacks = store_status.get("fallbacks_total")
        if isinstance(fallbacks, int) and fallbacks > self._fallbacks_seen:
            m.state_store_fallbacks_total.inc(fallbacks - self._fallbacks_seen)
            self._fallbacks_seen = fallbacks
        body, ctype = m.render()
        return Response(body, media_type=ctype)

    async def status(self, request: Request) -> Response:
        svc = self.service
        rt = svc.runtime
        policy = rt.policy
        slot_keys = [slot_key(n, mid) for n, c in policy.backends.items() if c.local
                     for mid in c.models.values()]
        snap = await svc.store.snapshot(slot_keys, list(policy.backends))
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
                queues = {}
                for logical, mid in cfg.models.items():
                    load = snap.slots[slot_key(name, mid)]
                    queues[logical] = {
                        "model_id": mid, "in_flight": load.in_flight, "queued": load.queued,
                        "slots": getattr(cfg, "parallel", 1),
                        "service_time_s": load.service_time_s,
                        "estimated_wait_s": estimated_wait(load, getattr(cfg, "parallel", 1)),
                    }
                entry["queues"] = queues
                # Ollama's own cloud: whether the host has it off, and models it forwards.
                from router.backends.ollama_cloud import cloud_features, cloud_reason

                entry["ollama_cloud"] = cloud_features(probe)
                entry["not_local_models"] = {
                    logical: {"model_id": mid, "reason": "ollama_cloud_model", "why": why}
                    for logical, mid in cfg.models.items()
                    if (why := cloud_reason(mid, probe)) is not None}
            backends[name] = entry
        usable = self.usable_backends()
        return _json({
            "ready": bool(usable),
            "usable_backends": usable,
            "backends": backends,
            "routes": [r.name for r in policy.routes],
            "store": svc.store.status(),
            "policy_reloads": svc.reloads,
            "last_reload_error": svc.last_reload_error,
        })

    async def admin_reload(self, request: Request) -> Response:
        try:
            self._check_admin(request)
        except (Unauthorized, PermissionDenied) as exc:
            return error_response(exc)
        ok, message = await self._reload()
        return _json({"reloaded": ok, "message": message}, 200 if ok else 400)

    def _check_admin(self, request: Request) -> None:
        auth = request.headers.get("authorization", "")
        presented = auth[7:].strip() if auth.lower().startswith("bearer ") else (
            request.headers.get("x-api-key", ""))
        if not presented:
            raise Unauthorized("Admin calls need an admin key (Authorization: Bearer ...).")
        digest = hash_key(presented)
        candidates = [k.sha256 for k in self.service.policy.keys if k.admin]
        if self._admin_key_hash:
            candidates.append(self._admin_key_hash)
        matched = False
        for h in candidates:
            matched |= hmac.compare_digest(digest, h)
        if not candidates:
            raise PermissionDenied("Admin calls are disabled: set ROUTER_ADMIN_KEY or give a "
                                   "policy key `admin: true`.", code="admin_disabled")
        if not matched:
            raise Unauthorized("Invalid admin key.")
