"""BedrockBackend through real boto3 against the Bedrock simulator on a loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, cast

import pytest
from aiohttp import ClientSession, web
from botocore.eventstream import ChecksumMismatch

from router.backends.base import Backend, BackendCall
from router.backends.bedrock import BedrockBackend, _StreamState
from router.backends.bedrock_converse import clean_schema, converse_request
from router.backends.bedrock_errors import _Attempt
from router.backends.configs import BedrockConfig, Timeouts
from router.errors import (
    BackendAuthError,
    BackendContentFiltered,
    BackendContextExceeded,
    BackendError,
    BackendModelMissing,
    BackendRateLimited,
    BackendRejected,
    BackendStreamError,
    BackendTimeout,
    BackendUnavailable,
)
from router.types import ChatRequest, StreamEvent
from router_simulators.bedrock import STATE, BedrockSimConfig, SimState, create_app
from router_simulators.script import Fault
from router_simulators.server import SimServer

MODEL = "openai.gpt-oss-20b-1:0"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"city": {"type": "string"}, "strict": {"type": "boolean"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


@pytest.fixture(scope="module", autouse=True)
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Dummy credentials only: nothing from the developer's AWS setup is read."""
    empty = tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_BEARER_TOKEN_BEDROCK",
                     "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                     "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                     "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_SESSION_TOKEN", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-west-2")
        mp.setenv("AWS_CONFIG_FILE", str(empty / "config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "credentials"))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(scope="module")
def shared_sim(aws_env: None) -> Iterator[SimServer]:
    server = SimServer(lambda: create_app(BedrockSimConfig())).start()
    yield server
    server.stop()


@pytest.fixture
async def sim(shared_sim: SimServer) -> SimServer:
    """The module's simulator, with no faults queued and fresh stats."""
    st = state(shared_sim)
    st.faults.clear()
    # a handler may still be finishing after its client saw the end; nothing may stay open
    await wait_for_in_flight(shared_sim, 0)
    st.stats.reset()
    st.last_request = None
    return shared_sim


@pytest.fixture
def own_sim(aws_env: None) -> Iterator[SimServer]:
    """A simulator this test may stop."""
    server = SimServer(lambda: create_app(BedrockSimConfig())).start()
    yield server
    server.stop()


def state(sim: SimServer) -> SimState:
    return sim.app[STATE]


def make_backend(sim: SimServer, read_s: float = 10.0, window: int | None = None) -> BedrockBackend:
    config = BedrockConfig(models={"gpt-oss-20b": MODEL}, endpoint_url=sim.url,
                           timeouts=Timeouts(connect_s=2.0, read_s=read_s), context_window=window)
    return BedrockBackend("bedrock", config)


@pytest.fixture(scope="module")
def shared_backend(shared_sim: SimServer) -> Iterator[BedrockBackend]:
    b = make_backend(shared_sim)  # boto3 clients are loop-independent: one per module is enough
    yield b
    asyncio.run(b.aclose())


@pytest.fixture
def backend(sim: SimServer, shared_backend: BedrockBackend) -> BedrockBackend:
    return shared_backend


def add_fault(sim: SimServer, **fields: Any) -> None:
    extras = {k: fields.pop(k) for k in ("error_type", "original_status") if k in fields}
    fault = Fault.from_dict(fields)
    for key, value in extras.items():
        setattr(fault, key, value)
    state(sim).faults.add([fault])


def call(content: str = "Hello there", **fields: Any) -> BackendCall:
    messages = fields.pop("messages", [{"role": "user", "content": content}])
    request = ChatRequest.model_validate({"model": "gpt-oss-20b", "messages": messages, **fields})
    return BackendCall(request=request, model_id=fields.pop("model_id", MODEL),
                       logical_model="gpt-oss-20b")


async def collect(backend: BedrockBackend, c: BackendCall) -> list[StreamEvent]:
    return [event async for event in backend.stream(c)]


# ---- happy paths ---------------------------------------------------------------------------


async def test_is_a_backend(backend: BedrockBackend) -> None:
    assert isinstance(backend, Backend)
    assert backend.local is False


async def test_chat_maps_reasoning_content_usage_and_request_fields(
        sim: SimServer, backend: BedrockBackend) -> None:
    result = await backend.chat(call(
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "developer", "content": "Answer in English."},
                  {"role": "user", "content": "Hello there"}],
        max_tokens=100, temperature=0.5, top_p=0.9, stop=["END"], reasoning_effort="low"))
    assert result.reasoning == "Thinking 1 step 2 step 3."
    assert result.content and result.content.endswith(".")
    assert result.finish_reason == "stop"
    assert result.tool_calls == []
    assert result.usage.prompt_tokens > 0
    assert result.usage.completion_tokens == 3 + 12
    body = state(sim).last_request
    assert body is not None
    assert state(sim).last_operation == "converse"
    assert body["system"] == [{"text": "Be brief."}, {"text": "Answer in English."}]
    assert body["messages"] == [{"role": "user", "content": [{"text": "Hello there"}]}]
    assert body["inferenceConfig"] == {"maxTokens": 100, "temperature": 0.5, "topP": 0.9,
                                       "stopSequences": ["END"]}
    assert body["additionalModelRequestFields"] == {"reasoning_effort": "low"}
    assert "toolConfig" not in body


