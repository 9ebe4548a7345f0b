"""The live dashboard: `GET /ui` (the page), `GET /ui/static/{name}` and `GET /ui/events`.

The page is hand-written HTML, JavaScript and CSS shipped in the package (`api/static/`): no
CDN, no build step. It reads `/ui/events`, a server-sent-event feed sending the service's
`dashboard_view()` (figures, reasons and states, never prompt or answer text) once a second.
The page reads the feed with `fetch()` and a stream reader rather than `EventSource`, so it can
send the operator's key as an `Authorization` header (kept in the tab's sessionStorage; never
in a URL, which would land in access logs).

Access: the feed follows the rule of `/v1/router/status` (`access.ops`): loopback clients when
no keys are configured, else an ops or admin key. The page and its two assets hold no data and
no secret, and a browser cannot send a header when it navigates, so they are served like the
chat surface before a body is read: with keys configured to anyone (the page then asks for
the key), with none to loopback clients only (`service.check_open_access`).

The feed runs while the client stays, for at most `FEED_LIFETIME_S` (the page reconnects), and
ends at once when the router starts shutting down. It streams only to a client that asks for
it (`Accept: text/event-stream`, as the page and `hybrid-router top` do); any other client gets
one event and the end of the response, so a plain `curl` or an API fuzzer never hangs on it.
`?limit=N` ends it after N events.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from importlib import resources

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from router.api.access import Access, Endpoint
from router.api.edge import client_context
from router.api.error_responses import error_response
from router.errors import InvalidRequest, RouterError
from router.service import RouterService

__all__ = ["FEED_INTERVAL_S", "FEED_LIFETIME_S", "UiRoutes", "routes", "shell"]

FEED_INTERVAL_S = 1.0
FEED_LIFETIME_S = 300.0
MAX_LIMIT = 10_000
# The assets by name: nothing else under static/ is ever served (no path from the URL).
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@functools.cache
def asset(name: str) -> bytes:
    return resources.files("router.api").joinpath("static", name).read_bytes()


class UiRoutes:
    def __init__(self, service: RouterService, interval_s: float = FEED_INTERVAL_S) -> None:
        self.service = service
        self.interval_s = interval_s

    async def page(self, request: Request) -> Response:
        """The dashboard page."""
        return Response(asset("index.html"), media_type="text/html; charset=utf-8",
                        headers=SECURITY_HEADERS)

    async def static(self, request: Request) -> Response:
        """The page's script and style sheet."""
        name = request.path_params["name"]
        media = ASSETS.get(name)
        if media is None:
            return error_response(RouterError("GET /ui/static: no such asset", code="not_found",
                                              status=404))
        return Response(asset(name), media_type=media, headers=SECURITY_HEADERS)

    async def events(self, request: Request) -> Response:
        """Server-sent events: one `data:` line of the dashboard view per second."""
        raw = request.query_params.get("limit")
        limit = 0
        if raw is not None:
            if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
                return error_response(InvalidRequest(
                    f"limit must be an integer from 1 to {MAX_LIMIT}", param="limit"))
            limit = int(raw)
        if "text/event-stream" not in request.headers.get("accept", ""):
            limit = 1
        return StreamingResponse(self._feed(limit), media_type="text/event-stream",
                                 headers={"cache-control": "no-store",
                                          "x-accel-buffering": "no"})

    async def _feed(self, limit: int) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        ends = loop.time() + FEED_LIFETIME_S
        sent = 0
        yield b"retry: 2000\n\n"
        while True:
            view = await self.service.dashboard_view()
            yield b"data: " + orjson.dumps(view) + b"\n\n"
            sent += 1
            if view.get("closing") or (limit and sent >= limit) or loop.time() >= ends:
                return
            await asyncio.sleep(self.interval_s)


def shell(service: RouterService, endpoint: Endpoint) -> Endpoint:
    """The page's own rule: open access means loopback only; with keys, no key needed."""
    async def guarded(request: Request) -> Response:
        try:
            service.check_open_access(client_context(request), "the dashboard")
        except RouterError as exc:
            return error_response(exc)
        return await endpoint(request)

    guarded.__name__ = getattr(endpoint, "__name__", "endpoint")
    guarded.__doc__ = endpoint.__doc__
    return guarded


def routes(service: RouterService, access: Access) -> list[BaseRoute]:
    """The dashboard's routes, mounted by `router/app.py`."""
    ui = UiRoutes(service)
    return [
        Route("/ui", shell(service, ui.page), methods=["GET"]),
        Route("/ui/static/{name}", shell(service, ui.static), methods=["GET"]),
        Route("/ui/events", access.ops(ui.events), methods=["GET"]),
    ]
