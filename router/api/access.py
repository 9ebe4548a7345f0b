"""Who may call which endpoint, as wrappers around route endpoints.

- `client(endpoint)`: what chat needs (`/v1/models`): with API keys configured, a valid key;
  with none, a loopback client (or any client under `open_remote`).
- `ops(endpoint)`: `/v1/router/status` and `/metrics`. With keys configured: a key marked
  `ops: true` or `admin: true`, or ROUTER_ADMIN_KEY (401 without a valid key, 403 for a plain
  client key). With none: loopback clients (or any under `open_remote`), and ROUTER_ADMIN_KEY
  from anywhere.

`/healthz` and `/readyz` stay open (they reveal only a status word). Keys are compared in
constant time (`auth.py`); errors never echo the presented key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from router.api.error_responses import error_response
from router.auth import KeyRing, digest_matches, presented_key
from router.errors import PermissionDenied, RouterError, Unauthorized
from router.service import RouterService

__all__ = ["Access", "is_loopback"]

Endpoint = Callable[[Request], Awaitable[Response]]

_LOOPBACK_PREFIXES = ("127.", "::1", "::ffff:127.", "localhost")


def is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    return host.startswith(_LOOPBACK_PREFIXES)


class Access:
    def __init__(self, service: RouterService, admin_key_hash: str | None,
                 open_remote: bool) -> None:
        self.service = service
        self._admin = [admin_key_hash] if admin_key_hash else []
        self.open_remote = open_remote

    def _local_or_open(self, request: Request, what: str) -> None:
        if self.open_remote or is_loopback(request):
            return
        raise Unauthorized(
            f"This router has no API keys configured, so {what} serves loopback clients only. "
            "Configure keys (hybrid-router keygen) or set ROUTER_OPEN_REMOTE=true.")

    def check_client(self, request: Request) -> None:
        keys = self.service.runtime.keys
        if keys.is_open:
            self._local_or_open(request, "it")
            return
        keys.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"))

    def check_ops(self, request: Request) -> None:
        auth, x_key = request.headers.get("authorization"), request.headers.get("x-api-key")
        plaintext = presented_key(auth, x_key)
        if plaintext is not None and digest_matches(plaintext, self._admin):
            return
        keys = self.service.runtime.keys
        if keys.is_open:
            self._local_or_open(request, "this endpoint")
            return
        key = keys.authenticate(auth, x_key)
        if key is None or not KeyRing.may_operate(key):
            raise PermissionDenied("This endpoint needs an ops or admin key.",
                                   code="ops_key_required")

    def client(self, endpoint: Endpoint) -> Endpoint:
        return self._guard(endpoint, self.check_client)

    def ops(self, endpoint: Endpoint) -> Endpoint:
        return self._guard(endpoint, self.check_ops)

    @staticmethod
    def _guard(endpoint: Endpoint, check: Callable[[Request], None]) -> Endpoint:
        async def guarded(request: Request) -> Response:
            try:
                check(request)
            except RouterError as exc:
                return error_response(exc)
            return await endpoint(request)

        guarded.__name__ = getattr(endpoint, "__name__", "endpoint")
        guarded.__doc__ = endpoint.__doc__
        return guarded