@pytest.mark.parametrize(("effort", "steps"), [("low", 3), ("medium", 6), ("high", 12)])
async def test_reasoning_effort_is_forwarded(sim: SimServer, backend: BedrockBackend,
                                             effort: str, steps: int) -> None:
    result = await backend.chat(call(reasoning_effort=effort))
    assert state(sim).last_request["additionalModelRequestFields"] == {  # type: ignore[index]
        "reasoning_effort": effort}
    assert result.reasoning is not None and result.reasoning.endswith(f"step {steps}.")


async def test_max_tokens_maps_to_length(backend: BedrockBackend) -> None:
    result = await backend.chat(call(max_tokens=8))
    assert result.finish_reason == "length"
    events = await collect(backend, call(max_tokens=8))
    assert events[-1].finish_reason == "length"


async def test_stream_reasoning_then_content_then_one_final_event(backend: BedrockBackend) -> None:
    events = await collect(backend, call())
    finals = [e for e in events if e.finish_reason is not None]
    assert finals == [events[-1]]
    assert events[-1].finish_reason == "stop"
    assert events[-1].usage is not None and events[-1].usage.completion_tokens == 18
    reasoning = "".join(e.reasoning or "" for e in events)
    content = "".join(e.content or "" for e in events)
    assert reasoning == "Thinking 1 step 2 step 3 step 4 step 5 step 6."
    chat = await backend.chat(call())
    assert content == chat.content
    first_content = next(i for i, e in enumerate(events) if e.content)
    assert all(e.content is None for e in events[:first_content])
    assert len([e for e in events if e.reasoning]) == 6  # one event per upstream token


async def test_tool_round_trip_passes_reasoning_back_without_signature(
        sim: SimServer, backend: BedrockBackend) -> None:
    first = await backend.chat(call("What is the weather in Paris?", tools=[WEATHER_TOOL],
                                    tool_choice="auto"))
    assert first.finish_reason == "tool_calls"
    assert first.content is None
    (tc,) = first.tool_calls
    assert tc.id.startswith("tooluse_")
    assert tc.function.name == "get_weather"
    assert tc.function.arguments == '{"city":"Paris"}'
    sent = state(sim).last_request
    assert sent is not None
    spec = sent["toolConfig"]["tools"][0]["toolSpec"]
    assert spec["inputSchema"]["json"] == {
        "type": "object", "required": ["city"],
        "properties": {"city": {"type": "string"}, "strict": {"type": "boolean"}}}
    assert sent["toolConfig"]["toolChoice"] == {"auto": {}}

    second = await backend.chat(call(tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "reasoning": first.reasoning,
         "tool_calls": [tc.model_dump()]},
        {"role": "tool", "tool_call_id": tc.id, "content": "sunny, 21C"},
    ]))
    assert second.finish_reason == "stop"
    assert second.content == "The tool says: sunny, 21C"
    sent = state(sim).last_request
    assert sent is not None
    assistant = sent["messages"][1]
    assert assistant["role"] == "assistant"
    assert assistant["content"][0] == {"reasoningContent": {"reasoningText": {
        "text": first.reasoning}}}
    assert assistant["content"][1] == {"toolUse": {"toolUseId": tc.id, "name": "get_weather",
                                                   "input": {"city": "Paris"}}}
    assert sent["messages"][2] == {"role": "user", "content": [{"toolResult": {
        "toolUseId": tc.id, "status": "success", "content": [{"text": "sunny, 21C"}]}}]}
    assert all(m["content"] for m in sent["messages"])


