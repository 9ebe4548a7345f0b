"""The whole app in-process through httpx's ASGI transport (no sockets): surface, service,
planner and executor with scripted backends (`tests/fakes.py`), lifespan included."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import httpx
import orjson
import pytest

from router.app import create_app
from router.backends.base import LoadedModel, ProbeResult
from router.policy.loader import parse_policy
from router.settings import RouterSettings
from router.state.memory import MemoryStore
from tests.fakes import FakeBackend


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


POLICY: dict[str, Any] = {
    "models": {"gpt-oss-20b": {"vram_gb": 14}},
    "backends": {
        "local": {"type": "ollama", "parallel": 2, "models": {"gpt-oss-20b": "gpt-oss:20b"}},
        "bedrock": {"type": "bedrock", "models": {"gpt-oss-20b": "openai.gpt-oss-20b-1:0"}},
    },
    "routes": [{"name": "default", "targets": ["local", "bedrock"]}],
    "keys": [{"name": "app", "sha256": _sha("sk-app")},
             {"name": "ops", "sha256": _sha("sk-ops"), "ops": True}],
}
APP_KEY = {"authorization": "Bearer sk-app"}
BODY = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, FakeBackend]]]:
    backends: dict[str, FakeBackend] = {}

    def factory(name: str, cfg: Any) -> FakeBackend:
        backends[name] = FakeBackend(name, local=bool(cfg.local))
        if cfg.local:  # the model is resident, so local is first
            backends[name].probe_result = ProbeResult(ok=True, loaded=[
                LoadedModel("gpt-oss:20b", size=14 << 30, size_vram=14 << 30)])
        return backends[name]

    settings = RouterSettings(policy_file=None, audit_log=None, redis_url=None, admin_key=None,
                              watch_policy=False)
    with mock.patch("router.runtime.build_backend", factory):
        app = create_app(settings, policy=parse_policy(POLICY), store=MemoryStore())
    transport = httpx.ASGITransport(app=app)
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c):
        yield c, backends


async def test_chat_json(client: tuple[httpx.AsyncClient, dict[str, FakeBackend]]) -> None:
    c, backends = client
    r = await c.post("/v1/chat/completions", json=BODY,
                     headers={**APP_KEY, "x-request-id": "abc-1"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "answer from local"
    assert r.headers["x-request-id"] == "abc-1"
    assert r.headers["x-router-route"] == "default"
    assert r.headers["x-router-backend"] == "local"
    assert r.headers["x-router-reason"] == "local"
    assert len(backends["local"].calls) == 1 and not backends["bedrock"].calls


async def test_chat_sse(client: tuple[httpx.AsyncClient, dict[str, FakeBackend]]) -> None:
    c, _ = client
    r = await c.post("/v1/chat/completions", json={**BODY, "stream": True}, headers=APP_KEY)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-router-backend"] == "local"
    data = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [orjson.loads(d) for d in data[:-1]]
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks
                   if ch["choices"])
    assert text == "bcde"


async def test_chat_error_keeps_the_routing_headers(
        client: tuple[httpx.AsyncClient, dict[str, FakeBackend]]) -> None:
    c, _ = client
    r = await c.post("/v1/chat/completions", json={**BODY, "model": "nope"}, headers=APP_KEY)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert r.headers["x-request-id"]
    r = await c.post("/v1/chat/completions", json=BODY)
    assert r.status_code == 401


async def test_explain(client: tuple[httpx.AsyncClient, dict[str, FakeBackend]]) -> None:
    c, backends = client
    r = await c.post("/v1/router/explain", json=BODY, headers=APP_KEY)
    assert r.status_code == 200
    plan = r.json()
    assert plan["route"] == "default" and plan["reason"] == "local"
    assert [x["backend"] for x in plan["candidates"]] == ["local", "bedrock"]
    assert not backends["local"].calls


async def test_status_needs_an_ops_key(
        client: tuple[httpx.AsyncClient, dict[str, FakeBackend]]) -> None:
    c, _ = client
    assert (await c.get("/v1/router/status", headers=APP_KEY)).status_code == 403
    r = await c.get("/v1/router/status", headers={"authorization": "Bearer sk-ops"})
    assert r.status_code == 200
    status = r.json()
    assert status["ready"] is True and set(status["usable_backends"]) == {"local", "bedrock"}
    assert status["backends"]["local"]["queues"]["gpt-oss-20b"]["slots"] == 2
    m = await c.get("/metrics", headers={"authorization": "Bearer sk-ops"})
    assert m.status_code == 200 and "router_breaker_state" in m.text
