"""Background probes: residency and VRAM facts for the planner, health for the breakers.

Local backends are probed every `probe_interval_s` with cheap calls (`/api/version`,
`/api/ps`); a failed probe counts as a health failure, a good one half-opens an open breaker
that failed probes opened (never one that failed requests opened: `circuit.py`).
Cloud backends are probed rarely and never with billable inference (readiness only).
For an Ollama host it also warns (once per state, so once at start in a steady fleet) when the
host's cloud features are on or it cannot tell, and for every configured model its config says
is forwarded off the premises (`remote_model_reason`: one of Ollama's cloud models, by its tag
or as `/api/tags` lists it): those never serve private requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from router.backends.base import Backend, ProbeResult
from router.backends.configs import BackendConfigBase
from router.backends.ollama_cloud import cloud_features
from router.resilience.circuit import BreakerBook

log = logging.getLogger("router.prober")
CLOUD_PROBE_INTERVAL_S = 60.0


class Prober:
    def __init__(
        self,
        backends: Mapping[str, Backend],
        intervals: Mapping[str, float],
        breakers: BreakerBook,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.backends = backends
        self.intervals = intervals
        self.breakers = breakers
        self.sleep = sleep
        self.results: dict[str, ProbeResult] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._warned: set[tuple[str, str]] = set()

    async def probe_once(self, name: str) -> ProbeResult:
        backend = self.backends[name]
        try:
            result = await backend.probe()
        except Exception as exc:  # noqa: BLE001 - a probe must never take the router down
            result = ProbeResult(ok=False, detail=f"probe error: {type(exc).__name__}")
        previous = self.results.get(name)
        self.results[name] = result
        if backend.local:
            if result.ok:
                await self.breakers.probe_succeeded(name)
            else:
                await self.breakers.record_health_failure(name)
        if previous is None or previous.ok != result.ok:
            log.info("backend %s probe: %s %s", name, "ok" if result.ok else "FAILED",
                     result.detail)
        if backend.local and result.ok:
            self._warn_ollama_cloud(name, backend, result)
        return result

    def _warn_once(self, name: str, message: str) -> None:
        if (name, message) not in self._warned:
            self._warned.add((name, message))
            log.warning("backend %s: %s", name, message)

    def _warn_ollama_cloud(self, name: str, backend: Backend, result: ProbeResult) -> None:
        if result.version is None:
            return  # not an Ollama host (a test double)
        warning = cloud_features(result)["warning"]
        if isinstance(warning, str):
            self._warn_once(name, warning)
        config = getattr(backend, "config", None)
        if not isinstance(config, BackendConfigBase):
            return
        for logical, model_id in config.models.items():
            why = config.remote_model_reason(model_id, result)
            if why is not None:
                self._warn_once(name, f"{logical}: {why}; it is not local and never serves "
                                      "private requests")

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe_once(n) for n in self.backends))

    async def _loop(self, name: str, interval: float) -> None:
        while True:
            await self.sleep(interval)
            await self.probe_once(name)

    def start(self) -> None:
        for name, backend in self.backends.items():
            interval = self.intervals.get(name) if backend.local else CLOUD_PROBE_INTERVAL_S
            self._tasks.append(asyncio.create_task(self._loop(name, interval or 5.0)))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
