"""What a surface hands the service, and what it gets back.

A surface (the OpenAI routes today; the Responses, Ollama-native and Anthropic dialects later)
decodes its wire format into a `ChatRequest` plus a `ClientContext`, calls the facade, and
encodes a `Completed` or the events of an `OpenedStream` back. Reasons reach the wire through
`render_reason` only, and metric labels through `reason_label` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from router.reasons import Reason
from router.route_meta import RouteMeta
from router.types import ChatResult

__all__ = ["CLIENT_CLOSED_STATUS", "ClientContext", "Completed", "RouteMeta", "StreamOutcome",
           "reason_label", "render_reason"]

CLIENT_CLOSED_STATUS = 499  # nginx's "client closed request": the client ended it, not us


class StreamOutcome(StrEnum):
    """How a stream ended, for the audit log and the `outcome` label."""

    OK = "ok"
    CLIENT_DISCONNECTED = "client_disconnected"
    CLIENT_STALLED = "client_stalled"


@dataclass(frozen=True, slots=True)
class ClientContext:
    """Who is asking, as the surface decoded it from its own wire format."""

    request_id: str
    authorization: str | None = None  # the Authorization header value (Bearer ...)
    api_key: str | None = None  # a key sent on its own (x-api-key)
    privacy: str | None = None  # privacy markers: the joined X-Privacy value
    address: str = ""  # the client's host address
    dialect: str = "openai"  # the surface's name, for logs and later metrics
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case, for route `match`
    # Private votes the surface adds (e.g. "previous_response": a continued private
    # conversation); classification makes the request private and names each source.
    private_sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Completed:
    """A non-streamed answer and what the surface shows about its routing."""

    result: ChatResult
    meta: RouteMeta
    model: str  # the logical model that served it (aliases resolved)
    privacy: str = "private"  # the request's privacy class (the facade always sets it)

    @property
    def served_model(self) -> str:
        """The model as the backend that served it names it: the response's `model`."""
        return self.meta.served_model or self.model


def render_reason(reason: Reason | None) -> str | None:
    """The one place a routing reason becomes its wire string (`x-router-reason`, explain)."""
    return None if reason is None else reason.render()


def reason_label(reason: Reason | None) -> str:
    """The bounded metric label of a reason: its code, never its numbers."""
    return "none" if reason is None else reason.code.value
