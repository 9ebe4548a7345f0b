"""SageMakerBackend through real boto3 against the SageMaker simulator (and a raw frame server).

No AWS: dummy credentials, endpoint_url on 127.0.0.1. Covers chat, byte-split streams (UTF-8
split inside characters), both reasoning field names, the tool round trip, every error mapping
with its retryable flag, checksum failures, cancellation, aclose and the readiness probe.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import boto3
import pytest
import urllib3.exceptions
from aiohttp import web
from botocore import eventstream as bes
from botocore import exceptions as bexc
from botocore.config import Config

from router.backends.base import Backend, BackendCall
from router.backends.configs import SageMakerConfig, Timeouts
from router.backends.sagemaker import (
    ChunkAssembler,
    SageMakerBackend,
    SSEDecoder,
    build_body,
    map_error,
)
from router.errors import (
    BackendAuthError,
    BackendContentFiltered,
    BackendContextExceeded,
    BackendError,
    BackendRateLimited,
    BackendRejected,
    BackendStreamError,
    BackendTimeout,
    BackendUnavailable,
)
from router.types import ChatRequest, StreamEvent
from router_simulators import eventstream
from router_simulators.sagemaker import SageMakerSimConfig, create_app
from router_simulators.server import SimServer, free_port

ENDPOINT = "gpt-oss-20b-endpoint"
MODEL_ID = "openai/gpt-oss-20b"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.fixture(scope="module", autouse=True)
def _dummy_aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    none = str(tmp_path_factory.mktemp("aws") / "none")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_CONFIG_FILE", none)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", none)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
            mp.delenv(var, raising=False)
        yield


def _server(**cfg: Any) -> Iterator[SimServer]:
    srv = SimServer(lambda: create_app(SageMakerSimConfig(**cfg))).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    yield from _server()


@pytest.fixture(scope="module")
def sim_rc() -> Iterator[SimServer]:
    """reasoning_content, one byte per PayloadPart: every UTF-8 character is split."""
    yield from _server(reasoning_field="reasoning_content", part_sizes=(1,))


def _post(srv: SimServer, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body or {}).encode()
    req = urllib.request.Request(srv.url + path, data=data, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return dict(json.loads(r.read()))


def stats(srv: SimServer) -> dict[str, Any]:
    with urllib.request.urlopen(srv.url + "/_sim/stats", timeout=5) as r:
        return dict(json.loads(r.read()))


def fault(srv: SimServer, **f: Any) -> None:
    _post(srv, "/_sim/faults", {"faults": [f]})


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> None:
    for name in ("sim", "sim_rc"):
        if name in request.fixturenames:
            _post(request.getfixturevalue(name), "/_sim/reset")


def make_backend(url: str, *, read_s: float = 10.0, **extra: Any) -> SageMakerBackend:
    cfg = SageMakerConfig(models={"gpt-oss-20b": MODEL_ID}, endpoint_name=extra.pop(
        "endpoint_name", ENDPOINT), endpoint_url=url,
        timeouts=Timeouts(connect_s=1.0, read_s=read_s), **extra)
    return SageMakerBackend("sm", cfg)


@pytest.fixture(scope="module")
def backend(sim: SimServer) -> Iterator[SageMakerBackend]:
    """Shared across tests: the backend holds no event-loop state (boto3 runs on a pool)."""
    b = make_backend(sim.url)
    yield b
    asyncio.run(b.aclose())


def call_for(messages: list[dict[str, Any]], timeout_s: float | None = None,
             **kw: Any) -> BackendCall:
    req = ChatRequest.model_validate({"model": "gpt-oss-20b", "messages": messages, **kw})
    return BackendCall(request=req, model_id=MODEL_ID, logical_model="gpt-oss-20b",
                       request_id="req-123", timeout_s=timeout_s)


HELLO = [{"role": "user", "content": "hello there"}]


async def collect(b: SageMakerBackend, call: BackendCall) -> list[StreamEvent]:
    return [ev async for ev in b.stream(call)]


def check_stream_shape(events: list[StreamEvent]) -> None:
    finals = [e for e in events if e.finish_reason is not None]
    assert len(finals) == 1 and events[-1] is finals[0]
    assert all(e.content or e.reasoning or e.tool_calls for e in events[:-1])


# --- chat and streams -------------------------------------------------------------------------


async def test_backend_satisfies_protocol(backend: SageMakerBackend) -> None:
    assert isinstance(backend, Backend) and backend.local is False
    await backend.warm(MODEL_ID)  # no-op


async def test_chat_parses_answer_reasoning_and_usage(
    backend: SageMakerBackend, sim: SimServer
) -> None:
    res = await backend.chat(call_for(HELLO, max_tokens=200, temperature=0.3, top_p=0.9,
                                      stop="END", seed=7, reasoning_effort="low",
                                      response_format={"type": "text"}))
    assert res.content is not None and res.content.endswith(" – café")
    assert res.reasoning == "Thinking 1 step 2 step 3."
    assert res.finish_reason == "stop" and res.tool_calls == []
    assert res.usage.prompt_tokens > 0 and res.usage.reasoning_tokens == 3
    assert res.usage.completion_tokens == 3 + 12 + 1
    sent = stats(sim)["last_request"]
    assert sent["endpoint"] == ENDPOINT and sent["inference_component"] is None
    body = sent["body"]
    assert body["model"] == MODEL_ID and body["messages"] == HELLO
    assert {k: body[k] for k in ("max_tokens", "temperature", "top_p", "stop", "seed",
                                 "reasoning_effort", "response_format")} == {
        "max_tokens": 200, "temperature": 0.3, "top_p": 0.9, "stop": ["END"], "seed": 7,
        "reasoning_effort": "low", "response_format": {"type": "text"}}
    assert "stream" not in body


async def test_inference_component_and_variant_are_sent(sim: SimServer) -> None:
    b = make_backend(sim.url, inference_component="ic-gpt-oss", target_variant="v2")
    try:
        await b.chat(call_for(HELLO))
        sent = stats(sim)["last_request"]
        assert (sent["inference_component"], sent["target_variant"]) == ("ic-gpt-oss", "v2")
        await collect(b, call_for(HELLO))
        assert stats(sim)["last_request"]["inference_component"] == "ic-gpt-oss"
    finally:
        await b.aclose()


async def test_stream_matches_chat_and_asks_for_usage(
    backend: SageMakerBackend, sim: SimServer
) -> None:
    whole = await backend.chat(call_for(HELLO))
    events = await collect(backend, call_for(HELLO))
    check_stream_shape(events)
    assert "".join(e.content or "" for e in events) == whole.content
    assert "".join(e.reasoning or "" for e in events) == whole.reasoning
    assert events[-1].finish_reason == "stop" and events[-1].usage == whole.usage
    body = stats(sim)["last_request"]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_simulator_really_splits_parts(sim: SimServer, sim_rc: SimServer) -> None:
    """Guard for the stream tests: parts cut UTF-8 characters and hold several events."""
    body = json.dumps({"model": "m", "messages": HELLO, "stream": True}).encode()

    def parts(srv: SimServer) -> list[bytes]:
        c = boto3.client("sagemaker-runtime", region_name="us-west-2", endpoint_url=srv.url,
                         config=Config(retries={"total_max_attempts": 1}))
        r = c.invoke_endpoint_with_response_stream(EndpointName=ENDPOINT, Body=body)
        return [e["PayloadPart"]["Bytes"] for e in r["Body"]]

    one_byte = parts(sim_rc)
    assert all(len(p) == 1 for p in one_byte)
    assert "é".encode()[:1] in one_byte and "é".encode()[1:] in one_byte
    default = parts(sim)
    assert any(p.count(b"data: ") >= 2 for p in default)
    assert any(not p.endswith(b"\n\n") for p in default)


@pytest.mark.parametrize("fixture", ["sim", "sim_rc"])
async def test_reasoning_under_both_field_names(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    srv: SimServer = request.getfixturevalue(fixture)
    b = make_backend(srv.url)
    try:
        res = await b.chat(call_for(HELLO, reasoning_effort="high"))
        assert res.reasoning is not None and res.reasoning.startswith("Thinking 1 step 2")
        events = await collect(b, call_for(HELLO, reasoning_effort="high"))
        check_stream_shape(events)
        assert "".join(e.reasoning or "" for e in events) == res.reasoning
        assert "".join(e.content or "" for e in events) == res.content
        assert res.content is not None and "– café" in res.content
    finally:
        await b.aclose()


async def test_tool_round_trip(backend: SageMakerBackend, sim: SimServer) -> None:
    first = [{"role": "user", "content": "What is the weather in Paris?"}]
    res = await backend.chat(call_for(first, tools=[WEATHER_TOOL], tool_choice="auto"))
    assert res.finish_reason == "tool_calls" and res.content is None
    (tc,) = res.tool_calls
    assert tc.function.name == "get_weather" and json.loads(tc.function.arguments) == {
        "city": "Paris"}
    assert tc.id.startswith("call_")
    sent = stats(sim)["last_request"]["body"]
    assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["tool_choice"] == "auto"

    events = await collect(backend, call_for(first, tools=[WEATHER_TOOL]))
    check_stream_shape(events)
    tool_events = [e for e in events if e.tool_calls]
    assert len(tool_events) == 1 and tool_events[0].tool_calls == [tc]
    assert events[-1].finish_reason == "tool_calls"

    second: list[dict[str, Any]] = [*first,
              {"role": "assistant", "content": None, "reasoning_content": res.reasoning,
               "tool_calls": [tc.model_dump()]},
              {"role": "tool", "tool_call_id": tc.id, "content": "18C and sunny"}]
    final = await backend.chat(call_for(second, tools=[WEATHER_TOOL]))
    assert final.finish_reason == "stop"
    assert final.content is not None and final.content.startswith("The tool says: 18C and sunny")
    msgs = stats(sim)["last_request"]["body"]["messages"]
    assert msgs[1] == {"role": "assistant", "content": None, "reasoning": res.reasoning,
                       "tool_calls": [{"id": tc.id, "type": "function", "function": {
                           "name": "get_weather", "arguments": tc.function.arguments}}]}
    assert msgs[2] == {"role": "tool", "content": "18C and sunny", "tool_call_id": tc.id}


async def test_content_filter_passes_through_as_finish_reason(
    backend: SageMakerBackend, sim: SimServer
) -> None:
    fault(sim, kind="content_filter", times=2)
    res = await backend.chat(call_for(HELLO))
    assert res.finish_reason == "content_filter" and not res.content
    events = await collect(backend, call_for(HELLO))
    assert events[-1].finish_reason == "content_filter"
    assert not any(e.content for e in events)


async def test_slow_first_token_still_answers(backend: SageMakerBackend, sim: SimServer) -> None:
    fault(sim, kind="slow_first_token", delay_s=0.05)
    events = await collect(backend, call_for(HELLO))
    assert events[-1].finish_reason == "stop"


# --- error mapping ----------------------------------------------------------------------------

ERROR_CASES: list[tuple[dict[str, Any], type[BackendError], bool]] = [
    ({"kind": "status", "status": 400}, BackendRejected, False),
    ({"kind": "status", "status": 429, "retry_after": 2}, BackendRateLimited, True),
    ({"kind": "status", "status": 500}, BackendUnavailable, True),
    ({"kind": "status", "status": 503}, BackendUnavailable, True),
    ({"kind": "status", "status": 424}, BackendUnavailable, True),
    ({"kind": "status", "status": 424, "original_status": 503}, BackendUnavailable, True),
    ({"kind": "status", "status": 424, "original_status": 429}, BackendRateLimited, True),
    ({"kind": "status", "status": 424, "original_status": 400}, BackendRejected, False),
    ({"kind": "status", "status": 429, "error_code": "ModelNotReadyException"},
     BackendUnavailable, True),
    ({"kind": "status", "status": 530, "error_code": "InternalDependencyException"},
     BackendUnavailable, True),
    ({"kind": "context_exceeded"}, BackendContextExceeded, False),
    ({"kind": "reset"}, BackendUnavailable, True),
]


@pytest.mark.parametrize("streaming", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize(("spec", "cls", "retryable"), ERROR_CASES,
                         ids=[f"{c[0]['kind']}-{c[0].get('status', '')}-"
                              f"{c[0].get('original_status') or c[0].get('error_code') or ''}"
                              for c in ERROR_CASES])
async def test_error_mapping(backend: SageMakerBackend, sim: SimServer, spec: dict[str, Any],
                             cls: type[BackendError], retryable: bool, streaming: bool) -> None:
    fault(sim, **spec)
    with pytest.raises(BackendError) as info:
        if streaming:
            await collect(backend, call_for(HELLO))
        else:
            await backend.chat(call_for(HELLO))
    assert type(info.value) is cls
    assert info.value.retryable is retryable and info.value.backend == "sm"
    if spec.get("retry_after"):
        assert info.value.retry_after == 2.0
    assert stats(sim)["requests"] == 1, "botocore must not retry on its own"


async def test_unknown_endpoint_is_rejected(sim: SimServer) -> None:
    b = make_backend(sim.url, endpoint_name="no-such-endpoint")
    try:
        with pytest.raises(BackendRejected) as info:
            await b.chat(call_for(HELLO))
        assert info.value.retryable is False
    finally:
        await b.aclose()


async def test_connection_refused_is_unavailable() -> None:
    b = make_backend(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(BackendUnavailable) as info:
            await b.chat(call_for(HELLO))
        assert info.value.retryable
        with pytest.raises(BackendUnavailable):
            await collect(b, call_for(HELLO))
    finally:
        await b.aclose()


async def test_hang_is_a_timeout(sim: SimServer) -> None:
    b = make_backend(sim.url, read_s=0.3)
    try:
        fault(sim, kind="hang")
        with pytest.raises(BackendTimeout) as info:
            await b.chat(call_for(HELLO))
        assert info.value.retryable
    finally:
        await b.aclose()


async def test_call_timeout_bounds_chat(sim: SimServer) -> None:
    b = make_backend(sim.url, read_s=1.0)
    try:
        fault(sim, kind="hang")
        started = time.monotonic()
        with pytest.raises(BackendTimeout):
            await b.chat(call_for(HELLO, timeout_s=0.2))
        assert time.monotonic() - started < 0.9
    finally:
        await b.aclose()


async def test_malformed_non_stream_body(backend: SageMakerBackend, sim: SimServer) -> None:
    fault(sim, kind="malformed")
    with pytest.raises(BackendStreamError):
        await backend.chat(call_for(HELLO))


@pytest.mark.parametrize(("spec", "cause"), [
    ({"kind": "midstream_error", "after_tokens": 3}, bexc.EventStreamError),
    ({"kind": "malformed", "after_tokens": 3}, bes.ChecksumMismatch),
    ({"kind": "cut", "after_tokens": 3}, urllib3.exceptions.ProtocolError),
    ({"kind": "no_terminator"}, None),
], ids=["midstream_error", "checksum", "cut", "no_terminator"])
async def test_stream_failures_after_output(
    backend: SageMakerBackend, sim: SimServer, spec: dict[str, Any], cause: type | None
) -> None:
    fault(sim, **spec)
    got: list[StreamEvent] = []
    with pytest.raises(BackendStreamError) as info:
        async for ev in backend.stream(call_for(HELLO)):
            got.append(ev)
    assert got and all(e.finish_reason is None for e in got)
    assert info.value.retryable and info.value.backend == "sm"
    if cause is not None:
        assert isinstance(info.value.__cause__, cause)
    if spec["kind"] == "no_terminator":
        assert "".join(e.content or "" for e in got).endswith(" – café")


@pytest.mark.parametrize("style", ["InternalStreamFailure", "sse"])
async def test_other_in_stream_errors(style: str) -> None:
    for srv in _server(midstream_style=style):
        fault(srv, kind="midstream_error", after_tokens=2)
        b = make_backend(srv.url)
        try:
            with pytest.raises(BackendStreamError):
                await collect(b, call_for(HELLO))
        finally:
            await b.aclose()


async def test_stall_mid_stream_is_a_timeout(sim: SimServer) -> None:
    b = make_backend(sim.url, read_s=0.3)
    try:
        fault(sim, kind="stall", after_tokens=2)
        with pytest.raises(BackendTimeout):
            await collect(b, call_for(HELLO))
    finally:
        await b.aclose()


# --- cancellation, early close, aclose, probe ------------------------------------------------


async def wait_idle(srv: SimServer, limit_s: float = 3.0) -> None:
    deadline = time.monotonic() + limit_s
    while stats(srv)["in_flight"] and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert stats(srv)["in_flight"] == 0


@pytest.fixture
async def fresh() -> AsyncIterator[tuple[SageMakerBackend, SimServer]]:
    """A server of its own: in-flight counts not disturbed by other tests' hung requests."""
    for srv in _server():
        b = make_backend(srv.url)
        yield b, srv
        await b.aclose()


