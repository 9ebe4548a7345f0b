"""The `anthropic` SDK, unchanged but for its base URL, against the real router process.

One router per backend (its default route targets only that backend; `X-Privacy: private`
goes to the local one), a client key sent as `x-api-key`: create (text and a thinking block),
stream (deltas, final message, stop reason), a tool_use round trip (streamed and not),
count_tokens, a wrong key (401 in Anthropic's shape), the private marker, bad input (4xx in
Anthropic's shape) and a stream that breaks after it started (an `error` event, no
`message_stop`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from router_simulators.server import SimServer
from tests.conftest import RouterProcess, base_policy

KEY = "sk-ant-router-test"
MODEL = "gpt-oss-20b"
BACKENDS = ("local", "bedrock", "sagemaker")
WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


class Stack:
    def __init__(self, backend: str, router: RouterProcess, sims: dict[str, SimServer]):
        self.backend, self.router, self.sims = backend, router, sims
        self.client = anthropic.Anthropic(base_url=router.url, api_key=KEY, max_retries=0)

    def post(self, path: str, body: Any, **headers: str) -> httpx.Response:
        return httpx.post(self.router.url + path, content=orjson.dumps(body), timeout=10,
                          headers={"content-type": "application/json", "x-api-key": KEY,
                                   **headers})


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request: pytest.FixtureRequest, module_tmp: Any, ollama_sim: SimServer,
          bedrock_sim: SimServer, sagemaker_sim: SimServer) -> Iterator[Stack]:
    backend: str = request.param
    policy = base_policy(ollama_sim.url, bedrock_sim.url, sagemaker_sim.url)
    policy["routes"][-1]["targets"] = [backend]
    policy["keys"] = [{"name": "app", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}]
    router = RouterProcess(policy, module_tmp)
    try:
        yield Stack(backend, router,
                    {"local": ollama_sim, "bedrock": bedrock_sim, "sagemaker": sagemaker_sim})
    finally:
        router.stop()


def test_create_answers_with_thinking_and_text(stack: Stack) -> None:
    raw = stack.client.messages.with_raw_response.create(
        model=MODEL, max_tokens=256, system="You are terse.",
        messages=[{"role": "user", "content": "Explain MXFP4 quantization."}],
        thinking={"type": "enabled", "budget_tokens": 2048})
    assert raw.headers["x-router-backend"] == stack.backend
    assert raw.headers["request-id"] == raw.headers["x-request-id"]
    msg = raw.parse()
    assert msg.id.startswith("msg_") and msg.type == "message" and msg.role == "assistant"
    kinds = [b.type for b in msg.content]
    assert kinds == ["thinking", "text"], kinds
    assert msg.content[0].thinking and msg.content[1].text  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


def test_stream_gives_deltas_and_the_final_message(stack: Stack) -> None:
    texts: list[str] = []
    with stack.client.messages.stream(
            model=MODEL, max_tokens=256,
            messages=[{"role": "user", "content": "Say something."}]) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                texts.append(event.delta.text)
        final = stream.get_final_message()
    assert len(texts) > 1
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[1].text == "".join(texts)  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
def test_tool_use_round_trip(stack: Stack, streamed: bool) -> None:
    messages: list[Any] = [{"role": "user", "content": "What's the weather in Berlin?"}]
    kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 512, "tools": [WEATHER]}
    if streamed:
        with stack.client.messages.stream(messages=messages, **kwargs) as s:
            first = s.get_final_message()
    else:
        first = stack.client.messages.create(messages=messages, **kwargs)
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.id.startswith("toolu_") and use.name == "get_weather"
    assert use.input == {"city": "Berlin"}
    messages += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                               "content": "sunny, 21C"}]}]
    final = stack.client.messages.create(messages=messages, **kwargs)
    assert final.stop_reason == "end_turn"
    text = "".join(b.text for b in final.content if b.type == "text")
    assert "sunny, 21C" in text


def test_count_tokens(stack: Stack) -> None:
    short = stack.client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    longer = stack.client.messages.count_tokens(
        model=MODEL, system="Be brief.", tools=[WEATHER],
        messages=[{"role": "user", "content": "Hi " * 300}])
    assert 0 < short.input_tokens < longer.input_tokens


def test_a_wrong_key_is_a_401_in_anthropics_shape(stack: Stack) -> None:
    bad = anthropic.Anthropic(base_url=stack.router.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        bad.messages.create(model=MODEL, max_tokens=16,
                            messages=[{"role": "user", "content": "Hi"}])
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hi"}])


def test_the_private_marker_stays_local(stack: Stack) -> None:
    raw = stack.client.messages.with_raw_response.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "My secret."}],
        extra_headers={"X-Privacy": "private"})
    assert raw.headers["x-router-backend"] == "local"
    assert raw.headers["x-router-route"] == "private"


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}, 400, "max_tokens"),
    ({"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "AAAA"}}]}]}, 400, "text-only"),
    ({"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}],
      "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, 400, "server tool"),
    ({"model": "claude-nonexistent", "max_tokens": 8,
      "messages": [{"role": "user", "content": "Hi"}]}, 404, "claude-nonexistent"),
    ({"model": MODEL, "max_tokens": "8", "messages": [{"role": "user", "content": "Hi"}]},
     400, "max_tokens"),
], ids=["no-max-tokens", "image", "server-tool", "unknown-model", "bad-type"])
def test_bad_input_is_a_4xx_in_anthropics_shape(stack: Stack, body: Any, status: int,
                                                needle: str) -> None:
    r = stack.post("/v1/messages", body)
    assert r.status_code == status, r.text
    out = r.json()
    assert out["type"] == "error" and needle in out["error"]["message"]
    expected = {400: "invalid_request_error", 404: "not_found_error"}[status]
    assert out["error"]["type"] == expected
    assert r.headers["request-id"] == r.headers["x-request-id"]


def test_a_stream_broken_after_it_started_ends_with_an_error_event(stack: Stack) -> None:
    sim = stack.sims[stack.backend]
    r = httpx.post(sim.url + "/_sim/faults", timeout=5, json={"faults": [
        {"kind": "midstream_error", "after_tokens": 4}]})
    assert r.status_code == 200, r.text
    with httpx.stream("POST", stack.router.url + "/v1/messages", timeout=10,
                      headers={"x-api-key": KEY, "content-type": "application/json"},
                      content=orjson.dumps({"model": MODEL, "max_tokens": 64, "stream": True,
                                            "messages": [{"role": "user",
                                                          "content": "Hi"}]})) as resp:
        assert resp.status_code == 200
        events = [line.removeprefix("event: ") for line in resp.iter_lines()
                  if line.startswith("event: ")]
    assert events[:2] == ["message_start", "ping"]
    assert events[-1] == "error" and "message_stop" not in events
