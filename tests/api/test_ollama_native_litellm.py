"""LiteLLM as an Ollama client of the real router process, over each backend: the `ollama/`
provider (`/api/generate`), the `ollama_chat/` provider (`/api/chat`, native tools), and the
gpt-oss guide's Agents SDK example through `LitellmModel(model="ollama/gpt-oss:120b")` plus
the same weather-haiku tool loop over `ollama_chat/`.

LiteLLM's `ollama/` provider does tool calling by prompt (the tool list in the prompt,
`format: "json"`, a JSON `{"name", "arguments"}` answer); the simulators do not play that game,
so over `ollama/` the agent run is checked to complete (format json reaching the backend), and
the tool loop itself runs over `ollama_chat/`. No test reaches the internet: LiteLLM reads its
bundled model cost map (`LITELLM_LOCAL_MODEL_COST_MAP`), tracing is off.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_ollama_native import BACKENDS, single_backend_policy, start_sim
from tests.conftest import RouterProcess

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

litellm = pytest.importorskip("litellm")


@pytest.fixture(scope="module", params=BACKENDS)
def router_url(request: pytest.FixtureRequest, module_tmp: Path) -> Iterator[str]:
    kind = str(request.param)
    sim = start_sim(kind)
    router = RouterProcess(single_backend_policy(kind, sim.url), module_tmp)
    try:
        yield router.url
    finally:
        router.stop()
        sim.stop()


def test_litellm_generate_and_chat_providers(router_url: str) -> None:
    msgs = [{"role": "user", "content": "Say hello."}]
    r: Any = litellm.completion(model="ollama/gpt-oss:120b", api_base=router_url, messages=msgs)
    assert r.choices[0].message.content and r.usage.completion_tokens > 0
    r = litellm.completion(model="ollama_chat/gpt-oss:120b", api_base=router_url, messages=msgs,
                           reasoning_effort="high")
    assert r.choices[0].message.content and r.choices[0].message.reasoning_content
    chunks = list(litellm.completion(model="ollama_chat/gpt-oss:120b", api_base=router_url,
                                     messages=msgs, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks)
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]
    ask = [{"role": "user", "content": "Weather in Oslo?"}]
    r = litellm.completion(model="ollama_chat/gpt-oss:120b", api_base=router_url, messages=ask,
                           tools=tools)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and "city" in call.function.arguments
    follow = [*ask, r.choices[0].message.model_dump(),
              {"role": "tool", "tool_call_id": call.id, "content": "rainy"}]
    r = litellm.completion(model="ollama_chat/gpt-oss:120b", api_base=router_url,
                           messages=follow, tools=tools)
    assert "rainy" in r.choices[0].message.content


async def test_agents_sdk_litellm_model_weather_haiku(router_url: str) -> None:
    from agents import Agent, Runner, function_tool, set_tracing_disabled
    from agents.extensions.models.litellm_model import LitellmModel

    set_tracing_disabled(True)
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Get the weather for a city."""
        calls.append(city)
        return f"The weather in {city} is sunny."

    for model in ("ollama/gpt-oss:120b", "ollama_chat/gpt-oss:120b"):
        agent = Agent(name="Assistant", instructions="You only respond in haikus.",
                      model=LitellmModel(model=model, api_key="x", base_url=router_url),
                      tools=[get_weather])
        result = await Runner.run(agent, "What's the weather in Tokyo?")
        assert result.final_output
    assert calls == ["Tokyo"], "the ollama_chat/ agent never ran its tool"