async def test_cancelling_a_stalled_stream_frees_the_connection(
    fresh: tuple[SageMakerBackend, SimServer]
) -> None:
    backend, sim = fresh
    fault(sim, kind="stall", after_tokens=2)
    got: list[StreamEvent] = []
    first_two = asyncio.Event()

    async def consume() -> None:
        async for ev in backend.stream(call_for(HELLO)):
            got.append(ev)
            if len(got) == 2:
                first_two.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_two.wait(), 5)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 2  # read_s is 10: not waiting for the read timeout
    await wait_idle(sim)
    assert stats(sim)["completed"] == 0
    assert (await backend.chat(call_for(HELLO))).finish_reason == "stop"


async def test_consumer_stopping_early_closes_the_stream(
    fresh: tuple[SageMakerBackend, SimServer]
) -> None:
    backend, sim = fresh
    gen = backend.stream(call_for(HELLO))
    first = await anext(gen)
    assert first.reasoning == "Thinking 1"
    await gen.aclose()  # type: ignore[attr-defined]
    await wait_idle(sim)
    events = await collect(backend, call_for(HELLO))
    assert events[-1].finish_reason == "stop"


async def test_aclose(sim: SimServer) -> None:
    b = make_backend(sim.url)
    assert (await b.chat(call_for(HELLO))).content
    await b.aclose()
    await b.aclose()  # idempotent
    with pytest.raises(BackendUnavailable):
        await b.chat(call_for(HELLO))
    with pytest.raises(BackendUnavailable):
        await collect(b, call_for(HELLO))
    assert (await b.probe()).ok is False


