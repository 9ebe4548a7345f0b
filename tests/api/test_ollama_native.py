"""The `ollama` Python package, unchanged but for its host, against the real router process,
over each backend (the Ollama, Bedrock and SageMaker simulators): list, show, ps, chat, chat
stream, think, a tool round trip and generate, plus Ollama-shaped errors, and an Ollama-native
client served by Bedrock while the local backend is down (NDJSON intact)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from ollama import Client, ResponseError

from router_simulators.bedrock import BedrockSimConfig
from router_simulators.bedrock import create_app as bedrock_app
from router_simulators.ollama import OllamaSimConfig
from router_simulators.ollama import create_app as ollama_app
from router_simulators.sagemaker import SageMakerSimConfig
from router_simulators.sagemaker import create_app as sagemaker_app
from router_simulators.server import SimServer, free_port
from tests.conftest import RouterProcess

MODELS = {"gpt-oss-20b": {"vram_gb": 14}, "gpt-oss-120b": {"vram_gb": 65}}
BACKENDS = ("ollama", "bedrock", "sagemaker")
SIM_URLS: dict[str, str] = {}  # router URL -> its simulator's
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def backend_config(kind: str, url: str) -> dict[str, Any]:
    """One backend serving both gpt-oss models from its simulator."""
    if kind == "ollama":
        return {"type": "ollama", "base_url": url, "parallel": 4, "gpu_memory_gb": 96,
                "probe_interval_s": 0.2,
                "models": {"gpt-oss-20b": "gpt-oss:20b", "gpt-oss-120b": "gpt-oss:120b"}}
    if kind == "bedrock":
        return {"type": "bedrock", "endpoint_url": url, "context_window": 128000,
                "models": {"gpt-oss-20b": "openai.gpt-oss-20b-1:0",
                           "gpt-oss-120b": "openai.gpt-oss-120b-1:0"}}
    return {"type": "sagemaker", "endpoint_url": url, "endpoint_name": "gpt-oss-20b-endpoint",
            "context_window": 128000,
            "models": {"gpt-oss-20b": "gpt-oss-20b", "gpt-oss-120b": "gpt-oss-120b"}}


def single_backend_policy(kind: str, url: str) -> dict[str, Any]:
    return {"models": MODELS, "backends": {kind: backend_config(kind, url)},
            "routes": [{"name": "default", "targets": [kind], "max_queue_wait_s": 2}],
            "retry": {"attempts": 2, "initial_s": 0.01, "max_s": 0.05}}


def start_sim(kind: str) -> SimServer:
    if kind == "ollama":
        return SimServer(lambda: ollama_app(OllamaSimConfig(parallel=4, gpu_gb=96.0))).start()
    if kind == "bedrock":
        return SimServer(lambda: bedrock_app(BedrockSimConfig())).start()
    return SimServer(lambda: sagemaker_app(SageMakerSimConfig())).start()


@pytest.fixture(scope="module", params=BACKENDS)
def served(request: pytest.FixtureRequest, module_tmp: Path) -> Iterator[tuple[str, str]]:
    """(backend kind, router URL) for a router whose only backend is that simulator."""
    kind = str(request.param)
    sim = start_sim(kind)
    router = RouterProcess(single_backend_policy(kind, sim.url), module_tmp)
    try:
        SIM_URLS[router.url] = sim.url
        yield kind, router.url
    finally:
        router.stop()
        sim.stop()


@pytest.fixture(scope="module")
def cloud_while_local_down(module_tmp: Path) -> Iterator[str]:
    """Local Ollama is down (nothing listens on its port); Bedrock is up."""
    sim = start_sim("bedrock")
    policy = {"models": MODELS,
              "backends": {"local": backend_config("ollama", f"http://127.0.0.1:{free_port()}"),
                           "bedrock": backend_config("bedrock", sim.url)},
              "routes": [{"name": "private", "match": {"privacy": "private"},
                          "targets": ["local"], "max_queue_wait_s": 0.2},
                         {"name": "default", "targets": ["local", "bedrock"],
                          "max_queue_wait_s": 0.2}],
              "retry": {"attempts": 1, "initial_s": 0.01, "max_s": 0.05},
              "privacy": {"load_timeout_s": 0.5}}
    router = RouterProcess(policy, module_tmp)
    try:
        yield router.url
    finally:
        router.stop()
        sim.stop()


def test_list_show_and_ps(served: tuple[str, str]) -> None:
    kind, url = served
    client = Client(host=url)
    names = [m.model for m in client.list().models]
    assert sorted(names) == ["gpt-oss:120b", "gpt-oss:20b"]
    for name in ("gpt-oss:120b", "gpt-oss:120b:latest", "gpt-oss-120b"):
        shown = client.show(name)
        assert shown.capabilities == ["completion", "tools", "thinking"]
        assert shown.modelinfo is not None and shown.modelinfo["gptoss.context_length"] > 0
        assert shown.details is not None and shown.details.family == "gptoss"
        assert shown.details.quantization_level == "MXFP4"
    with pytest.raises(ResponseError) as err:
        client.show("llama3:8b")
    assert err.value.status_code == 404 and 'model "llama3:8b" not found' in err.value.error
    loaded = client.ps().models  # the simulator keeps every model that fits resident
    assert {m.model for m in loaded} == (set(names) if kind == "ollama" else set())
    assert all(m.size_vram and m.context_length for m in loaded)


def test_chat_think_and_stream(served: tuple[str, str]) -> None:
    client = Client(host=served[1])
    r = client.chat(model="gpt-oss:120b", think="high", options={"num_predict": 200},
                    messages=[{"role": "user", "content": "Explain MXFP4 briefly."}])
    assert r.message.content and r.message.thinking
    # `model` names what served it, as that backend names the model
    assert r.done and r.done_reason == "stop"
    assert r.model == backend_config(served[0], "")["models"]["gpt-oss-120b"]
    assert r.eval_count and r.prompt_eval_count and r.total_duration and r.eval_duration
    assert r.created_at and r.created_at.endswith("Z") and len(r.created_at.split(".")[1]) == 10
    parts = list(client.chat(model="gpt-oss:120b", stream=True,
                             messages=[{"role": "user", "content": "Hello there."}]))
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done
    assert parts[-1].done_reason == "stop" and parts[-1].eval_count
    assert "".join(p.message.content or "" for p in parts)
    assert any(p.message.thinking for p in parts)
    quiet = client.chat(model="gpt-oss:20b", think=False,
                        messages=[{"role": "user", "content": "Hi."}])
    assert quiet.message.content and not quiet.message.thinking


def test_tool_round_trip_with_object_arguments(served: tuple[str, str]) -> None:
    client = Client(host=served[1])
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat(model="gpt-oss:120b", messages=messages, tools=[WEATHER])
    calls = r.message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert isinstance(calls[0].function.arguments, dict) and calls[0].function.arguments["city"]
    messages.append(r.message)  # as the SDK's own examples do: the call ids are dropped
    messages.append({"role": "tool", "content": "sunny, 24 C", "tool_name": "get_weather"})
    final = client.chat(model="gpt-oss:120b", messages=messages, tools=[WEATHER])
    assert "sunny, 24 C" in (final.message.content or "")
    streamed = list(client.chat(model="gpt-oss:120b", messages=messages[:1], tools=[WEATHER],
                                stream=True))
    assert any(p.message.tool_calls for p in streamed) and streamed[-1].done


def test_generate(served: tuple[str, str]) -> None:
    client = Client(host=served[1])
    r = client.generate(model="gpt-oss:120b", prompt="Why is the sky blue?",
                        system="Be brief.", options={"temperature": 0.2, "top_k": 20,
                                                     "seed": 7, "num_ctx": 8192})
    assert r.response and r.thinking and r.done and r.done_reason == "stop"
    parts = list(client.generate(model="gpt-oss:20b", prompt="Hi", stream=True))
    assert parts[-1].done and "".join(p.response or "" for p in parts)
    short = client.generate(model="gpt-oss:20b", prompt="Hi", options={"num_predict": 2})
    assert short.done_reason == "length"


def test_ollama_shaped_errors(served: tuple[str, str]) -> None:
    client = Client(host=served[1])
    cases = [
        (lambda: client.pull("gpt-oss:20b"), "does not manage models"),
        (lambda: client.embed(model="gpt-oss:20b", input="x"), "no embeddings"),
        (lambda: client.generate(model="gpt-oss:20b", prompt="x", images=[b"\x89PNG"]),
         "text-only"),
        (lambda: client.generate(model="gpt-oss:20b", prompt="x", raw=True), "raw"),
        (lambda: client.chat(model="gpt-oss:20b", think="max",  # type: ignore[arg-type]
                             messages=[{"role": "user", "content": "x"}]), "think"),
        (lambda: client.chat(model="gpt-oss:20b", options={"temperature": 9},
                             messages=[{"role": "user", "content": "x"}]),
         "options.temperature"),
    ]
    for call, words in cases:
        with pytest.raises(ResponseError) as err:
            call()
        assert err.value.status_code == 400 and words in err.value.error, err.value.error
    bad = httpx.post(served[1] + "/api/chat", content=b'{"model": "gpt-oss:20b", "messages": [')
    assert bad.status_code == 400 and set(bad.json()) == {"error"}
    assert httpx.get(served[1] + "/").text == "Ollama is running"
    assert httpx.head(served[1] + "/").status_code == 200
    assert httpx.get(served[1] + "/api/version").json()["version"]


def test_served_by_bedrock_while_local_is_down(cloud_while_local_down: str) -> None:
    url = cloud_while_local_down
    body = {"model": "gpt-oss:120b", "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.stream("POST", url + "/api/chat", json=body, timeout=20) as r:
        assert r.status_code == 200 and r.headers["x-router-backend"] == "bedrock"
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [orjson.loads(line) for line in r.iter_lines() if line]
    assert all(set(line) >= {"model", "created_at", "message", "done"} for line in lines)
    assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "stop"
    assert [line["done"] for line in lines].count(True) == 1
    parts = list(Client(host=url).chat(model="gpt-oss:120b", stream=True,
                                       messages=body["messages"]))
    assert parts[-1].done and "".join(p.message.content or "" for p in parts)
    # A private request never goes to the cloud: Ollama's error shape, 503 and Retry-After.
    r2 = httpx.post(url + "/api/chat", json={**body, "stream": False},
                    headers={"X-Privacy": "private"}, timeout=20)
    assert r2.status_code == 503 and r2.headers["retry-after"]
    assert set(r2.json()) == {"error"} and "private" in r2.json()["error"]


def test_a_stream_broken_after_it_started_ends_with_an_error_line(
        served: tuple[str, str]) -> None:
    kind, url = served
    if kind != "ollama":
        pytest.skip("the cut is scripted on the Ollama simulator")
    httpx.post(SIM_URLS[url] + "/_sim/faults",
               json={"faults": [{"kind": "cut", "after_tokens": 8, "times": 2}]})
    body = {"model": "gpt-oss:20b", "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.stream("POST", url + "/api/chat", json=body, timeout=20) as r:
        lines = [orjson.loads(line) for line in r.iter_lines() if line]
    assert r.status_code == 200 and lines[0]["done"] is False
    assert "error" in lines[-1] and not any(line.get("done") for line in lines)
    with pytest.raises(ResponseError, match="broke after it started"):
        list(Client(host=url).chat(model="gpt-oss:20b", stream=True, messages=body["messages"]))
