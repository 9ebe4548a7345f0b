"""One policy made live: its backends, breakers, prober, executor and key ring.

A policy reload builds a new `Runtime` and swaps it in; requests hold the runtime they started
with (`enter`/`leave`), and the old one closes its backends only when its last request ends,
so a reload never drops a request in flight.

What outlives a policy is handed in by the composition root (`router/compose.py`): the state
store, the clocks, the metric hooks and the blocking-call pool that AWS backends run on (given
to every backend that is a `PoolUser`). The runtime builds only what belongs to its policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from router.auth import KeyRing
from router.backends.base import Backend
from router.backends.pool import BlockingPool, PoolUser
from router.backends.registry import build_backend
from router.executor import Executor, Hooks
from router.policy.schema import Policy
from router.resilience.circuit import BreakerBook
from router.resilience.prober import Prober
from router.state.base import StateStore

log = logging.getLogger("router.runtime")


class Runtime:
    def __init__(
        self,
        policy: Policy,
        store: StateStore,
        *,
        clock: Callable[[], float],
        hooks: Hooks | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backend_factory: Callable[[str, object], Backend] | None = None,
        breaker_clock: Callable[[], float] = time.time,
        pool: BlockingPool | None = None,
    ) -> None:
        self.policy = policy
        self.store = store
        factory = backend_factory or build_backend
        self.backends: dict[str, Backend] = {
            name: factory(name, cfg)  # type: ignore[arg-type]
            for name, cfg in policy.backends.items()
        }
        if pool is not None:
            for backend in self.backends.values():
                if isinstance(backend, PoolUser):
                    backend.use_pool(pool)
        self.local = {name: cfg.local for name, cfg in policy.backends.items()}
        # Breaker times are shared through the store: wall clock, comparable across hosts.
        self.breakers = BreakerBook(store, policy.circuit, self.local, breaker_clock)
        intervals = {
            name: cap.probe_interval_s
            for name, cfg in policy.backends.items()
            if (cap := cfg.local_capacity()) is not None
        }
        self.prober = Prober(self.backends, intervals, self.breakers, sleep=sleep)
        self.executor = Executor(backends=self.backends, policy=policy, store=store,
                                 breakers=self.breakers, clock=clock, sleep=sleep, hooks=hooks)
        self.keys = KeyRing(list(policy.keys))
        self.aliases = policy.alias_table()
        self.active = 0
        self._retired = False
        self._closed: asyncio.Event | None = None
        self._warming: set[tuple[str, str]] = set()

    async def start(self) -> None:
        await self.prober.probe_all()
        self.prober.start()

    def enter(self) -> None:
        self.active += 1

    def leave(self) -> None:
        self.active -= 1
        if self._retired and self.active == 0:
            asyncio.get_running_loop().create_task(self.close())

    async def retire(self) -> None:
        """Stop probing; close backends once the last request using this runtime ends."""
        self._retired = True
        await self.prober.stop()
        if self.active == 0:
            await self.close()

    async def close(self) -> None:
        if self._closed is not None:
            return
        self._closed = asyncio.Event()
        await self.prober.stop()
        for backend in self.backends.values():
            with contextlib.suppress(Exception):
                await backend.aclose()
        self._closed.set()

    def warm(self, backend: str, model_id: str) -> None:
        """Load a cold model locally in the background (deduplicated)."""
        key = (backend, model_id)
        if key in self._warming:
            return
        self._warming.add(key)

        async def run() -> None:
            try:
                await self.backends[backend].warm(model_id)
                await self.prober.probe_once(backend)
            except Exception:  # noqa: BLE001
                log.warning("warming %s on %s failed", model_id, backend, exc_info=True)
            finally:
                self._warming.discard(key)

        asyncio.get_running_loop().create_task(run())