async def test_stream_tool_call_arrives_whole(backend: BedrockBackend) -> None:
    events = await collect(backend, call("Weather in Tokyo?", tools=[WEATHER_TOOL]))
    calls = [e for e in events if e.tool_calls]
    assert len(calls) == 1
    (tc,) = calls[0].tool_calls or []
    assert tc.id.startswith("tooluse_") and tc.function.arguments == '{"city":"Tokyo"}'
    assert events[-1].finish_reason == "tool_calls"


async def test_turns_are_merged_and_empty_assistant_turns_dropped(
        sim: SimServer, backend: BedrockBackend) -> None:
    calls = [{"id": f"call_{i}", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}} for i in (1, 2)]
    result = await backend.chat(call(tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "", "reasoning": "only thinking"},
        {"role": "user", "content": "Weather in Oslo and Bergen?"},
        {"role": "assistant", "content": "Checking.", "reasoning": "before the final answer",
         "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
        {"role": "tool", "tool_call_id": "call_2", "content": ""},
        {"role": "user", "content": "Thanks"},
    ]))
    assert result.finish_reason == "tool_calls"  # tools offered, last turn from the user
    sent = state(sim).last_request
    assert sent is not None
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert sent["messages"][0]["content"] == [{"text": "Hi"},
                                              {"text": "Weather in Oslo and Bergen?"}]
    # the reasoning-only turn was dropped, and reasoning before the last user turn is not sent
    assert "reasoningContent" not in str(sent["messages"])
    last = sent["messages"][2]["content"]
    assert [next(iter(b)) for b in last] == ["toolResult", "toolResult", "text"]
    assert last[1]["toolResult"]["content"] == [{"text": "(no output)"}]


def test_request_mapping_tool_choice_and_schema_cleaning() -> None:
    def kwargs(**fields: Any) -> dict[str, Any]:
        return converse_request(call(tools=[WEATHER_TOOL], **fields).request, MODEL)

    assert kwargs()["toolConfig"].get("toolChoice") is None
    assert kwargs(tool_choice="auto")["toolConfig"]["toolChoice"] == {"auto": {}}
    assert kwargs(tool_choice="required")["toolConfig"]["toolChoice"] == {"any": {}}
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert kwargs(tool_choice=named)["toolConfig"]["toolChoice"] == {
        "tool": {"name": "get_weather"}}
    assert "toolConfig" not in kwargs(tool_choice="none")
    history = [{"role": "user", "content": "x"},
               {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                   "name": "lookup", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "c1", "content": "y"}]
    with_history = kwargs(tool_choice="none", messages=history)["toolConfig"]
    assert "toolChoice" not in with_history
    assert [t["toolSpec"]["name"] for t in with_history["tools"]] == ["get_weather", "lookup"]
    nested = {"$id": "x", "type": "object", "properties": {"a": {
        "type": "object", "additionalProperties": {"type": "string"}, "properties": {}}}}
    assert clean_schema(nested) == {"type": "object", "properties": {"a": {
        "type": "object", "properties": {}}}}