async def test_probe_reads_describe_endpoint_only(sim: SimServer) -> None:
    b = make_backend(sim.url)
    try:
        result = await b.probe()
        assert result.ok and result.detail == "EndpointStatus=InService"
        assert stats(sim)["requests"] == 0  # never an inference call
    finally:
        await b.aclose()
    missing = make_backend(sim.url, endpoint_name="no-such-endpoint")
    try:
        result = await missing.probe()
        assert not result.ok and "ValidationException" in result.detail
    finally:
        await missing.aclose()


async def test_probe_not_in_service_and_unreachable() -> None:
    for srv in _server(endpoint_status="Updating"):
        b = make_backend(srv.url)
        try:
            result = await b.probe()
            assert not result.ok and result.detail == "EndpointStatus=Updating"
        finally:
            await b.aclose()
    b = make_backend(f"http://127.0.0.1:{free_port()}")
    try:
        assert (await b.probe()).ok is False
    finally:
        await b.aclose()


# --- raw frames: exact byte layouts the simulator does not produce ---------------------------


@pytest.fixture
def raw_server() -> Iterator[tuple[SimServer, list[bytes]]]:
    """Serves the PayloadPart byte slices a test puts in the list, as one stream."""
    parts: list[bytes] = []

    def factory() -> web.Application:
        async def handler(request: web.Request) -> web.StreamResponse:
            await request.read()
            resp = web.StreamResponse(headers={
                "Content-Type": "application/vnd.amazon.eventstream",
                "X-Amzn-SageMaker-Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for p in parts:
                await resp.write(eventstream.event("PayloadPart", p, "application/octet-stream"))
            await resp.write_eof()
            return resp

        app = web.Application()
        app.router.add_post("/endpoints/{name}/invocations-response-stream", handler)
        return app

    srv = SimServer(factory).start()
    try:
        yield srv, parts
    finally:
        srv.stop()


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None,
          usage: dict[str, Any] | None = None) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return sse({"object": "chat.completion.chunk", "choices": choices, "usage": usage})


async def raw_stream(srv: SimServer) -> list[StreamEvent]:
    b = make_backend(srv.url)
    try:
        return await collect(b, call_for(HELLO))
    finally:
        await b.aclose()


async def test_parallel_tool_fragments_are_joined_by_index(
    raw_server: tuple[SimServer, list[bytes]]
) -> None:
    srv, parts = raw_server
    stream = b"".join([
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Need two lookups – "}),
        chunk({"tool_calls": [{"index": 0, "id": "call_up0", "type": "function",
                               "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 1, "type": "function",
                               "function": {"name": "get_time", "arguments": "{\"tz\":"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":\"Zürich\"}"}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "\"CET\"}"}}]}),
        chunk({}, "tool_calls"),
        chunk(None, usage={"prompt_tokens": 9, "completion_tokens": 5,
                           "completion_tokens_details": {"reasoning_tokens": 2}}),
        b"data: [DONE]\n\n",
    ])
    parts.extend(stream[i:i + 3] for i in range(0, len(stream), 3))
    events = await raw_stream(srv)
    check_stream_shape(events)
    assert events[0].reasoning == "Need two lookups – "
    (tools,) = [e.tool_calls for e in events if e.tool_calls]
    assert [(t.id, t.function.name, t.function.arguments) for t in tools][0] == (
        "call_up0", "get_weather", "{\"city\":\"Zürich\"}")
    assert tools[1].function.name == "get_time" and tools[1].function.arguments == '{"tz":"CET"}'
    assert re.fullmatch(r"call_[a-z0-9]{8}", tools[1].id)
    assert events[-1].usage is not None and events[-1].usage.reasoning_tokens == 2


