"""OpenTelemetry spans (`router/tracing.py`) in the SDK's in-memory exporter: one request span
and one span per backend attempt with the GenAI and router attributes, an incoming
`traceparent` continued, retries as events, no prompt text; and off without configuration."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.testclient import TestClient

from router import tracing
from router.app import create_app
from router.policy.loader import parse_policy
from router.settings import RouterSettings
from router_simulators.server import SimServer
from tests.conftest import base_policy

SECRET = "prompt-text-that-no-span-may-hold-5521"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure(provider)
    try:
        yield exporter
    finally:
        tracing.configure(None)


def client(policy: dict[str, Any]) -> TestClient:
    return TestClient(create_app(RouterSettings(), policy=parse_policy(policy)),
                      base_url="http://localhost", client=("127.0.0.1", 50000))


def body(model: str = "gpt-oss-20b", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": SECRET}], **extra}


def no_text(finished: tuple[ReadableSpan, ...]) -> None:
    for s in finished:
        assert SECRET not in s.name
        assert SECRET not in repr(dict(s.attributes or {}))
        for e in s.events:
            assert SECRET not in repr(dict(e.attributes or {}))


def test_request_and_attempt_spans_carry_genai_attributes_and_continue_traceparent(
        spans: InMemorySpanExporter, ollama_sim: SimServer, bedrock_sim: SimServer) -> None:
    with client(base_policy(ollama_sim.url, bedrock_sim.url)) as c:
        r = c.post("/v1/chat/completions", json=body(), headers={"traceparent": TRACEPARENT,
                                                                 "x-privacy": "private"})
        assert r.status_code == 200
    finished = spans.get_finished_spans()
    (request,) = [s for s in finished if s.kind is SpanKind.SERVER]
    (attempt,) = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert format(request.context.trace_id, "032x") == TRACE_ID  # the caller's trace
    assert request.parent is not None and request.parent.span_id == 0x00f067aa0ba902b7
    assert attempt.parent is not None and attempt.parent.span_id == request.context.span_id
    a = dict(request.attributes or {})
    usage = r.json()["usage"]
    assert request.name == "chat gpt-oss-20b"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gpt-oss-20b"
    assert a["gen_ai.response.model"] == "gpt-oss:20b"
    assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "ollama"
    assert a["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert a["router.privacy_class"] == "private"
    assert a["router.backend"] == "local" and a["router.route"] == "private"
    assert a["router.reason"] == r.headers["x-router-reason"]
    assert a["router.dialect"] == "openai" and a["router.outcome"] == "ok"
    b = dict(attempt.attributes or {})
    assert attempt.name == "chat gpt-oss:20b"
    assert b["router.backend"] == "local" and b["router.local"] is True
    assert b["gen_ai.request.model"] == "gpt-oss-20b"
    assert b["gen_ai.response.model"] == "gpt-oss:20b" and b["router.attempt"] == 1
    no_text(finished)


def test_a_failover_is_a_second_attempt_span_and_retries_are_events(
        spans: InMemorySpanExporter, bedrock_sim: SimServer) -> None:
    # The local backend is a closed port: its attempt fails (retried once), bedrock serves.
    from router_simulators.server import free_port

    policy = base_policy(f"http://127.0.0.1:{free_port()}", bedrock_sim.url)
    with client(policy) as c:
        r = c.post("/v1/chat/completions", json=body(stream=True))
        assert r.status_code == 200 and r.headers["x-router-backend"] == "bedrock"
    finished = spans.get_finished_spans()
    attempts = sorted((s for s in finished if s.kind is SpanKind.CLIENT),
                      key=lambda s: s.start_time or 0)
    (request,) = [s for s in finished if s.kind is SpanKind.SERVER]
    assert [dict(s.attributes or {})["router.backend"] for s in attempts] == ["local", "bedrock"]
    failed, served = attempts
    assert failed.status.is_ok is False and "error.type" in dict(failed.attributes or {})
    assert [e.name for e in failed.events] == ["retry"]
    assert dict(served.attributes or {})["router.failover_from"] == "local"
    assert dict(served.attributes or {})["gen_ai.provider.name"] == "aws.bedrock"
    a = dict(request.attributes or {})
    assert a["router.backend"] == "bedrock" and str(a["router.reason"]).startswith("failover_after")
    no_text(finished)


def test_a_refused_request_ends_its_span_with_the_error(
        spans: InMemorySpanExporter, ollama_sim: SimServer) -> None:
    with client(base_policy(ollama_sim.url)) as c:
        assert c.post("/v1/chat/completions", json=body("nope")).status_code == 404
    (request,) = spans.get_finished_spans()
    assert dict(request.attributes or {})["error.type"] == "model_not_found"
    assert tracing._live == {}


def test_off_without_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    tracing.configure(None)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setattr(tracing, "_from_env_done", False)
    assert tracing.setup_from_env() is False and not tracing.enabled()
    tracing.start_request("r1", {"traceparent": TRACEPARENT}, "openai")
    with tracing.activate("r1"), tracing.attempt(
            backend="b", backend_type="ollama", model_id="m", logical_model="l", local=True,
            number=1, failover_from=None):
        tracing.event("retry", {"x": 1})
    tracing.end_request("r1")
    assert tracing._live == {}


def test_on_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setattr(tracing, "_from_env_done", False)
    try:
        assert tracing.setup_from_env() is True and tracing.enabled()
        assert tracing.setup_from_env() is True  # once per process
    finally:
        provider = tracing._provider
        tracing.configure(None)
        provider.shutdown()