async def test_bad_tool_arguments_are_rejected_before_sending(sim: SimServer,
                                                              backend: BedrockBackend) -> None:
    bad = [{"role": "user", "content": "x"},
           {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
               "name": "get_weather", "arguments": "[1, 2]"}}]},
           {"role": "tool", "tool_call_id": "c1", "content": "y"}]
    with pytest.raises(BackendRejected):
        await backend.chat(call(messages=bad, tools=[WEATHER_TOOL]))
    assert state(sim).stats.requests == 0


async def test_probe_warm_make_no_calls(sim: SimServer, backend: BedrockBackend) -> None:
    probe = await backend.probe()
    assert probe.ok and probe.detail == "cloud: not probed"
    await backend.warm(MODEL)
    assert state(sim).stats.requests == 0


async def test_aclose_closes_the_client(own_sim: SimServer) -> None:
    b = make_backend(own_sim)
    await b.chat(call())
    await b.aclose()
    await b.aclose()  # idempotent


# ---- errors --------------------------------------------------------------------------------

ERROR_CASES: list[tuple[dict[str, Any], type[BackendError], bool]] = [
    ({"kind": "status", "status": 429}, BackendRateLimited, True),
    ({"kind": "status", "status": 429, "error_type": "ModelNotReadyException"},
     BackendUnavailable, True),
    ({"kind": "status", "status": 400, "error_type": "ServiceQuotaExceededException"},
     BackendRateLimited, False),
    ({"kind": "status", "status": 500}, BackendUnavailable, True),
    ({"kind": "status", "status": 503}, BackendUnavailable, True),
    ({"kind": "status", "status": 408}, BackendTimeout, True),
    ({"kind": "status", "status": 400}, BackendRejected, False),
    ({"kind": "status", "status": 403}, BackendAuthError, False),
    ({"kind": "status", "status": 404}, BackendModelMissing, False),
    ({"kind": "status", "status": 424, "original_status": 503}, BackendUnavailable, True),
    ({"kind": "status", "status": 424, "original_status": 429}, BackendUnavailable, True),
    ({"kind": "status", "status": 424, "original_status": 400}, BackendUnavailable, False),
    ({"kind": "reset"}, BackendUnavailable, True),
    ({"kind": "content_filter"}, BackendContentFiltered, False),
]


@pytest.mark.parametrize(("fault", "error", "retryable"), ERROR_CASES,
                         ids=lambda v: str(v) if not isinstance(v, dict) else "-".join(
                             str(x) for x in v.values()))
async def test_chat_errors(sim: SimServer, backend: BedrockBackend, fault: dict[str, Any],
                           error: type[BackendError], retryable: bool) -> None:
    add_fault(sim, times=-1, **fault)  # persistent, so this holds whatever botocore retries
    with pytest.raises(error) as info:
        await backend.chat(call())
    assert type(info.value) is error
    assert info.value.retryable is retryable
    assert info.value.backend == "bedrock"


@pytest.mark.parametrize("fault", [e[0] for e in ERROR_CASES if e[0]["kind"] == "status"])
async def test_stream_errors_before_output_map_like_chat(
        sim: SimServer, backend: BedrockBackend, fault: dict[str, Any]) -> None:
    expected = next(e for e in ERROR_CASES if e[0] == fault)
    add_fault(sim, times=-1, **fault)
    with pytest.raises(expected[1]) as info:
        await collect(backend, call())
    assert info.value.retryable is expected[2]


@pytest.mark.parametrize("fault", [{"kind": "status", "status": 503}, {"kind": "reset"}])
async def test_botocore_makes_a_single_attempt(sim: SimServer, backend: BedrockBackend,
                                               fault: dict[str, Any]) -> None:
    # the router retries; botocore's own retries must be off (aws_common.make_client)
    add_fault(sim, **fault)
    with pytest.raises(BackendUnavailable):
        await backend.chat(call())
    assert state(sim).stats.requests == 1


async def test_throttling_carries_retry_after(sim: SimServer, backend: BedrockBackend) -> None:
    add_fault(sim, kind="status", status=429, retry_after=2.5, times=-1)
    with pytest.raises(BackendRateLimited) as info:
        await backend.chat(call())
    assert info.value.retry_after == 2.5


