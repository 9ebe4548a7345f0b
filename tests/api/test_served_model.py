"""The answer names what served it: in every dialect, JSON and stream alike, `model` is the
model as the serving backend names it (`gpt-oss:20b` from Ollama, `openai.gpt-oss-120b-1:0`
from Bedrock), whatever name or alias the client asked for; `x-router-backend` stays."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from router.app import create_app
from router.policy.loader import parse_policy
from router.settings import RouterSettings
from router_simulators.server import SimServer
from tests.conftest import AWS_ENV

LOCAL = ("127.0.0.1", 50001)
CASES = [("gpt-oss-20b", "local", "gpt-oss:20b"), ("oss-small", "local", "gpt-oss:20b"),
         ("gpt-oss:120b", "bedrock", "openai.gpt-oss-120b-1:0"),
         ("openai/gpt-oss-120b", "bedrock", "openai.gpt-oss-120b-1:0")]
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def app(ollama_sim: SimServer, bedrock_sim: SimServer) -> Iterator[TestClient]:
    policy = parse_policy({
        "models": {"gpt-oss-20b": {"vram_gb": 14, "aliases": ["oss-small"]},
                   "gpt-oss-120b": {"vram_gb": 65}},
        "backends": {"local": {"type": "ollama", "base_url": ollama_sim.url, "parallel": 4,
                               "gpu_memory_gb": 80, "probe_interval_s": 0.2,
                               "models": {"gpt-oss-20b": "gpt-oss:20b"}},
                     "bedrock": {"type": "bedrock", "endpoint_url": bedrock_sim.url,
                                 "models": {"gpt-oss-120b": "openai.gpt-oss-120b-1:0"}}},
        "routes": [{"name": "r", "targets": ["local", "bedrock"], "max_queue_wait_s": 2}],
    })
    with pytest.MonkeyPatch.context() as mp:
        for k, v in AWS_ENV.items():
            mp.setenv(k, v)
        with TestClient(create_app(RouterSettings(), policy=policy), base_url="http://localhost",
                        client=LOCAL) as c:
            yield c


def _sse(text: str) -> list[Any]:
    out = []
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(orjson.loads(line[6:]))
    return out


def _post(app: TestClient, path: str, body: dict[str, Any], backend: str) -> str:
    r = app.post(path, json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-router-backend"] == backend and r.headers["x-router-reason"]
    return r.text


@pytest.mark.parametrize(("asked", "backend", "served"), CASES)
def test_chat_completions_json_and_chunks(app: TestClient, asked: str, backend: str,
                                          served: str) -> None:
    body = {"model": asked, "messages": MSG}
    assert orjson.loads(_post(app, "/v1/chat/completions", body, backend))["model"] == served
    chunks = _sse(_post(app, "/v1/chat/completions", {**body, "stream": True}, backend))
    assert chunks and {c["model"] for c in chunks} == {served}


@pytest.mark.parametrize(("asked", "backend", "served"), CASES)
def test_responses_json_and_events(app: TestClient, asked: str, backend: str,
                                   served: str) -> None:
    body = {"model": asked, "input": "hi", "store": False}
    assert orjson.loads(_post(app, "/v1/responses", body, backend))["model"] == served
    events = _sse(_post(app, "/v1/responses", {**body, "stream": True}, backend))
    models = {e["response"]["model"] for e in events if "response" in e}
    assert models == {served}


@pytest.mark.parametrize(("asked", "backend", "served"), CASES)
def test_ollama_native_json_and_lines(app: TestClient, asked: str, backend: str,
                                      served: str) -> None:
    body = {"model": asked, "messages": MSG, "stream": False}
    assert orjson.loads(_post(app, "/api/chat", body, backend))["model"] == served
    lines = [orjson.loads(x) for x in
             _post(app, "/api/chat", {**body, "stream": True}, backend).splitlines() if x]
    assert lines and {x["model"] for x in lines} == {served}
    gen = {"model": asked, "prompt": "hi", "stream": False}
    assert orjson.loads(_post(app, "/api/generate", gen, backend))["model"] == served


@pytest.mark.parametrize(("asked", "backend", "served"), CASES)
def test_anthropic_json_and_events(app: TestClient, asked: str, backend: str,
                                   served: str) -> None:
    body = {"model": asked, "max_tokens": 64, "messages": MSG}
    assert orjson.loads(_post(app, "/v1/messages", body, backend))["model"] == served
    events = _sse(_post(app, "/v1/messages", {**body, "stream": True}, backend))
    starts = [e["message"]["model"] for e in events if e.get("type") == "message_start"]
    assert starts == [served]
