"""What every HTTP surface shares: the `ClientContext` read from a Starlette request, and the
`x-router-*` headers written from a `RouteMeta`.

    x-request-id       the request id (the client's, made safe, or a new one)
    x-router-route     the policy route that planned it (after planning)
    x-router-reason    the routing reason, rendered once by the service
    x-router-backend   the backend that served it (once one did)
"""

from __future__ import annotations

from starlette.requests import Request

from router.api.request_body import lower_headers, request_id
from router.route_meta import RouteMeta
from router.service import ClientContext


def client_context(request: Request, dialect: str = "openai") -> ClientContext:
    headers = lower_headers(request)
    rid = request_id(headers)
    headers["x-request-id"] = rid
    return ClientContext(
        request_id=rid,
        authorization=headers.get("authorization"),
        api_key=headers.get("x-api-key"),
        privacy=headers.get("x-privacy"),
        address=request.client.host if request.client else "",
        dialect=dialect,
        headers=headers,
    )


def meta_headers(meta: RouteMeta | None, request_id: str = "") -> dict[str, str]:
    if meta is None:
        return {"x-request-id": request_id} if request_id else {}
    out = {"x-request-id": meta.request_id}
    if meta.route is not None:
        out["x-router-route"] = meta.route
    if meta.backend is not None:
        out["x-router-backend"] = meta.backend
    if meta.reason is not None:
        out["x-router-reason"] = meta.reason
    return out