async def test_unknown_model_is_missing(backend: BedrockBackend) -> None:
    with pytest.raises(BackendModelMissing):
        await backend.chat(call(model_id="openai.gpt-oss-999b-1:0"))


async def test_connection_refused_is_unavailable(own_sim: SimServer) -> None:
    b = make_backend(own_sim)
    own_sim.stop()
    with pytest.raises(BackendUnavailable) as info:
        await b.chat(call())
    assert info.value.retryable
    await b.aclose()


async def test_hang_is_a_timeout(sim: SimServer) -> None:
    b = make_backend(sim, read_s=0.3)
    add_fault(sim, kind="hang", times=-1)
    with pytest.raises(BackendTimeout):
        await b.chat(call())
    state(sim).faults.clear()
    add_fault(sim, kind="stall", after_tokens=2)
    with pytest.raises(BackendTimeout):
        await collect(b, call())
    await wait_for_in_flight(sim, 0)  # both connections were released
    await b.aclose()


STREAM_CASES: list[tuple[dict[str, Any], type[BackendError], bool, bool]] = [
    # fault, error, retryable, output seen before the error
    ({"kind": "midstream_error", "after_tokens": 3}, BackendStreamError, True, True),
    # botocore drops originalStatusCode from in-stream exceptions, so no finer rule is possible
    ({"kind": "midstream_error", "after_tokens": 0, "original_status": 400},
     BackendStreamError, True, False),
    ({"kind": "midstream_error", "after_tokens": 0, "status": 429},
     BackendRateLimited, True, False),
    ({"kind": "midstream_error", "after_tokens": 2, "status": 429}, BackendStreamError, True, True),
    ({"kind": "midstream_error", "after_tokens": 0, "status": 503},
     BackendUnavailable, True, False),
    ({"kind": "malformed", "after_tokens": 2}, BackendStreamError, True, True),
    ({"kind": "cut", "after_tokens": 2}, BackendStreamError, True, True),
    ({"kind": "no_terminator"}, BackendStreamError, True, True),
    ({"kind": "context_exceeded"}, BackendContextExceeded, False, False),
]


@pytest.mark.parametrize(("fault", "error", "retryable", "output"), STREAM_CASES,
                         ids=lambda v: "-".join(str(x) for x in v.values())
                         if isinstance(v, dict) else str(v))
async def test_stream_faults(sim: SimServer, backend: BedrockBackend, fault: dict[str, Any],
                             error: type[BackendError], retryable: bool, output: bool) -> None:
    add_fault(sim, **fault)
    seen: list[StreamEvent] = []
    with pytest.raises(error) as info:
        async for event in backend.stream(call()):
            seen.append(event)
    assert type(info.value) is error
    assert info.value.retryable is retryable
    assert bool(seen) is output
    assert all(e.finish_reason is None for e in seen)


async def test_bad_crc_is_a_stream_error_caused_by_checksum_mismatch(
        sim: SimServer, backend: BedrockBackend) -> None:
    add_fault(sim, kind="malformed", after_tokens=0)
    with pytest.raises(BackendStreamError) as info:
        await collect(backend, call())
    assert isinstance(info.value.__cause__, ChecksumMismatch)


async def test_stream_content_filter_is_a_finish_reason(sim: SimServer,
                                                        backend: BedrockBackend) -> None:
    add_fault(sim, kind="content_filter", after_tokens=2)
    events = await collect(backend, call())
    assert [e.reasoning for e in events[:2]] == ["Thinking 1", " step 2"]
    assert events[-1].finish_reason == "content_filter"


async def test_context_window_precheck_sends_nothing(sim: SimServer) -> None:
    b = make_backend(sim, window=1000)
    with pytest.raises(BackendContextExceeded):
        await b.chat(call("word " * 900))  # about 1130 tokens by the estimate
    with pytest.raises(BackendContextExceeded):
        await collect(b, call("short", max_tokens=2000))
    assert state(sim).stats.requests == 0
    await b.aclose()


