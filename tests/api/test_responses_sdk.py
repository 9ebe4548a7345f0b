"""The `openai` SDK's Responses API and the OpenAI Agents SDK (its default
`OpenAIResponsesModel`), unchanged, against the real router process, on each backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI, OpenAI

from router_simulators.server import SimServer
from tests.conftest import RouterProcess, base_policy

BACKENDS = ["local", "bedrock", "sagemaker"]
TOOLS: list[Any] = [{
    "type": "function", "name": "get_weather", "description": "Get current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}]


def only(backend: str, ollama: str, bedrock: str, sagemaker: str) -> dict[str, Any]:
    """A policy whose one target is `backend`."""
    policy = base_policy(ollama, bedrock, sagemaker)
    policy["routes"] = [{"name": "only", "targets": [backend], "max_queue_wait_s": 2}]
    return policy


@pytest.fixture(scope="module", params=BACKENDS)
def router(request: pytest.FixtureRequest, ollama_sim: SimServer, bedrock_sim: SimServer,
           sagemaker_sim: SimServer, module_tmp: Path) -> Iterator[tuple[str, str]]:
    backend = str(request.param)
    proc = RouterProcess(only(backend, ollama_sim.url, bedrock_sim.url, sagemaker_sim.url),
                         module_tmp)
    try:
        yield backend, proc.url + "/v1"
    finally:
        proc.stop()


def _client(url: str) -> OpenAI:
    return OpenAI(base_url=url, api_key="unused", max_retries=0)


def test_create_text_with_reasoning(router: tuple[str, str]) -> None:
    backend, url = router
    raw = _client(url).responses.with_raw_response.create(
        model="gpt-oss:20b", input="Explain MXFP4 briefly.", instructions="Be brief.")
    assert raw.headers["x-router-backend"] == backend
    r = raw.parse()
    assert r.id.startswith("resp_") and r.status == "completed" and r.object == "response"
    assert [o.type for o in r.output] == ["reasoning", "message"]
    reasoning = r.output[0]
    assert reasoning.type == "reasoning" and reasoning.content
    assert reasoning.content[0].type == "reasoning_text" and reasoning.content[0].text
    assert r.output_text
    assert r.usage is not None and r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.output_tokens_details.reasoning_tokens > 0


def test_function_call_round_trip_by_input_items(router: tuple[str, str]) -> None:
    _, url = router
    client = _client(url)
    items: list[Any] = [{"role": "user", "content": "What is the weather in Tokyo?"}]
    first = client.responses.create(model="gpt-oss:20b", input=items, tools=TOOLS, store=False)
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Tokyo"}
    items += [o.model_dump(exclude_none=True) for o in first.output]  # reasoning included
    items.append({"type": "function_call_output", "call_id": calls[0].call_id,
                  "output": "Sunny, 22C"})
    second = client.responses.create(model="gpt-oss:20b", input=items, tools=TOOLS)
    assert second.status == "completed" and "Sunny, 22C" in second.output_text


def test_function_call_round_trip_by_previous_response_id(router: tuple[str, str]) -> None:
    _, url = router
    client = _client(url)
    first = client.responses.create(model="gpt-oss:20b", tools=TOOLS,
                                    input="What is the weather in Paris?")
    call = next(o for o in first.output if o.type == "function_call")
    second = client.responses.create(
        model="gpt-oss:20b", tools=TOOLS, previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Rainy"}])
    assert second.previous_response_id == first.id and "Rainy" in second.output_text
    items = client.responses.input_items.list(second.id, order="asc").data
    assert [i.type for i in items] == ["message", "reasoning", "function_call",
                                       "function_call_output"]


def test_json_schema_format(router: tuple[str, str]) -> None:
    _, url = router
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"], "additionalProperties": False}
    r = _client(url).responses.create(
        model="gpt-oss:20b", input="Name a city.",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema,
                         "strict": True}})
    assert r.status == "completed"
    assert r.text is not None and r.text.format is not None
    assert r.text.format.type == "json_schema"


def test_stream_text_deltas_then_completed(router: tuple[str, str]) -> None:
    _, url = router
    deltas: list[str] = []
    types: list[str] = []
    with _client(url).responses.stream(model="gpt-oss:20b", input="Say hello.") as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert types[:2] == ["response.created", "response.in_progress"]
    assert "response.reasoning_text.delta" in types and types[-1] == "response.completed"
    assert len(deltas) > 1 and final.status == "completed"
    assert final.output_text == "".join(deltas)


def test_agents_sdk_weather_haiku_default_model(router: tuple[str, str]) -> None:
    from agents import (
        Agent,
        Runner,
        function_tool,
        set_default_openai_api,
        set_default_openai_client,
        set_tracing_disabled,
    )

    _, url = router
    set_tracing_disabled(True)
    set_default_openai_api("responses")  # the default, said out loud
    set_default_openai_client(AsyncOpenAI(base_url=url, api_key="unused", max_retries=0))
    seen: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        seen.append(city)
        return f"The weather in {city} is sunny."

    agent = Agent(name="Assistant", instructions="You only respond in haikus.",
                  model="gpt-oss:20b", tools=[get_weather])

    async def both() -> tuple[Any, str]:
        result = await Runner.run(agent, "What's the weather in Tokyo?")
        streamed = Runner.run_streamed(agent, "What's the weather in Oslo?")
        kinds = [event.type async for event in streamed.stream_events()]
        assert "raw_response_event" in kinds
        return result, str(streamed.final_output)

    result, streamed_output = asyncio.run(both())
    assert seen == ["Tokyo", "Oslo"]
    assert "sunny" in str(result.final_output) and "sunny" in streamed_output
