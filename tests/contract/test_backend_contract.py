"""One contract suite, run over every backend (Ollama, Bedrock, SageMaker) against its
simulator: the same client-side assertions whatever serves the request. It also runs over
`openai_compat`, a backend type registered from the tests only (`tests/compat_backend.py`),
built the way the server builds backends: policy -> registry -> Runtime."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from router.backends.base import Backend, BackendCall
from router.backends.configs import BedrockConfig, OllamaConfig, SageMakerConfig, Timeouts
from router.errors import (
    BackendContextExceeded,
    BackendError,
    BackendRateLimited,
    BackendRejected,
    BackendStreamError,
    BackendTimeout,
    BackendUnavailable,
    RequestBuildError,
)
from router.types import ChatRequest, ChatResult, StreamEvent
from router_simulators.bedrock import BedrockSimConfig
from router_simulators.bedrock import create_app as bedrock_app
from router_simulators.ollama import OllamaSimConfig
from router_simulators.ollama import create_app as ollama_app
from router_simulators.sagemaker import SageMakerSimConfig
from router_simulators.sagemaker import create_app as sagemaker_app
from router_simulators.server import SimServer
from tests import compat_backend

TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
FAST = Timeouts(connect_s=2, read_s=2)


@dataclass
class Subject:
    name: str
    sim: SimServer
    make: Callable[[], Backend]
    model_id: str


def _ollama(sim: SimServer) -> Backend:
    from router.backends.ollama import OllamaBackend

    return OllamaBackend("local", OllamaConfig(base_url=sim.url, timeouts=FAST,
                                               models={"gpt-oss-20b": "gpt-oss:20b"}))


def _bedrock(sim: SimServer) -> Backend:
    from router.backends.bedrock import BedrockBackend

    return BedrockBackend("bedrock", BedrockConfig(endpoint_url=sim.url, timeouts=FAST,
                                                   models={"gpt-oss-20b":
                                                           "openai.gpt-oss-20b-1:0"}))


def _sagemaker(sim: SimServer) -> Backend:
    from router.backends.sagemaker import SageMakerBackend

    return SageMakerBackend("sagemaker", SageMakerConfig(
        endpoint_url=sim.url, endpoint_name="gpt-oss-20b-endpoint", timeouts=FAST,
        models={"gpt-oss-20b": "gpt-oss-20b"}))


def _registered_type(sim: SimServer) -> Backend:
    """Through the registry: a policy naming the type, parsed, made live by a Runtime."""
    import time

    from router.policy.loader import parse_policy
    from router.runtime import Runtime
    from router.state.memory import MemoryStore

    policy = parse_policy({
        "models": {"gpt-oss-20b": {"vram_gb": 14}},
        "backends": {"compat": {"type": "openai_compat", "base_url": sim.url,
                                "timeouts": {"connect_s": 2, "read_s": 2},
                                "models": {"gpt-oss-20b": "gpt-oss:20b"}}},
        "routes": [{"name": "all", "targets": ["compat"]}],
    })
    return Runtime(policy, MemoryStore(), clock=time.monotonic).backends["compat"]


@pytest.fixture(scope="module", params=["ollama", "bedrock", "sagemaker", "openai_compat"])
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    kind = request.param
    if kind == "openai_compat":
        with compat_backend.registered():
            sim = SimServer(lambda: ollama_app(OllamaSimConfig()))
            sim.start()
            yield Subject(kind, sim, lambda: _registered_type(sim), "gpt-oss:20b")
            sim.stop()
        return
    if kind == "ollama":
        sim = SimServer(lambda: ollama_app(OllamaSimConfig()))
        yield_subject = Subject(kind, sim, lambda: _ollama(sim), "gpt-oss:20b")
    elif kind == "bedrock":
        sim = SimServer(lambda: bedrock_app(BedrockSimConfig()))
        yield_subject = Subject(kind, sim, lambda: _bedrock(sim), "openai.gpt-oss-20b-1:0")
    else:
        sim = SimServer(lambda: sagemaker_app(SageMakerSimConfig()))
        yield_subject = Subject(kind, sim, lambda: _sagemaker(sim), "gpt-oss-20b")
    sim.start()
    yield yield_subject
    sim.stop()


@pytest.fixture
async def backend(subject: Subject) -> AsyncIterator[Backend]:
    async with httpx.AsyncClient() as c:
        await c.post(subject.sim.url + "/_sim/reset", timeout=5)
    b = subject.make()
    yield b
    await b.aclose()


def call(subject: Subject, **body: Any) -> BackendCall:
    body.setdefault("model", "gpt-oss-20b")
    body.setdefault("messages", [{"role": "user", "content": "Hello there"}])
    return BackendCall(ChatRequest.model_validate(body), subject.model_id, "gpt-oss-20b", "r")


def fault(subject: Subject, **f: Any) -> None:
    r = httpx.post(subject.sim.url + "/_sim/faults", json={"faults": [f]}, timeout=5)
    assert r.status_code < 300, r.text


async def collect(agen: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [e async for e in agen]


def joined(events: list[StreamEvent]) -> tuple[str, str]:
    return ("".join(e.content or "" for e in events), "".join(e.reasoning or "" for e in events))


async def test_chat(subject: Subject, backend: Backend) -> None:
    r = await backend.chat(call(subject))
    assert isinstance(r, ChatResult)
    assert r.content and r.reasoning and r.finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0


async def test_stream_matches_chat(subject: Subject, backend: Backend) -> None:
    whole = await backend.chat(call(subject))
    events = await collect(backend.stream(call(subject, stream=True)))
    content, reasoning = joined(events)
    assert content == whole.content and reasoning == whole.reasoning
    finals = [e for e in events if e.finish_reason]
    assert len(finals) == 1 and events[-1].finish_reason == "stop"
    assert events[-1].usage is not None and events[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_round_trip_with_reasoning(subject: Subject, backend: Backend,
                                              stream: bool) -> None:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Lisbon?"}]
    if stream:
        events = await collect(backend.stream(call(subject, messages=msgs, tools=[TOOL],
                                                   stream=True)))
        calls = [tc for e in events for tc in (e.tool_calls or [])]
        finish = events[-1].finish_reason
        reasoning = joined(events)[1]
    else:
        r = await backend.chat(call(subject, messages=msgs, tools=[TOOL]))
        calls, finish, reasoning = r.tool_calls, r.finish_reason, r.reasoning or ""
    assert finish == "tool_calls" and len(calls) == 1
    tc = calls[0]
    assert tc.id and tc.function.name == "get_weather"
    assert isinstance(json.loads(tc.function.arguments), dict)
    msgs.append({"role": "assistant", "content": None, "reasoning": reasoning,
                 "tool_calls": [tc.model_dump()]})
    msgs.append({"role": "tool", "tool_call_id": tc.id, "content": "rainy, 17C"})
    r2 = await backend.chat(call(subject, messages=msgs, tools=[TOOL]))
    assert "rainy, 17C" in (r2.content or "") and r2.finish_reason == "stop"


async def test_reasoning_effort(subject: Subject, backend: Backend) -> None:
    low = await backend.chat(call(subject, reasoning_effort="low"))
    high = await backend.chat(call(subject, reasoning_effort="high"))
    assert len(high.reasoning or "") > len(low.reasoning or "") > 0


@pytest.mark.parametrize(("spec", "error", "retryable"), [
    ({"kind": "status", "status": 429, "retry_after": 2}, BackendRateLimited, True),
    ({"kind": "status", "status": 500}, BackendUnavailable, True),
    ({"kind": "status", "status": 503}, BackendUnavailable, True),
    ({"kind": "status", "status": 400}, BackendRejected, False),
    ({"kind": "reset"}, BackendUnavailable, True),
    ({"kind": "hang"}, BackendTimeout, True),
])
async def test_errors_before_output(subject: Subject, backend: Backend, spec: dict[str, Any],
                                    error: type[BackendError], retryable: bool) -> None:
    fault(subject, **spec)
    with pytest.raises(error) as info:
        await backend.chat(call(subject))
    assert info.value.retryable is retryable
    assert info.value.backend == backend.name
    if spec.get("retry_after"):
        assert info.value.retry_after == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_context_overflow_is_context_exceeded(subject: Subject, backend: Backend,
                                                    stream: bool) -> None:
    """Each built-in backend recognises its vendor's context-window refusal (the executor then
    moves the request to a larger window); `openai_compat` is a test-only type, not covered."""
    if subject.name == "openai_compat":
        pytest.skip("test-only backend type: no context-window mapping of its own")
    fault(subject, kind="context_exceeded")
    with pytest.raises(BackendContextExceeded) as info:
        if stream:
            await collect(backend.stream(call(subject, stream=True)))
        else:
            await backend.chat(call(subject))
    assert info.value.retryable is False and info.value.backend == backend.name


@pytest.mark.parametrize("kind", ["cut", "midstream_error", "no_terminator"])
async def test_broken_streams_raise(subject: Subject, backend: Backend, kind: str) -> None:
    fault(subject, kind=kind, after_tokens=3)
    got: list[StreamEvent] = []
    with pytest.raises(BackendStreamError):
        async for e in backend.stream(call(subject, stream=True)):
            got.append(e)
    assert not any(e.finish_reason for e in got)


async def test_malformed_chunk_is_a_marker_or_a_stream_error(subject: Subject,
                                                               backend: Backend) -> None:
    """A chunk that cannot be decoded is yielded as one `malformed` marker carrying nothing
    (the stream session skips it) and the stream goes on; where the framing itself is broken
    (an event-stream frame with a bad CRC: botocore's parser cannot resume) it is a
    BackendStreamError. Never a truncated answer that looks complete."""
    fault(subject, kind="malformed", after_tokens=3)
    got: list[StreamEvent] = []
    try:
        async for e in backend.stream(call(subject, stream=True)):
            got.append(e)
    except BackendStreamError:
        assert not any(e.finish_reason for e in got)
        return
    bad = [e for e in got if e.malformed]
    assert len(bad) == 1 and got[-1].finish_reason is not None
    assert not any(e.content or e.reasoning or e.tool_calls or e.finish_reason for e in bad)


async def test_stall_is_a_timeout_not_a_hang(subject: Subject, backend: Backend) -> None:
    fault(subject, kind="stall", after_tokens=2)

    async def consume() -> None:
        async for _ in backend.stream(call(subject, stream=True)):
            pass

    with pytest.raises((BackendTimeout, BackendStreamError)):
        await asyncio.wait_for(consume(), 10)


async def test_client_cancellation_then_backend_still_works(subject: Subject,
                                                            backend: Backend) -> None:
    agen = backend.stream(call(subject, stream=True))
    first = await agen.__anext__()
    assert first.content or first.reasoning
    await agen.aclose()  # type: ignore[attr-defined]
    r = await backend.chat(call(subject))
    assert r.finish_reason == "stop"


async def test_probe_and_close(subject: Subject, backend: Backend) -> None:
    p = await backend.probe()
    assert p.ok in (True, False)
    await backend.aclose()
    await backend.aclose()  # idempotent


# Where each backend builds its vendor request (the step `prepare` runs before sending).
BUILDERS = {"ollama": ("router.backends.ollama", "build_payload"),
            "bedrock": ("router.backends.bedrock", "converse_request"),
            "sagemaker": ("router.backends.sagemaker", "build_body"),
            "openai_compat": ("tests.compat_backend", "build_body")}


@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_building_bug_is_a_build_error_and_sends_nothing(
        subject: Subject, backend: Backend, monkeypatch: pytest.MonkeyPatch,
        stream: bool) -> None:
    import importlib

    module, attr = BUILDERS[subject.name]

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("a bug in the builder")

    monkeypatch.setattr(importlib.import_module(module), attr, boom)
    with pytest.raises(RequestBuildError) as info:
        if stream:
            await collect(backend.stream(call(subject, stream=True)))
        else:
            await backend.chat(call(subject))
    assert info.value.status == 500 and info.value.code == "internal_error"
    assert info.value.backend == backend.name and "a bug" not in info.value.message
    async with httpx.AsyncClient() as c:
        stats = (await c.get(subject.sim.url + "/_sim/stats", timeout=5)).json()
    assert stats["requests"] == 0