async def test_validation_near_the_window_is_context_exceeded(sim: SimServer) -> None:
    b = make_backend(sim, window=1000)
    add_fault(sim, kind="status", status=400, error_type="ValidationException")
    with pytest.raises(BackendContextExceeded):
        await b.chat(call("word " * 700))  # about 880 tokens: within the estimate's margin
    add_fault(sim, kind="status", status=400, error_type="ValidationException")
    with pytest.raises(BackendRejected) as info:
        await b.chat(call("short prompt"))  # far from the window: an ordinary validation error
    assert type(info.value) is BackendRejected
    await b.aclose()


async def test_input_too_long_text_is_context_exceeded_whatever_the_estimate(
        sim: SimServer) -> None:
    b = make_backend(sim)
    add_fault(sim, kind="context_exceeded")  # "Input is too long for requested model."
    with pytest.raises(BackendContextExceeded):
        await b.chat(call("short prompt"))
    await b.aclose()


async def test_bearer_token_is_used_by_botocore_itself(sim: SimServer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # botocore picks AWS_BEARER_TOKEN_BEDROCK up on its own and refuses to send it over
    # plain HTTP; reaching that check proves the bearer path was chosen without our code.
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key")
    b = make_backend(sim)
    with pytest.raises(BackendError) as info:
        await b.chat(call())
    assert "Bearer" in str(info.value.__cause__)
    assert state(sim).stats.requests == 0
    await b.aclose()


# ---- cancellation and the event loop --------------------------------------------------------


async def wait_for_in_flight(sim: SimServer, value: int) -> None:
    for _ in range(500):  # the simulator notices a closed socket within ~50 ms
        if state(sim).stats.in_flight == value:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"in_flight stayed {state(sim).stats.in_flight}, wanted {value}")


async def test_cancelling_a_stream_midway_closes_it(sim: SimServer,
                                                    backend: BedrockBackend) -> None:
    add_fault(sim, kind="stall", after_tokens=2)
    stream = backend.stream(call())
    got = [await anext(stream), await anext(stream)]
    assert [e.reasoning for e in got] == ["Thinking 1", " step 2"]
    pending = asyncio.ensure_future(anext(stream))
    await wait_for_in_flight(sim, 1)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(pending, 5)
    await asyncio.wait_for(stream.aclose(), 5)  # type: ignore[attr-defined]
    await wait_for_in_flight(sim, 0)  # the socket was shut down, not left to the read timeout
    result = await backend.chat(call())  # the backend still works
    assert result.finish_reason == "stop"


async def test_50_stalled_streams_leave_the_event_loop_free(sim: SimServer) -> None:
    b = make_backend(sim, read_s=60.0)
    add_fault(sim, kind="stall", after_tokens=1, times=50)
    first_token = [asyncio.Event() for _ in range(50)]

    async def consume(i: int) -> None:
        async for _ in b.stream(call(f"Stream number {i}")):
            first_token[i].set()

    tasks = [asyncio.create_task(consume(i)) for i in range(50)]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first_token)), 20)
    await wait_for_in_flight(sim, 50)

    async def hello(_: web.Request) -> web.Response:
        return web.json_response({"models": []})

    local = web.Application()
    local.router.add_get("/api/ps", hello)
    runner = web.AppRunner(local)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with ClientSession() as session, session.get(f"http://127.0.0.1:{port}/api/ps") as r:
            assert r.status == 200
            assert await r.json() == {"models": []}
        # the local answer arrived while every cloud stream was still open and blocked
        assert not any(t.done() for t in tasks)
        assert state(sim).stats.in_flight == 50
    finally:
        await runner.cleanup()
    for t in tasks:
        t.cancel()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    await wait_for_in_flight(sim, 0)
    await b.aclose()