async def test_finish_without_done_finalises(raw_server: tuple[SimServer, list[bytes]]) -> None:
    srv, parts = raw_server
    parts.extend([chunk({"content": "Olé"})[:-3], chunk({"content": "Olé"})[-3:] +
                  chunk({}, "length")])
    events = await raw_stream(srv)
    assert [e.content for e in events[:-1]] == ["Olé"]
    assert events[-1].finish_reason == "length" and events[-1].usage is None


async def test_no_finish_and_no_done_is_a_stream_error(
    raw_server: tuple[SimServer, list[bytes]]
) -> None:
    srv, parts = raw_server
    parts.extend([chunk({"content": "partial"})])
    with pytest.raises(BackendStreamError):
        await raw_stream(srv)


@pytest.mark.parametrize("bad", [b"data: {not json}\n\n", b"data: [1, 2]\n\n"])
async def test_undecodable_payload_is_a_marker_and_the_stream_goes_on(
    raw_server: tuple[SimServer, list[bytes]], bad: bytes
) -> None:
    srv, parts = raw_server
    parts.extend([chunk({"content": "ok"}), bad, chunk({"content": "!"}), chunk({}, "stop"),
                  b"data: [DONE]\n\n"])
    events = await raw_stream(srv)
    assert [(e.content, e.malformed) for e in events[:3]] == [
        ("ok", False), (None, True), ("!", False)]
    assert events[-1].finish_reason == "stop"


