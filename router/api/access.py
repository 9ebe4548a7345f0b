"""Who may call which endpoint, as wrappers around route endpoints.

- `client(endpoint)`: what chat needs (`/v1/models`): with API keys configured, a valid key;
  with none, a loopback client (or any client under `open_remote`).
- `ops(endpoint)`: `/v1/router/status` and `/metrics`. With keys configured: a key marked
  `ops: true` or `admin: true`, or ROUTER_ADMIN_KEY (401 without a valid key, 403 for a plain
  client key). With none: loopback clients (or any under `open_remote`), and ROUTER_ADMIN_KEY
  from anywhere.

`/healthz` and `/readyz` stay open (they reveal only a status word). Keys are compared in
constant time (`auth.py`); errors never echo the presented key. The decisions are made behind
the service facade (`RouterService.authorize_client` / `authorize_ops`); this module only
wraps endpoints with them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from router.api.edge import client_context
from router.api.error_responses import error_response
from router.errors import RouterError
from router.service import ClientContext, RouterService

__all__ = ["Access"]

Endpoint = Callable[[Request], Awaitable[Response]]


class Access:
    """Endpoint wrappers; the decisions are the service's."""

    def __init__(self, service: RouterService) -> None:
        self.service = service

    def client(self, endpoint: Endpoint) -> Endpoint:
        return self._guard(endpoint, self.service.authorize_client)

    def ops(self, endpoint: Endpoint) -> Endpoint:
        return self._guard(endpoint, self.service.authorize_ops)

    @staticmethod
    def _guard(endpoint: Endpoint, check: Callable[[ClientContext], None]) -> Endpoint:
        async def guarded(request: Request) -> Response:
            try:
                check(client_context(request))
            except RouterError as exc:
                return error_response(exc)
            return await endpoint(request)

        guarded.__name__ = getattr(endpoint, "__name__", "endpoint")
        guarded.__doc__ = endpoint.__doc__
        return guarded