# ---- the mapping is total; validation detail stays in the log ------------------------------


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"auto": {}}),
    ("required", {"any": {}}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"tool": {"name": "get_weather"}}),
    ({"type": "function", "name": "get_weather"}, {"tool": {"name": "get_weather"}}),
    ({"type": "function", "function": ["x"]}, None),
    ({"type": "function", "function": "get_weather"}, None),
    ({"type": "function", "function": {"name": 5}}, None),
    ({"type": "function", "function": None}, None),
    ({"function": {"name": ""}}, None),
    ("bogus", None),
    (7, None),
    ([{"function": {"name": "x"}}], None),
])
def test_tool_choice_mapping_is_total(choice: Any, expected: Any) -> None:
    request = call(tools=[WEATHER_TOOL]).request
    request.tool_choice = choice  # past the surface's validation, as a future type might be
    kwargs = converse_request(request, MODEL)
    assert kwargs["toolConfig"].get("toolChoice") == expected


def test_tool_choice_as_a_typed_model() -> None:
    from pydantic import BaseModel

    class Fn(BaseModel):
        name: str

    class Choice(BaseModel):
        type: str = "function"
        function: Fn

    request = call(tools=[WEATHER_TOOL]).request
    request.tool_choice = cast(Any, Choice(function=Fn(name="get_weather")))
    assert converse_request(request, MODEL)["toolConfig"]["toolChoice"] == {
        "tool": {"name": "get_weather"}}


async def test_the_bad_tool_choice_reaches_bedrock_as_auto(sim: SimServer,
                                                           backend: BedrockBackend) -> None:
    c = call("Weather in Oslo?", tools=[WEATHER_TOOL])
    c.request.tool_choice = {"type": "function", "function": ["x"]}
    result = await backend.chat(c)
    assert result.finish_reason in ("tool_calls", "stop")


async def test_botocore_validation_is_a_generic_rejection(
        sim: SimServer, backend: BedrockBackend, caplog: pytest.LogCaptureFixture) -> None:
    c = call("my card is 4111 1111 1111 1111")
    c.request.stop = ["alice@example.com", ""]  # botocore: stopSequences[1] is too short
    with caplog.at_level("DEBUG", logger="router.backends.bedrock"), \
            pytest.raises(BackendRejected) as info:
        await backend.chat(c)
    msg = info.value.message
    assert msg.startswith("the request could not be translated for Bedrock")
    assert "stopSequences" not in msg and "parameter" not in msg and "alice" not in msg
    assert not info.value.retryable and info.value.status == 400
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "inferenceConfig.stopSequences[1]" in logged
    assert "alice" not in logged and "4111" not in logged
    assert state(sim).stats.requests == 0


async def test_a_mapping_bug_is_a_request_build_error(sim: SimServer, backend: BedrockBackend,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from router.backends import bedrock as bedrock_mod
    from router.errors import RequestBuildError

    def boom(*args: Any) -> dict[str, Any]:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(bedrock_mod, "converse_request", boom)
    with pytest.raises(RequestBuildError):
        await backend.chat(call())
    with pytest.raises(RequestBuildError):
        await collect(backend, call())
    assert state(sim).stats.requests == 0


def test_tool_calls_flushed_together_at_message_stop_say_the_next_is_here() -> None:
    """Tool calls left open at `messageStop` come out of one Converse event: each but the
    last is marked `ready_next`; a tool call closed by its own `contentBlockStop` is not."""
    s = _StreamState(_Attempt("b", estimate=10, window=100))
    for i, name in enumerate(("get_weather", "get_time", "get_date")):
        s.feed({"contentBlockStart": {"contentBlockIndex": i, "start": {
            "toolUse": {"toolUseId": f"t{i}", "name": name}}}})
        s.feed({"contentBlockDelta": {"contentBlockIndex": i,
                                      "delta": {"toolUse": {"input": "{}"}}}})
    (first,) = s.feed({"contentBlockStop": {"contentBlockIndex": 0}})
    assert not first.ready_next
    out = s.feed({"messageStop": {"stopReason": "tool_use"}})
    assert [e.tool_calls[0].function.name for e in out if e.tool_calls] == [
        "get_time", "get_date"]
    assert [e.ready_next for e in out] == [True, False]
