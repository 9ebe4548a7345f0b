"""The service layer: the facade every client surface calls (`RouterService`), and the types
that cross it. See `facade.py` for the request path."""

from router.route_meta import RouteMeta
from router.service.admission import Prepared
from router.service.client import (
    CLIENT_CLOSED_STATUS,
    ClientContext,
    Completed,
    StreamOutcome,
    reason_label,
    render_reason,
)
from router.service.facade import RouterService, plan_view
from router.service.recorder import error_outcome
from router.service.responses import ResponseStore, StoredResponse
from router.service.streams import OpenedStream

__all__ = ["CLIENT_CLOSED_STATUS", "ClientContext", "Completed", "OpenedStream", "Prepared",
           "ResponseStore", "RouteMeta", "RouterService", "StoredResponse", "StreamOutcome",
           "error_outcome", "plan_view", "reason_label", "render_reason"]
