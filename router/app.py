"""The HTTP app on top of the composition root (`router/compose.py`): routes and middleware.

`create_app` composes the router (settings -> policy -> store -> pool -> service), puts the
OpenAI surface, the operational routes and the guards in front of the service facade, and ties
the parts' start and close to the app's lifespan: first probes and probe loops on start, the
policy-file watch and SIGHUP for reloads, and everything closed on shutdown. Uvicorn's
graceful shutdown gives requests in flight `grace_s` to finish on SIGTERM.

In front of the routes: the Host allow-list, CORS (only when origins are configured) and the
request-body timeout (`api/guards.py`); status and metrics are for ops keys, models for client
keys (`api/access.py`). No response shows an absolute path (`compose.public_text`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Mapping

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from router.api import anthropic_routes, ollama_routes, responses_routes, ui_routes
from router.api.access import Access
from router.api.error_responses import error_response
from router.api.guards import BodyTimeout, HostGuard, allowed_host_set, cors_middleware
from router.api.health_routes import HealthRoutes
from router.api.openai_routes import ChatRoutes
from router.api.openapi import openapi_json
from router.compose import PolicyReloader, compose, public_text
from router.errors import RouterError
from router.ids import new_id
from router.metrics import SlowClient
from router.policy.schema import Policy
from router.settings import RouterSettings
from router.state.base import StateStore

__all__ = ["PolicyReloader", "create_app", "public_text"]


def dialect_error(request: Request, exc: BaseException,
                  headers: Mapping[str, str] | None) -> Response:
    """An app-level error (unknown path, wrong method, a bug) in the shape of the dialect whose
    paths were asked for: Ollama's native API under `/api/` (and `/`), Anthropic's under
    `/v1/messages`, OpenAI's everywhere else."""
    path = request.url.path
    if path == "/" or path.startswith("/api/"):
        return ollama_routes.ollama_error(exc, headers)
    if path.startswith("/v1/messages"):
        resp = anthropic_routes.error_response(exc, new_id("req"))
        resp.headers.update(headers or {})
        return resp
    return error_response(exc, headers)


def create_app(
    settings: RouterSettings | None = None,
    *,
    policy: Policy | None = None,
    store: StateStore | None = None,
) -> Starlette:
    settings = settings or RouterSettings()
    parts = compose(settings, policy=policy, store=store)
    service, reloader = parts.service, parts.reloader
    chat = ChatRoutes(service, settings.max_body_bytes, send_timeout_s=settings.send_timeout_s)
    health = HealthRoutes(service, reloader.reload)
    access = Access(service)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await parts.start()
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
            await parts.aclose()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        err = RouterError(f"{request.method} {request.url.path}: {exc.detail}", code=code,
                          status=exc.status_code)
        err.type = "invalid_request_error"
        return dialect_error(request, err, exc.headers)  # 405 keeps its Allow header

    async def unexpected(request: Request, exc: Exception) -> Response:
        return dialect_error(request, exc, None)

    routes: list[BaseRoute] = [
        Route("/v1/chat/completions", chat.chat_completions, methods=["POST"]),
        Route("/chat/completions", chat.chat_completions, methods=["POST"]),
        Route("/v1/models", access.client(chat.models), methods=["GET"]),
        Route("/v1/models/{model_id:path}", access.client(chat.model), methods=["GET"]),
        Route("/v1/router/explain", chat.explain, methods=["POST"]),
        Route("/v1/router/status", access.ops(health.status), methods=["GET"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", access.ops(health.metrics), methods=["GET"]),
        Route("/admin/reload", health.admin_reload, methods=["POST"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        # The other client dialects: codecs over the same service facade.
        *responses_routes.routes(service, settings, access),
        *ollama_routes.routes(service, settings, access),
        *anthropic_routes.routes(service, settings, access),
        *ui_routes.routes(service, access),  # the live dashboard: /ui, /ui/events
    ]
    middleware = [
        Middleware(HostGuard, allowed=allowed_host_set(settings.allowed_hosts, settings.host)),
        *cors_middleware(settings.cors_origins),
        Middleware(BodyTimeout, timeout_s=settings.body_timeout_s,
                   on_timeout=lambda: service.count_slow_client(SlowClient.BODY_TIMEOUT)),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware,
                    exception_handlers={HTTPException: http_error, Exception: unexpected})
    app.router.redirect_slashes = False  # a trailing slash is a JSON 404, never a redirect
    app.state.service = service
    app.state.settings = settings
    app.state.reloader = reloader
    app.state.router = parts
    return app
