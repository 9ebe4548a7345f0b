"""OpenTelemetry traces: one span per request, one per backend attempt. Off unless configured.

On when the OpenTelemetry SDK is installed (`pip install 'hybrid-router[otel]'`) and the
standard `OTEL_EXPORTER_OTLP_ENDPOINT` is set: spans then go out by OTLP over HTTP, batched
(the SDK's other `OTEL_*` variables apply: service name, headers, sampler). Otherwise every
call here is a cheap no-op. Tests install their own provider with `configure`.

- The request span (kind SERVER) is started by the service facade when a request arrives,
  continuing the caller's trace from an incoming W3C `traceparent`, and ended when the request
  is recorded (`end_request`), streams included. Attributes follow the GenAI semantic
  conventions (`gen_ai.operation.name`, `gen_ai.request.model`, `gen_ai.response.model`,
  `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`, `gen_ai.provider.name` and the
  older `gen_ai.system`) plus the router's own: `router.privacy_class`, `router.reason`,
  `router.backend`, `router.route`, `router.dialect`, `router.outcome`.
- Each backend attempt (kind CLIENT) is a child span from the executor (`attempt`): the
  backend, its model id, whether it is local, the backend it failed over from; each retry is a
  `retry` event on it (`event`); a failure sets `error.type` and an error status.

No prompt or answer text ever goes into a span. This module imports nothing from the router
except `errors`, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from router.errors import RouterError

__all__ = ["PROVIDERS", "activate", "attempt", "configure", "enabled", "end_request", "event",
           "setup_from_env", "start_request"]

# gen_ai.provider.name per backend type (the semantic conventions' well-known values).
PROVIDERS = {"ollama": "ollama", "bedrock": "aws.bedrock", "sagemaker": "aws.sagemaker",
             "openai": "openai"}
_MAX_LIVE = 10_000  # request spans open at once (bounded however requests end)

_tracer: Any = None
_provider: Any = None
_from_env_done = False
_live: dict[str, Any] = {}


def enabled() -> bool:
    return _tracer is not None


def configure(provider: Any | None) -> None:
    """Use `provider` (an SDK `TracerProvider`) for the router's spans; None turns them off."""
    global _tracer, _provider
    _live.clear()
    _provider = provider
    _tracer = None if provider is None else provider.get_tracer("hybrid-router")


def setup_from_env() -> bool:
    """Turn tracing on from the environment, once per process. True when it is on."""
    global _from_env_done
    if _from_env_done or _tracer is not None:
        return _tracer is not None
    _from_env_done = True
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        return False
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                               "hybrid-router")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    configure(provider)
    return True


def start_request(request_id: str, headers: Mapping[str, str], dialect: str) -> None:
    """Open the request's span, continuing an incoming `traceparent` if there is one."""
    if _tracer is None:
        return
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract(
        {k: v for k, v in headers.items() if k in ("traceparent", "tracestate")})
    span = _tracer.start_span("chat", context=parent, kind=SpanKind.SERVER, attributes={
        "gen_ai.operation.name": "chat", "router.dialect": dialect,
        "router.request_id": request_id})
    if len(_live) >= _MAX_LIVE:
        _live.pop(next(iter(_live))).end()
    _live[request_id] = span


_OFF: contextlib.AbstractContextManager[None] = contextlib.nullcontext()  # reusable, no state


def activate(request_id: str) -> contextlib.AbstractContextManager[None]:
    """Make the request's span current (attempt spans become its children); with tracing off
    (or no span) a shared no-op context, so the request path builds no generator."""
    span = _live.get(request_id) if _tracer is not None else None
    if span is None:
        return _OFF
    return _activate(span)


@contextlib.contextmanager
def _activate(span: Any) -> Iterator[None]:
    from opentelemetry import context, trace

    token = context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        context.detach(token)


def end_request(request_id: str, *, model: str | None = None, privacy: str | None = None,
                backend: str | None = None, provider: str | None = None,
                response_model: str | None = None, route: str | None = None,
                reason: str | None = None, outcome: str = "ok", status: int = 200,
                input_tokens: int | None = None, output_tokens: int | None = None) -> None:
    """Set the request's attributes and end its span (no-op when there is none)."""
    span = _live.pop(request_id, None) if _tracer is not None else None
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    attrs: dict[str, Any] = {
        "gen_ai.request.model": model, "gen_ai.response.model": response_model,
        "gen_ai.provider.name": provider, "gen_ai.system": provider,
        "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens,
        "router.privacy_class": privacy, "router.backend": backend, "router.route": route,
        "router.reason": reason, "router.outcome": outcome,
        "http.response.status_code": status,
    }
    span.set_attributes({k: v for k, v in attrs.items() if v is not None})
    if model:
        span.update_name(f"chat {model}")
    if outcome != "ok":
        span.set_attribute("error.type", outcome)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
    span.end()


def attempt(*, backend: str, backend_type: str, model_id: str, logical_model: str,
            local: bool, number: int, failover_from: str | None,
            ) -> contextlib.AbstractContextManager[None]:
    """A span around one backend attempt (its retries included), child of the current span;
    with tracing off a shared no-op context."""
    if _tracer is None:
        return _OFF
    return _attempt(backend=backend, backend_type=backend_type, model_id=model_id,
                    logical_model=logical_model, local=local, number=number,
                    failover_from=failover_from)


@contextlib.contextmanager
def _attempt(*, backend: str, backend_type: str, model_id: str, logical_model: str,
             local: bool, number: int, failover_from: str | None) -> Iterator[None]:
    from opentelemetry.trace import SpanKind, Status, StatusCode

    provider = PROVIDERS.get(backend_type, backend_type)
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": logical_model,
        "gen_ai.response.model": model_id, "gen_ai.provider.name": provider,
        "gen_ai.system": provider, "router.backend": backend, "router.local": local,
        "router.attempt": number}
    if failover_from:
        attrs["router.failover_from"] = failover_from
    with _tracer.start_as_current_span(f"chat {model_id}", kind=SpanKind.CLIENT,
                                       attributes=attrs, record_exception=False,
                                       set_status_on_exception=False) as span:
        try:
            yield
        except BaseException as exc:
            code = exc.code if isinstance(exc, RouterError) and exc.code else type(exc).__name__
            span.set_attribute("error.type", code)  # a code, never the message (prompt text)
            span.set_status(Status(StatusCode.ERROR))
            raise


def event(name: str, attributes: Mapping[str, str | int | float | bool]) -> None:
    """An event on the current span (a retry inside an attempt)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().add_event(name, dict(attributes))
