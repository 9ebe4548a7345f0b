"""Build the ASGI app: settings -> policy -> state store -> service -> routes.

The lifespan starts the service (first probes, probe loops), watches the policy file and
SIGHUP for reloads, and closes everything on shutdown. Uvicorn's graceful shutdown gives
requests in flight `grace_s` to finish on SIGTERM.

In front of the routes: the Host allow-list, CORS (only when origins are configured) and the
request-body timeout (`api/guards.py`); status and metrics are for ops keys, models for client
keys (`api/access.py`). No response shows an absolute path (`public_text`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.api.access import Access
from router.api.error_responses import error_response
from router.api.guards import BodyTimeout, HostGuard, allowed_host_set, cors_middleware
from router.api.health_routes import HealthRoutes
from router.api.openai_routes import ChatRoutes
from router.api.openapi import openapi_json
from router.audit import AuditLog
from router.auth import hash_key
from router.errors import RouterError
from router.metrics import SlowClient
from router.policy.loader import PolicyError, default_policy, load_policy
from router.policy.schema import Policy
from router.service import RouterService
from router.settings import RouterSettings
from router.state.base import StateStore
from router.state.memory import MemoryStore

log = logging.getLogger("router.app")


def initial_policy(settings: RouterSettings) -> Policy:
    if settings.policy_file:
        return load_policy(settings.policy_file)
    return default_policy(settings.ollama_host, settings.aws_region)


def build_store(settings: RouterSettings) -> StateStore:
    if not settings.redis_url:
        return MemoryStore()
    from router.state.redis_store import RedisStore
    from router.state.resilient import FallbackStore

    shared = RedisStore(settings.redis_url, prefix=settings.redis_prefix,
                        lease_s=settings.redis_lease_s, op_timeout_s=settings.redis_op_timeout_s)
    return FallbackStore(shared, MemoryStore(), op_timeout_s=settings.redis_op_timeout_s)


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


def create_app(
    settings: RouterSettings | None = None,
    *,
    policy: Policy | None = None,
    store: StateStore | None = None,
) -> Starlette:
    settings = settings or RouterSettings()
    policy = policy or initial_policy(settings)
    store = store or build_store(settings)
    audit = AuditLog(settings.audit_log, max_bytes=settings.audit_max_bytes)
    service = RouterService(policy, store, audit=audit)
    reloader = PolicyReloader(service, settings.policy_file)
    admin_hash = hash_key(settings.admin_key.get_secret_value()) if settings.admin_key else None
    chat = ChatRoutes(service, settings.max_body_bytes, settings.open_remote,
                      send_timeout_s=settings.send_timeout_s)
    health = HealthRoutes(service, reloader.reload, admin_hash)
    access = Access(service, admin_hash, settings.open_remote)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        tasks: list[asyncio.Task[None]] = []
        if settings.policy_file and settings.watch_policy:
            tasks.append(asyncio.create_task(reloader.watch()))
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP,
                                    lambda: loop.create_task(reloader.reload()))
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
            await service.stop()
            audit.close()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        err = RouterError(f"{request.method} {request.url.path}: {exc.detail}", code=code,
                          status=exc.status_code)
        err.type = "invalid_request_error"
        return error_response(err, exc.headers)  # 405 keeps its Allow header

    async def unexpected(request: Request, exc: Exception) -> Response:
        return error_response(exc)

    routes = [
        Route("/v1/chat/completions", chat.chat_completions, methods=["POST"]),
        Route("/chat/completions", chat.chat_completions, methods=["POST"]),
        Route("/v1/models", access.client(chat.models), methods=["GET"]),
        Route("/v1/router/explain", chat.explain, methods=["POST"]),
        Route("/v1/router/status", access.ops(health.status), methods=["GET"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", access.ops(health.metrics), methods=["GET"]),
        Route("/admin/reload", health.admin_reload, methods=["POST"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
    middleware = [
        Middleware(HostGuard, allowed=allowed_host_set(settings.allowed_hosts, settings.host)),
        *cors_middleware(settings.cors_origins),
        Middleware(BodyTimeout, timeout_s=settings.body_timeout_s,
                   on_timeout=lambda: service.metrics.count_slow_client(SlowClient.BODY_TIMEOUT)),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware,
                    exception_handlers={HTTPException: http_error, Exception: unexpected})
    app.router.redirect_slashes = False  # a trailing slash is a JSON 404, never a redirect
    app.state.service = service
    app.state.settings = settings
    app.state.reloader = reloader
    return app


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~])/(?:[^\s'\"/:,()]+/)+([^\s'\"/:,()]+)")


def public_text(text: str, path: str | None) -> str:
    """`text` with the policy file (and any other absolute path) shown by its name only."""
    if path:
        for spelling in sorted({str(Path(path).resolve()), os.path.abspath(path), path},
                               key=len, reverse=True):
            text = text.replace(spelling, Path(path).name)
    return _ABSOLUTE_PATH.sub(r"\1", text)


def policy_path(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None
