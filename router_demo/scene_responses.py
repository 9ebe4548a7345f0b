"""Demo scene: the OpenAI Agents SDK, with its default model (the Responses API), running the
gpt-oss guide's weather-haiku tool loop through the router, plain and streamed; then a
private conversation continued by `previous_response_id` (served locally, as it started).

`responses_scene(router_url)` returns one `Row` per model call the agent made (the router's
`x-router-backend` / `x-router-reason` headers, seen through an httpx response hook) plus one
for the private follow-up. Tracing is turned off: the Agents SDK would otherwise export
prompts and outputs to OpenAI.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agents import (
    Agent,
    Runner,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from router_demo.common import Row

MODEL = "gpt-oss:20b"
INSTRUCTIONS = "You only respond in haikus."


def responses_scene(router_url: str) -> list[Row]:
    return asyncio.run(_scene(router_url))


async def _scene(router_url: str) -> list[Row]:
    rows: list[Row] = []
    seen: list[tuple[str, str]] = []

    async def on_response(response: Any) -> None:  # an httpx(2) response
        if response.request.url.path.endswith("/responses"):
            seen.append((response.headers.get("x-router-backend", "-"),
                         response.headers.get("x-router-reason", "-")))

    # The openai SDK's own client class: whichever httpx generation this openai release uses.
    http = DefaultAsyncHttpxClient(event_hooks={"response": [on_response]}, trust_env=False)
    client = AsyncOpenAI(base_url=f"{router_url}/v1", api_key="demo", max_retries=0,
                         timeout=30, http_client=http)
    set_tracing_disabled(True)
    set_default_openai_client(client)

    @function_tool
    def get_weather(city: str) -> str:
        return f"The weather in {city} is sunny."

    agent = Agent(name="Assistant", instructions=INSTRUCTIONS, model=MODEL, tools=[get_weather])

    async def plain() -> str:
        return str((await Runner.run(agent, "What's the weather in Tokyo?")).final_output)

    async def streamed() -> str:
        run = Runner.run_streamed(agent, "What's the weather in Oslo?")
        async for _ in run.stream_events():
            pass
        return str(run.final_output)

    try:
        for label, run in (("agent run (tool loop)", plain),
                           ("agent run_streamed (tool loop)", streamed)):
            seen.clear()
            t = time.perf_counter()
            try:
                answer = await run()
            except Exception as exc:  # noqa: BLE001 - the demo reports what the client saw
                answer, seen[:] = "", [("-", type(exc).__name__)]
            ms = (time.perf_counter() - t) * 1000
            for i, (backend, reason) in enumerate(seen):
                rows.append(Row("responses", f"{label}, call {i + 1}", backend, reason,
                                ms / max(1, len(seen)), "-",
                                backend != "-" and "sunny" in answer))
        rows.append(await _private_follow_up(client, seen))
    finally:
        await client.close()
    return rows


async def _private_follow_up(client: AsyncOpenAI, seen: list[tuple[str, str]]) -> Row:
    """A private first turn, then a follow-up with no marker: still local."""
    seen.clear()
    t = time.perf_counter()
    try:
        first: Any = await client.responses.create(
            model=MODEL, input="Summarise our Q3 numbers.",
            extra_headers={"X-Privacy": "private"})
        await client.responses.create(model=MODEL, input="And Q4?",
                                      previous_response_id=first.id)
    except Exception as exc:  # noqa: BLE001
        seen.append(("-", type(exc).__name__))
    ms = (time.perf_counter() - t) * 1000
    backend, reason = seen[-1] if seen else ("-", "-")
    return Row("responses", "previous_response_id of a private turn", backend, reason, ms,
               "-", backend == "local" and reason == "private_local_only")
