"""What a request was routed as, for the surface to show (headers, explain output).

The service facade fills it in as the request goes: the request id at once, the route and the
reason (rendered once, to its wire string) after planning, the serving backend when one
answered, with its model as that backend names it (`served_model`: what every dialect's
`model` field shows). A `RouterError` raised through the facade carries the meta known at that
point
(`RouterError.meta`), so an error response shows the same headers a success would.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RouteMeta:
    request_id: str
    route: str | None = None  # None: rejected before planning
    backend: str | None = None  # None: no backend served it (yet)
    reason: str | None = None  # the rendered routing reason, e.g. queue_wait_1800ms>1000ms
    served_model: str | None = None  # the backend's model id, e.g. gpt-oss:20b (None: unserved)
