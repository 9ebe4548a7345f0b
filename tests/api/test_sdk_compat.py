"""The seed setup and the OpenAI Agents SDK, unchanged, against the router.

Seed: Ollama (here: the simulator) on 11434 serving gpt-oss:20b; `hybrid-router serve` with no
arguments on 11435; the app changes only the port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from router_simulators.ollama import OllamaSimConfig
from router_simulators.ollama import create_app as ollama_app
from router_simulators.server import SimServer
from tests.conftest import AWS_ENV


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def seed_router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not (port_free(11434) and port_free(11435)):
        pytest.skip("ports 11434/11435 are taken on this machine")
    sim = SimServer(lambda: ollama_app(OllamaSimConfig(models={"gpt-oss:20b": 14.0})),
                    port=11434).start()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ROUTER_", "OLLAMA_", "AWS_"))}
    # Any accidental cloud call fails on loopback instead of reaching AWS.
    env.update(AWS_ENV, AWS_ENDPOINT_URL_BEDROCK_RUNTIME="http://127.0.0.1:9",
               ROUTER_LOG_LEVEL="warning")
    log = tmp_path_factory.mktemp("seed") / "router.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "router.cli", "serve"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get("http://127.0.0.1:11435/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield "http://127.0.0.1:11435/v1"
    finally:
        proc.terminate()
        proc.wait(15)
        sim.stop()


def test_seed_examples_run_with_only_the_port_changed(seed_router: str) -> None:
    # The seed's Chat Completions example, base_url port 11434 -> 11435.
    client = OpenAI(base_url=seed_router, api_key="ollama")
    r = client.chat.completions.create(model="gpt-oss:20b", messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Explain what MXFP4 quantization is."}])
    assert r.choices[0].message.content
    assert getattr(r.choices[0].message, "reasoning", None)
    # The seed's function-calling example.
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Get current weather in a given city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]
    r = client.chat.completions.create(model="gpt-oss:20b", tools=tools, messages=[
        {"role": "user", "content": "What's the weather in Berlin right now?"}])
    assert r.choices[0].message.tool_calls
    assert r.choices[0].message.tool_calls[0].function.name == "get_weather"


async def test_agents_sdk_runs_a_tool_loop(seed_router: str) -> None:
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        calls.append(city)
        return f"sunny in {city}"

    client = AsyncOpenAI(base_url=seed_router, api_key="ollama")
    agent = Agent(name="weather", instructions="Answer with the tool.",
                  model=OpenAIChatCompletionsModel(model="gpt-oss-20b", openai_client=client),
                  tools=[get_weather])
    result = await Runner.run(agent, "What is the weather in Tokyo?")
    assert calls, "the agent never called the tool"
    assert "sunny in" in str(result.final_output)
    await client.close()