async def test_events_of_one_part_say_whether_the_next_is_already_here(
    raw_server: tuple[SimServer, list[bytes]]
) -> None:
    srv, parts = raw_server
    parts.extend([chunk({"content": "a"}) + chunk({"content": "b"}), chunk({"content": "c"}),
                  chunk({"content": "d"}) + chunk({}, "stop") + b"data: [DONE]\n\n"])
    events = await raw_stream(srv)
    assert [(e.content, e.ready_next) for e in events] == [
        ("a", True), ("b", False), ("c", False), ("d", False), (None, False)]
    assert events[-1].finish_reason == "stop"


@pytest.mark.parametrize("bad", [b"data: \xff\xfe\n\n",
                                 sse({"error": {"message": "boom", "code": 500}})])
async def test_bad_payloads_are_stream_errors(
    raw_server: tuple[SimServer, list[bytes]], bad: bytes
) -> None:
    srv, parts = raw_server
    parts.extend([chunk({"content": "ok"}), bad, chunk({}, "stop"), b"data: [DONE]\n\n"])
    with pytest.raises(BackendStreamError):
        await raw_stream(srv)


# --- pure pieces -------------------------------------------------------------------------------


def test_sse_decoder_handles_any_split() -> None:
    stream = (": keep-alive\r\n\r\n" + "data: {\"a\": \"é–\"}\r\n\r\n" + "event: x\n"
              + "data: [DONE]\n\n").encode()
    for size in (1, 2, 3, 5, len(stream)):
        dec, out = SSEDecoder(), []
        for i in range(0, len(stream), size):
            out += dec.feed(stream[i:i + size])
        out += dec.feed(b"", final=True)
        assert out == ['{"a": "é–"}', "[DONE]"]
    dec = SSEDecoder()
    assert dec.feed(b"data: 1\n\ndata: 2") == ["1"]
    assert dec.feed(b"", final=True) == ["2"]  # a last event without its blank line
    with pytest.raises(UnicodeDecodeError):
        SSEDecoder().feed("data: é".encode()[:-1], final=True)


