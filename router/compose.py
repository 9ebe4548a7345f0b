"""The composition root: the one place that builds, starts and closes the router's parts.

    settings -> policy -> state store -> blocking pool (AWS SDK calls) -> audit log
             -> service (metrics, recorder; it builds each policy's `Runtime` with the store,
                the clock, the metric hooks and the pool handed in) -> reloader -> app

`compose()` builds everything without I/O; `Router.start()` runs the first probes and starts
the probe loops; `Router.aclose()` closes in reverse: the runtime's backends, the store, the
pool's threads, the audit file. `router/app.py` puts the HTTP surface on top.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from router.audit import AuditLog
from router.auth import hash_key
from router.backends.pool import BlockingPool
from router.policy.loader import PolicyError, default_policy, load_policy
from router.policy.schema import Policy
from router.service import RouterService
from router.settings import RouterSettings
from router.state.base import StateStore
from router.state.resilient import build_store as build_state_store

log = logging.getLogger("router.app")


def initial_policy(settings: RouterSettings) -> Policy:
    if settings.policy_file:
        return load_policy(settings.policy_file)
    return default_policy(settings.ollama_host, settings.aws_region)


def build_store(settings: RouterSettings) -> StateStore:
    return build_state_store(settings.redis_url, settings.redis_prefix, settings.redis_lease_s,
                             op_timeout_s=settings.redis_op_timeout_s)


class PolicyReloader:
    """Reload on file change, SIGHUP or admin call; an invalid file keeps the old policy."""

    def __init__(self, service: RouterService, path: str | None) -> None:
        self.service = service
        self.path = path
        self._mtime = self._stat()
        self._lock = asyncio.Lock()

    def _stat(self) -> float | None:
        if not self.path:
            return None
        try:
            return os.stat(self.path).st_mtime
        except OSError:
            return None

    async def reload(self) -> tuple[bool, str]:
        if not self.path:
            return False, "no policy file configured (built-in default policy in use)"
        async with self._lock:
            self._mtime = self._stat()
            try:
                policy = await asyncio.to_thread(load_policy, self.path)
            except PolicyError as exc:
                message = public_text(str(exc), self.path)
                self.service.reload_failed(message)
                return False, message
            await self.service.reload(policy)
            log.info("policy reloaded from %s", self.path)
            return True, f"policy reloaded from {Path(self.path).name}"

    async def watch(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            mtime = self._stat()
            if mtime is not None and mtime != self._mtime:
                await self.reload()


@dataclass(slots=True)
class Router:
    """Everything one router process runs, built by `compose`."""

    settings: RouterSettings
    service: RouterService
    reloader: PolicyReloader
    pool: BlockingPool
    audit: AuditLog

    async def start(self) -> None:
        await self.service.start()

    async def aclose(self) -> None:
        try:
            await self.service.stop()
        finally:
            self.pool.shutdown()
            self.audit.close()


def compose(settings: RouterSettings, *, policy: Policy | None = None,
            store: StateStore | None = None) -> Router:
    policy = policy or initial_policy(settings)
    store = store or build_store(settings)
    pool = BlockingPool()
    audit = AuditLog(settings.audit_log, max_bytes=settings.audit_max_bytes)
    admin_hash = hash_key(settings.admin_key.get_secret_value()) if settings.admin_key else None
    service = RouterService(policy, store, audit=audit, pool=pool,
                            open_remote=settings.open_remote, admin_key_hash=admin_hash,
                            replica_id=settings.replica_id)
    return Router(settings, service, PolicyReloader(service, settings.policy_file), pool, audit)


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~])/(?:[^\s'\"/:,()]+/)+([^\s'\"/:,()]+)")


def public_text(text: str, path: str | None) -> str:
    """`text` with the policy file (and any other absolute path) shown by its name only."""
    if path:
        for spelling in sorted({str(Path(path).resolve()), os.path.abspath(path), path},
                               key=len, reverse=True):
            text = text.replace(spelling, Path(path).name)
    return _ABSOLUTE_PATH.sub(r"\1", text)
