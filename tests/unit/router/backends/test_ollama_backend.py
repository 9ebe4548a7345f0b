"""OllamaBackend against the Ollama simulator on a loopback port (and a few hand-made servers)."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from router.backends import gpu
from router.backends import ollama as ollama_mod
from router.backends.base import Backend, BackendCall
from router.backends.configs import OllamaConfig
from router.backends.ollama import OllamaBackend, _retry_after
from router.backends.ollama_errors import BUSY_PATTERNS, is_busy
from router.errors import (
    BackendContextExceeded,
    BackendModelMissing,
    BackendRateLimited,
    BackendRejected,
    BackendStreamError,
    BackendTimeout,
    BackendUnavailable,
)
from router.resilience.circuit import counts_as_failure
from router.types import ChatRequest, StreamEvent
from router_simulators.ollama import BUSY, SIM_KEY, OllamaSim, OllamaSimConfig, create_app
from router_simulators.script import Fault, build_script
from router_simulators.server import SimServer, free_port

CALL_ID = re.compile(r"^call_[a-z0-9]{8}$")
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[SimServer]:
    srv = SimServer(lambda: create_app(OllamaSimConfig(parallel=4))).start()
    yield srv
    srv.stop()


@pytest.fixture
def sim(server: SimServer) -> OllamaSim:
    s = server.app[SIM_KEY]
    s.faults.clear()
    s.stats.reset()
    s.cfg.max_queue = 512
    return s


def make_backend(url: str, **kw: Any) -> OllamaBackend:
    timeouts = kw.pop("timeouts", {"connect_s": 1.0, "read_s": 5.0})
    cfg = OllamaConfig(models={"gpt-oss-20b": "gpt-oss:20b"}, base_url=url, timeouts=timeouts,
                       **kw)
    return OllamaBackend("local", cfg)


@pytest.fixture
async def backend(server: SimServer, sim: OllamaSim) -> AsyncIterator[OllamaBackend]:
    b = make_backend(server.url)
    yield b
    await b.aclose()


def call(messages: list[dict[str, Any]] | None = None, model_id: str = "gpt-oss:20b",
         timeout_s: float | None = None, **req: Any) -> BackendCall:
    request = ChatRequest.model_validate(
        {"model": "gpt-oss-20b", "messages": messages or [{"role": "user", "content": "Hi"}],
         **req})
    return BackendCall(request, model_id, "gpt-oss-20b", timeout_s=timeout_s)


async def collect(b: OllamaBackend, c: BackendCall, into: list[StreamEvent] | None = None
                  ) -> list[StreamEvent]:
    events = into if into is not None else []
    async for ev in b.stream(c):
        events.append(ev)
    return events


def test_is_a_backend() -> None:
    assert isinstance(make_backend("http://127.0.0.1:1"), Backend)


async def test_chat_matches_script(backend: OllamaBackend) -> None:
    res = await backend.chat(call())
    expected = build_script([{"role": "user", "content": "Hi"}], None, "medium")
    assert res.content == "".join(expected.content)
    assert res.reasoning == "".join(expected.reasoning)
    assert res.finish_reason == "stop" and res.tool_calls == []
    assert res.usage.prompt_tokens == expected.prompt_tokens
    assert res.usage.completion_tokens == expected.completion_tokens


async def test_stream_equals_chat(backend: OllamaBackend) -> None:
    res = await backend.chat(call())
    events = await collect(backend, call())
    assert "".join(e.reasoning or "" for e in events) == res.reasoning
    assert "".join(e.content or "" for e in events) == res.content
    finals = [e for e in events if e.finish_reason]
    assert finals == [events[-1]] and events[-1].finish_reason == "stop"
    assert events[-1].usage is not None and events[-1].usage.completion_tokens > 0
    # reasoning first, then content, as gpt-oss emits
    first_content = next(i for i, e in enumerate(events) if e.content)
    assert all(e.reasoning is None for e in events[first_content:])


@pytest.mark.parametrize("effort,n", [("low", 3), ("medium", 6), ("high", 12)])
async def test_think_levels(backend: OllamaBackend, effort: str, n: int) -> None:
    res = await backend.chat(call(reasoning_effort=effort))
    assert res.reasoning is not None and res.reasoning.endswith(f"step {n}.")
    events = await collect(backend, call(reasoning_effort=effort))
    assert sum(1 for e in events if e.reasoning) == n


async def test_max_tokens_gives_length(backend: OllamaBackend) -> None:
    res = await backend.chat(call(max_tokens=8))
    assert res.finish_reason == "length"
    events = await collect(backend, call(max_tokens=8))
    assert events[-1].finish_reason == "length"


async def test_tool_round_trip(backend: OllamaBackend) -> None:
    user = {"role": "user", "content": "Weather in Tokyo?"}
    res = await backend.chat(call([user], tools=[WEATHER]))
    assert res.finish_reason == "tool_calls" and len(res.tool_calls) == 1
    tc = res.tool_calls[0]
    assert CALL_ID.match(tc.id) and tc.function.name == "get_weather"
    assert orjson.loads(tc.function.arguments) == {"city": "Tokyo"}

    history: list[dict[str, Any]] = [
        user,
        {"role": "assistant", "content": None, "reasoning": res.reasoning,
         "tool_calls": [tc.model_dump()]},
        {"role": "tool", "tool_call_id": tc.id, "content": "sunny, 25C"},
    ]
    final = await backend.chat(call(history, tools=[WEATHER]))
    assert final.finish_reason == "stop"
    assert final.content is not None and "sunny, 25C" in final.content


async def test_stream_tool_call_arrives_whole(backend: OllamaBackend) -> None:
    events = await collect(backend, call([{"role": "user", "content": "Weather in Paris?"}],
                                         tools=[WEATHER]))
    with_calls = [e for e in events if e.tool_calls]
    assert len(with_calls) == 1 and len(with_calls[0].tool_calls or []) == 1
    tc = (with_calls[0].tool_calls or [])[0]
    assert CALL_ID.match(tc.id) and orjson.loads(tc.function.arguments) == {"city": "Paris"}
    assert events[-1].finish_reason == "tool_calls"


def test_payload_mapping() -> None:
    b = make_backend("http://127.0.0.1:1", num_ctx=16384, keep_alive="10m")
    c = call(
        [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "", "reasoning_content": "Need the tool.",
             "tool_calls": [{"id": "call_abc", "type": "function",
                             "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "call_abc", "content": "rain"},
        ],
        tools=[WEATHER], reasoning_effort="high", temperature=0.2, top_p=0.9, seed=7,
        stop="END", max_tokens=99, response_format={"type": "json_object"},
    )
    body = orjson.loads(b._payload(c, True))
    assert body["model"] == "gpt-oss:20b" and body["stream"] is True
    assert body["think"] == "high" and body["keep_alive"] == "10m"
    assert body["options"] == {"temperature": 0.2, "top_p": 0.9, "seed": 7, "stop": ["END"],
                               "num_predict": 99, "num_ctx": 16384}
    assert body["format"] == "json"
    assert body["tools"][0]["function"]["name"] == "get_weather"
    sys_msg, user, asst, tool = body["messages"]
    assert sys_msg == {"role": "system", "content": "Be brief."}
    assert user == {"role": "user", "content": "Weather?"}
    assert asst["thinking"] == "Need the tool."
    assert asst["tool_calls"] == [{"id": "call_abc", "function": {
        "index": 0, "name": "get_weather", "arguments": {"city": "Oslo"}}}]
    assert tool == {"role": "tool", "content": "rain", "tool_name": "get_weather",
                    "tool_call_id": "call_abc"}


def test_payload_minimal_and_schema() -> None:
    b = make_backend("http://127.0.0.1:1", keep_alive=None)
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = orjson.loads(b._payload(call(response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}), False))
    assert body["format"] == schema
    assert set(body) == {"model", "messages", "stream", "format", "truncate"}
    assert body["truncate"] is False  # refused, not cut, when over the loaded window
    body = orjson.loads(b._payload(call(tools=[WEATHER], tool_choice="none"), False))
    assert "tools" not in body and "think" not in body and "options" not in body


def test_payload_rejects_non_object_arguments() -> None:
    b = make_backend("http://127.0.0.1:1")
    c = call([{"role": "user", "content": "x"},
              {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                  "name": "f", "arguments": "not json"}}]}])
    with pytest.raises(BackendRejected):
        b._payload(c, False)


async def test_missing_model_is_404(backend: OllamaBackend) -> None:
    with pytest.raises(BackendModelMissing) as ei:
        await backend.chat(call(model_id="nope:1b"))
    assert ei.value.backend == "local" and not ei.value.retryable
    with pytest.raises(BackendModelMissing):
        await collect(backend, call(model_id="nope:1b"))


async def test_queue_full_is_retryable_rate_limited(backend: OllamaBackend, sim: OllamaSim
                                                    ) -> None:
    """Ollama's own queue full (503 "server busy") is load: rate limited, which fails over but
    never counts toward the local breaker; a scripted 503 stays unavailable (below)."""
    sim.cfg.max_queue = 0  # the real queue check, not a scripted fault
    with pytest.raises(BackendRateLimited) as ei:
        await backend.chat(call())
    assert ei.value.retryable and ei.value.backend == "local" and BUSY in ei.value.message
    assert not counts_as_failure(ei.value, local=True)
    with pytest.raises(BackendRateLimited):
        await collect(backend, call())


@pytest.mark.parametrize("fault,exc,retryable", [
    ({"kind": "status", "status": 503}, BackendUnavailable, True),
    ({"kind": "status", "status": 500}, BackendUnavailable, True),
    ({"kind": "status", "status": 400}, BackendRejected, False),
    ({"kind": "context_exceeded"}, BackendContextExceeded, False),
    ({"kind": "content_filter"}, BackendRejected, False),
    ({"kind": "reset"}, BackendUnavailable, True),
])
async def test_errors_before_output(backend: OllamaBackend, sim: OllamaSim, fault: dict[str, Any],
                                    exc: type[Exception], retryable: bool) -> None:
    for stream in (False, True):
        sim.faults.add([Fault.from_dict(fault)])
        with pytest.raises(exc) as ei:
            if stream:
                await collect(backend, call())
            else:
                await backend.chat(call())
        assert getattr(ei.value, "retryable", None) is retryable
        assert getattr(ei.value, "backend", None) == "local"


async def test_rate_limit_honours_retry_after(backend: OllamaBackend, sim: OllamaSim) -> None:
    sim.faults.add([Fault(kind="status", status=429, retry_after=2.5)])
    with pytest.raises(BackendRateLimited) as ei:
        await backend.chat(call())
    assert ei.value.retry_after == 2.5 and ei.value.retryable


def test_retry_after_parsing() -> None:
    assert _retry_after("3") == 3.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


async def test_malformed_stream_line_is_a_marker_and_the_stream_goes_on(
        backend: OllamaBackend, sim: OllamaSim) -> None:
    """One undecodable NDJSON line is one `malformed` marker (the stream session skips it);
    the lines after it still arrive, up to the final event."""
    sim.faults.add([Fault(kind="malformed", after_tokens=2)])
    events: list[StreamEvent] = []
    await collect(backend, call(), events)
    assert [i for i, e in enumerate(events) if e.malformed] == [2]
    bad = events[2]
    assert bad.content is None and bad.reasoning is None and bad.finish_reason is None
    assert events[-1].finish_reason == "stop"
    assert "".join(e.content or "" for e in events) == "".join(
        e.content or "" for e in await collect(backend, call()))


@pytest.mark.parametrize("kind", ["midstream_error", "cut", "no_terminator"])
async def test_broken_streams(backend: OllamaBackend, sim: OllamaSim, kind: str) -> None:
    sim.faults.add([Fault(kind=kind, after_tokens=2)])
    events: list[StreamEvent] = []
    with pytest.raises(BackendStreamError) as ei:
        await collect(backend, call(), events)
    assert ei.value.backend == "local"
    assert all(e.finish_reason is None for e in events)
    if kind != "no_terminator":
        assert len(events) == 2  # what arrived before the failure was passed on


@pytest.mark.parametrize("kind", ["midstream_error", "cut", "malformed", "no_terminator"])
async def test_broken_whole_answers(backend: OllamaBackend, sim: OllamaSim, kind: str) -> None:
    sim.faults.add([Fault(kind=kind)])
    with pytest.raises((BackendStreamError, BackendUnavailable)) as ei:
        await backend.chat(call())
    assert ei.value.retryable


async def test_connection_refused() -> None:
    srv = SimServer(lambda: create_app(OllamaSimConfig())).start()
    url = srv.url
    srv.stop()  # an outage
    b = make_backend(url)
    try:
        with pytest.raises(BackendUnavailable) as ei:
            await b.chat(call())
        assert ei.value.retryable and ei.value.backend == "local"
        with pytest.raises(BackendUnavailable):
            await collect(b, call())
        probe = await b.probe()
        assert not probe.ok and probe.detail
        await b.warm("gpt-oss:20b")  # never raises
    finally:
        await b.aclose()


async def test_read_timeouts(server: SimServer, sim: OllamaSim) -> None:
    b = make_backend(server.url, timeouts={"connect_s": 1.0, "read_s": 0.2})
    try:
        sim.faults.add([Fault(kind="hang")])
        with pytest.raises(BackendTimeout) as ei:
            await b.chat(call())
        assert ei.value.retryable and ei.value.backend == "local"
        sim.faults.add([Fault(kind="stall", after_tokens=3)])
        events: list[StreamEvent] = []
        with pytest.raises(BackendTimeout):
            await collect(b, call(), events)
        assert len(events) == 3
    finally:
        await b.aclose()


async def test_attempt_timeout(backend: OllamaBackend, sim: OllamaSim) -> None:
    sim.faults.add([Fault(kind="hang")])
    with pytest.raises(BackendTimeout):
        await backend.chat(call(timeout_s=0.2))


async def test_probe(backend: OllamaBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    res = await backend.probe()
    assert res.ok and res.version == "0.12.3" and res.gpu_free_bytes is None
    [m] = res.loaded
    assert m.model_id == "gpt-oss:20b" and m.fully_on_gpu and m.context_length == 8192

    monkeypatch.setattr(ollama_mod, "read_gpu_memory", lambda device: (5, 24) if device == 1
                        else None)
    backend.config.use_nvml, backend.config.nvml_device = True, 1
    res = await backend.probe()
    assert (res.gpu_free_bytes, res.gpu_total_bytes) == (5, 24)


async def test_probe_without_nvml_names_the_extra(backend: OllamaBackend,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`use_nvml` on a router installed without the `nvml` extra: still ok, and says why."""
    gpu.shutdown()
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` fails
    backend.config.use_nvml = True
    try:
        res = await backend.probe()
    finally:
        gpu.shutdown()
    assert res.ok and res.gpu_free_bytes is None and res.loaded
    assert res.detail == "NVML unavailable: install 'hybrid-router[nvml]'"


async def test_warm_loads_a_model() -> None:
    cfg = OllamaSimConfig(resident=set())
    with SimServer(lambda: create_app(cfg)) as srv:
        b = make_backend(srv.url, num_ctx=4096)
        try:
            assert (await b.probe()).loaded == []
            await b.warm("gpt-oss:20b")
            [m] = (await b.probe()).loaded
            assert m.model_id == "gpt-oss:20b" and m.context_length == 4096
            await b.warm("missing:1b")  # a 404 is swallowed
            assert srv.app[SIM_KEY].stats.requests == 0  # loading is not generation
        finally:
            await b.aclose()


async def _serve(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/api/chat", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def test_lines_split_across_chunks() -> None:
    big = "x" * 200_000  # longer than aiohttp's line buffer
    lines = [
        {"message": {"role": "assistant", "content": "", "thinking": "hmm"}, "done": False},
        {"message": {"role": "assistant", "content": big}, "done": False},
        {"message": {"role": "assistant", "content": "!"}, "done": False},
        {"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
         "prompt_eval_count": 3, "eval_count": 4},
    ]
    payload = b"".join(orjson.dumps(x) + b"\n" for x in lines)

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for i in range(0, len(payload), 4099):
            await resp.write(payload[i:i + 4099])
            await asyncio.sleep(0)
        return resp

    runner, url = await _serve(handler)
    b = make_backend(url)
    try:
        events = await collect(b, call())
    finally:
        await b.aclose()
        await runner.cleanup()
    assert [e.reasoning for e in events] == ["hmm", None, None, None]
    assert [e.content for e in events] == [None, big, "!", None]
    assert events[-1].finish_reason == "stop" and events[-1].usage is not None
    assert (events[-1].usage.prompt_tokens, events[-1].usage.completion_tokens) == (3, 4)


async def test_missing_ids_are_generated_and_http_dates_honoured() -> None:
    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        if body["stream"]:
            later = {"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"}
            return web.Response(status=429, headers=later, body=b'{"error":"slow down"}',
                                content_type="application/json")
        return web.json_response({"message": {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "f", "arguments": {"a": 1}}}]}, "done": True,
            "done_reason": "stop"})

    runner, url = await _serve(handler)
    b = make_backend(url)
    try:
        res = await b.chat(call())
        with pytest.raises(BackendRateLimited) as ei:
            await collect(b, call())
    finally:
        await b.aclose()
        await runner.cleanup()
    assert res.finish_reason == "tool_calls" and CALL_ID.match(res.tool_calls[0].id)
    assert res.tool_calls[0].function.arguments == '{"a":1}' and res.content is None
    assert ei.value.retry_after is not None and ei.value.retry_after > 1e6


@pytest.mark.parametrize("bad", [b"[1, 2]", b'{"message": {"tool_calls": [1]}, "done": false}',
                                 b'{"message": "text", "done": true}', b"\xff\xfe"])
async def test_wrong_shapes_are_errors_or_skipped_lines(bad: bytes) -> None:
    """A whole answer of the wrong shape is a stream error; in a stream, such a line is one
    `malformed` marker (skipped by the stream session) and the cut that follows an error."""
    async def handler(request: web.Request) -> web.StreamResponse:
        if not (await request.json())["stream"]:
            return web.Response(body=bad, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(b'{"message": {"role": "assistant", "content": "ok"}, "done": false}\n')
        await resp.write(bad + b"\n")
        return resp

    runner, url = await _serve(handler)
    b = make_backend(url)
    try:
        with pytest.raises(BackendStreamError):
            await b.chat(call())
        events: list[StreamEvent] = []
        with pytest.raises(BackendStreamError):
            await collect(b, call(), events)
        assert [(e.content, e.malformed) for e in events] == [("ok", False), (None, True)]
    finally:
        await b.aclose()
        await runner.cleanup()


# -- request building is its own step --------------------------------------------------------

def _crafted(**req: Any) -> BackendCall:
    """A request as a future request type might hand it over, past the surface's validation."""
    c = call()
    for k, v in req.items():
        setattr(c.request, k, v)
    return c


def test_payload_is_total_over_odd_response_formats() -> None:
    from pydantic import BaseModel

    class Schema(BaseModel):
        type: str = "json_schema"
        json_schema: dict[str, Any] = {"name": "x", "schema": {"type": "object"}}

    b = make_backend("http://127.0.0.1:1")
    for rf, fmt in [({"type": "json_schema", "json_schema": 5}, "json"),
                    ({"type": "json_schema", "json_schema": {"schema": [1]}}, "json"),
                    ("json_object", None), (Schema(), {"type": "object"})]:
        body = orjson.loads(b.prepare(_crafted(response_format=rf), False))
        assert body.get("format") == fmt


async def test_a_builder_bug_is_a_request_build_error_and_sends_nothing(
        backend: OllamaBackend, sim: OllamaSim, monkeypatch: pytest.MonkeyPatch) -> None:
    from router.errors import RequestBuildError

    def boom(*args: Any) -> bytes:
        raise AttributeError("'int' object has no attribute 'get'")

    monkeypatch.setattr(ollama_mod, "build_payload", boom)
    before = sim.stats.requests
    with pytest.raises(RequestBuildError) as info:
        await backend.chat(call())
    assert info.value.status == 500 and info.value.code == "internal_error"
    assert "AttributeError at " in info.value.where and "'int'" not in info.value.message
    with pytest.raises(RequestBuildError):
        await collect(backend, call())
    assert sim.stats.requests == before


# -- Ollama's cloud models ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def cloud_server() -> Iterator[SimServer]:
    srv = SimServer(lambda: create_app(OllamaSimConfig(
        cloud_models={"gpt-oss:120b-cloud": "gpt-oss:120b", "team-model:latest": "gpt-oss:120b"},
        cloud_disabled=False, version="0.16.2"))).start()
    yield srv
    srv.stop()


def test_cloud_tags_are_recognised() -> None:
    from router.backends.ollama_cloud import is_cloud_tag

    for tag in ("gpt-oss:120b-cloud", "gpt-oss:20b:cloud", "kimi-k2:cloud", "GPT-OSS:120B-Cloud",
                "registry.local:5000/team/gpt-oss:cloud", "deepseek-v3.1:671b-cloud",
                "something-cloud"):
        assert is_cloud_tag(tag), tag
    for tag in ("gpt-oss:20b", "gpt-oss:120b", "cloudy:7b", "gpt-oss", "my-cloud-model:7b"):
        assert not is_cloud_tag(tag), tag


async def test_probe_records_remote_models_and_cloud_status(cloud_server: SimServer) -> None:
    b = make_backend(cloud_server.url)
    try:
        assert b.serves_locally("team-model")  # nothing known yet
        res = await b.probe()
        assert res.ok and res.cloud_disabled is False and res.cloud_source == "none"
        assert res.remote_models["gpt-oss:120b-cloud"] == "https://ollama.com:443"
        assert "gpt-oss:20b" not in res.remote_models
        assert not b.serves_locally("team-model")  # no cloud tag: known from /api/tags only
        assert not b.serves_locally("gpt-oss:120b-cloud") and b.serves_locally("gpt-oss:20b")
    finally:
        await b.aclose()


async def test_probe_without_status_endpoint_cannot_tell(backend: OllamaBackend) -> None:
    from router.backends.ollama_cloud import cloud_features

    res = await backend.probe()
    assert res.ok and res.cloud_disabled is None and res.remote_models == {}
    features = cloud_features(res)
    assert features["disabled"] is None and "cannot tell" in str(features["warning"])
    assert "OLLAMA_NO_CLOUD=1" in str(features["warning"])


async def test_an_answer_from_a_remote_host_marks_the_model_not_local(
        cloud_server: SimServer) -> None:
    b = make_backend(cloud_server.url)
    try:
        await b.chat(call(model_id="team-model:latest"))  # no probe yet
        assert not b.serves_locally("team-model:latest")
    finally:
        await b.aclose()


async def test_prober_warns_once_about_ollama_cloud(cloud_server: SimServer,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from router.resilience.prober import Prober

    class Breakers:
        async def probe_succeeded(self, name: str) -> None:
            return None

        async def record_health_failure(self, name: str) -> None:
            return None

    cfg = OllamaConfig(base_url=cloud_server.url, models={
        "gpt-oss-20b": "gpt-oss:20b", "gpt-oss-120b": "gpt-oss:120b-cloud"})
    b = OllamaBackend("local", cfg)
    prober = Prober({"local": b}, {"local": 5.0}, Breakers())  # type: ignore[arg-type]
    try:
        with caplog.at_level("WARNING", logger="router.prober"):
            await prober.probe_once("local")
            await prober.probe_once("local")
    finally:
        await b.aclose()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings
    assert any("cloud features are on" in w for w in warnings)
    assert any("gpt-oss-120b" in w and "never serves private" in w for w in warnings)


async def test_status_says_why_a_model_is_not_local_and_whether_cloud_is_off(
        cloud_server: SimServer) -> None:
    from starlette.requests import Request

    from router.api.health_routes import HealthRoutes
    from router.policy.loader import parse_policy
    from router.service import RouterService
    from router.state.memory import MemoryStore

    policy = parse_policy({
        "models": {"gpt-oss-20b": {"vram_gb": 14}, "gpt-oss-120b": {"vram_gb": 65}},
        "backends": {"local": {"type": "ollama", "base_url": cloud_server.url, "models": {
            "gpt-oss-20b": "gpt-oss:20b", "gpt-oss-120b": "gpt-oss:120b-cloud"}}},
        "routes": [{"name": "r", "targets": ["local"]}]})
    service = RouterService(policy, MemoryStore())

    async def reload() -> tuple[bool, str]:
        return True, ""

    try:
        await service.runtime.prober.probe_once("local")
        resp = await HealthRoutes(service, reload, None).status(
            Request({"type": "http", "method": "GET", "path": "/v1/router/status",
                     "headers": [], "query_string": b""}))
    finally:
        await service.runtime.close()
    local = orjson.loads(bytes(resp.body))["backends"]["local"]
    assert local["ollama_cloud"]["disabled"] is False
    assert "OLLAMA_NO_CLOUD=1" in local["ollama_cloud"]["warning"]
    assert set(local["not_local_models"]) == {"gpt-oss-120b"}
    assert local["not_local_models"]["gpt-oss-120b"]["reason"] == "ollama_cloud_model"


def test_events_of_one_read_say_whether_the_next_is_already_here() -> None:
    """`ready_next` on every event followed by a well-formed one of the same read; the last
    of a read, one before a malformed line and one before an error line carry none, and the
    error comes after the events before it."""
    b = make_backend("http://127.0.0.1:9")

    def line(content: str, **extra: Any) -> bytes:
        return orjson.dumps({"message": {"role": "assistant", "content": content}, **extra})

    batch, done, error = b._events([line("a"), b"", line("b"), b"{bad", line("c")], False)
    assert [e.content for e in batch] == ["a", "b", None, "c"]
    assert [e.ready_next for e in batch] == [True, False, True, False]
    assert batch[2].malformed and not done and error is None
    batch, done, error = b._events([line("a"), b'{"error": "boom"}', line("never")], False)
    assert [e.content for e in batch] == ["a"] and not batch[0].ready_next
    assert isinstance(error, BackendStreamError) and not done
    batch, done, error = b._events(
        [line("a"), line("", done=True, done_reason="stop"), line("after")], False)
    assert [e.ready_next for e in batch] == [True, False] and done and error is None
    assert batch[-1].finish_reason == "stop"


# One example per BUSY_PATTERNS entry (server/sched.go ErrMaxQueue, whole and cut short).
BUSY_EXAMPLES = (
    "ollama 503: server busy, please try again.  maximum pending requests exceeded",
    "ollama 503: server busy, please try again.",
)


@pytest.mark.parametrize("pattern,text", list(zip(BUSY_PATTERNS, BUSY_EXAMPLES, strict=True)))
def test_each_busy_pattern_matches_its_example(pattern: re.Pattern[str], text: str) -> None:
    assert pattern.search(text) and is_busy(503, text)


@pytest.mark.parametrize("status,text", [
    (503, "ollama 503: Service Unavailable"),  # a plain 503: ill health, still unavailable
    (500, BUSY_EXAMPLES[0]),  # the words on another status are not the queue
    (503, "ollama 503: model is loading"),
])
def test_not_busy(status: int, text: str) -> None:
    assert not is_busy(status, text)