def test_assembler_rules() -> None:
    asm = ChunkAssembler("sm")
    assert asm.chunk({"choices": [{"index": 0, "delta": {"content": ""}}]}) == []
    with pytest.raises(BackendStreamError):
        asm.final()
    with pytest.raises(BackendStreamError):
        asm.chunk({"error": {"message": "x"}})
    assert asm.chunk(["not", "an", "object"]) == [StreamEvent(malformed=True)]
    assert asm.payload("{not json") == [StreamEvent(malformed=True)]
    bad = ChunkAssembler("sm")
    bad.chunk({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": "{}"}}]}}]})
    with pytest.raises(BackendStreamError):  # a tool call without a name
        bad.chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})


def test_payloads_decoded_together_mark_ready_next_and_hold_an_error_back() -> None:
    """`ready_next` on every event followed by a well-formed one of the same batch; the last,
    one before a malformed payload and one before an in-band error carry none, and the error
    comes after the events before it."""
    def text(t: str) -> str:
        return json.dumps({"choices": [{"index": 0, "delta": {"content": t}}]})

    events, error = ChunkAssembler("sm").payloads([text("a"), text("b"), "{bad", text("c")])
    assert [e.content for e in events] == ["a", "b", None, "c"]
    assert [e.ready_next for e in events] == [True, False, True, False]
    assert events[2].malformed and error is None
    events, error = ChunkAssembler("sm").payloads(
        [text("a"), '{"error": {"message": "boom"}}', text("never")])
    assert [e.content for e in events] == ["a"] and not events[0].ready_next
    assert isinstance(error, BackendStreamError)


