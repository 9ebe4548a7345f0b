"""Operational endpoints: /healthz, /readyz, /metrics, /v1/router/status, POST /admin/reload.

/healthz and /readyz answer with a status word only (200, or 503 while no backend is usable);
who may read status and metrics is decided behind the facade (`access.py` wraps the routes in
app.py). Everything shown comes from the service's status view (`readiness`, `status_view`,
`render_metrics`); this module only encodes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from router.api.edge import client_context
from router.api.error_responses import error_response
from router.errors import PermissionDenied, Unauthorized
from router.service import RouterService


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


class HealthRoutes:
    def __init__(
        self,
        service: RouterService,
        reload: Callable[[], Awaitable[tuple[bool, str]]],
        admin_key_hash: str | None = None,
    ) -> None:
        """`admin_key_hash` (ROUTER_ADMIN_KEY's digest) is the service's; one given here is
        handed to a service built without it."""
        self.service = service
        self._reload = reload
        if admin_key_hash and not service.admin_key_hash:
            service.admin_key_hash = admin_key_hash

    async def healthz(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        # A status word only: which backends are usable is for /v1/router/status (ops).
        if self.service.readiness():
            return _json({"status": "ready"})
        return _json({"status": "unavailable"}, 503)

    async def metrics(self, request: Request) -> Response:
        body, ctype = await self.service.render_metrics()
        return Response(body, media_type=ctype)

    async def status(self, request: Request) -> Response:
        return _json(await self.service.status_view())

    async def admin_reload(self, request: Request) -> Response:
        try:
            self.service.authorize_admin(client_context(request))
        except (Unauthorized, PermissionDenied) as exc:
            return error_response(exc)
        ok, message = await self._reload()
        return _json({"reloaded": ok, "message": message}, 200 if ok else 400)