def test_build_body_omits_unset_fields() -> None:
    body = build_body(call_for(HELLO), stream=False)
    assert body == {"model": MODEL_ID, "messages": HELLO}


def _client_error(code: str, status: int, **extra: Any) -> bexc.ClientError:
    resp: Any = {"Error": {"Code": code, "Message": "m"},
                 "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}}, **extra}
    return bexc.ClientError(resp, "InvokeEndpoint")


@pytest.mark.parametrize(("exc", "cls"), [
    (_client_error("ModelError", 424, OriginalStatusCode=400,
                   OriginalMessage='{"error":{"code":"content_filter"}}'), BackendContentFiltered),
    (_client_error("ModelError", 424, OriginalStatusCode=400,
                   OriginalMessage='{"code":"context_length_exceeded"}'), BackendContextExceeded),
    (_client_error("ModelError", 424, OriginalStatusCode=400,
                   OriginalMessage="context_length_exceeded, but as text"), BackendRejected),
    (_client_error("ModelError", 424, OriginalStatusCode=408), BackendTimeout),
    (_client_error("ThrottlingException", 400), BackendRateLimited),
    (_client_error("AccessDeniedException", 403), BackendAuthError),
    (_client_error("SomethingNew", 502), BackendUnavailable),
    (_client_error("SomethingNew", 404), BackendRejected),
    (bexc.EventStreamError({"Error": {"Code": "InternalStreamFailure", "Message": "m"}},
                           "InvokeEndpointWithResponseStream"), BackendStreamError),
    (bes.ChecksumMismatch(1, 2), BackendStreamError),
    (bexc.ConnectTimeoutError(endpoint_url="u"), BackendTimeout),
    (bexc.ReadTimeoutError(endpoint_url="u"), BackendTimeout),
    (TimeoutError(), BackendTimeout),
    (bexc.EndpointConnectionError(endpoint_url="u"), BackendUnavailable),
    (bexc.NoCredentialsError(), BackendAuthError),
    (urllib3.exceptions.ProtocolError("broken"), BackendUnavailable),
])
def test_map_error_table(exc: BaseException, cls: type[BackendError]) -> None:
    err = map_error(exc, "sm")
    assert type(err) is cls and err.backend == "sm"


def test_connection_broken_mid_stream_is_a_stream_error() -> None:
    err = map_error(urllib3.exceptions.ProtocolError("broken"), "sm", in_stream=True)
    assert type(err) is BackendStreamError


def test_botocore_retries_are_off(backend: SageMakerBackend) -> None:
    retries = backend._runtime.meta.config.retries
    assert retries.get("total_max_attempts") == 1, (
        "botocore reads retries={'max_attempts': 1} as one RETRY (two attempts); "
        "aws_common.make_client needs {'total_max_attempts': 1}")


def test_build_body_takes_typed_fields_as_plain_json() -> None:
    from pydantic import BaseModel

    class Fn(BaseModel):
        name: str

    class Choice(BaseModel):
        type: str = "function"
        function: Fn

    c = call_for(HELLO)
    c.request.tool_choice = cast(Any, Choice(function=Fn(name="get_weather")))  # typed, as may be
    body = json.loads(make_backend("http://127.0.0.1:1").prepare(c, stream=False)["Body"])
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


async def test_a_body_building_bug_is_a_request_build_error(
        sim: SimServer, backend: SageMakerBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    from router.backends import sagemaker as sagemaker_mod
    from router.errors import RequestBuildError

    def boom(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise TypeError("Type is not JSON serializable: Secret")

    monkeypatch.setattr(sagemaker_mod, "build_body", boom)
    before = stats(sim)["requests"]
    with pytest.raises(RequestBuildError) as info:
        await backend.chat(call_for(HELLO))
    assert "Secret" not in info.value.message and info.value.backend == "sm"
    with pytest.raises(RequestBuildError):
        await collect(backend, call_for(HELLO, stream=True))
    assert stats(sim)["requests"] == before
