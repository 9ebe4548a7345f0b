"""An Ollama model id without a tag (`mymodel`) is the model Ollama reports as
`mymodel:latest`: residency, remote hosts and `/api/ps` all compare through `ollama_names`."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import httpx
import pytest

from router.app import create_app
from router.backends.base import LoadedModel, ProbeResult
from router.backends.ollama_cloud import remote_host
from router.backends.ollama_names import model_key, normalise_tag, same_model
from router.planner import BackendView, PlannerState, RequestFacts, plan
from router.policy.loader import parse_policy
from router.settings import RouterSettings
from router.state.memory import MemoryStore
from tests.fakes import FakeBackend

GiB = 1 << 30


@pytest.mark.parametrize(("given", "expected"), [
    ("mymodel", "mymodel:latest"),
    (" mymodel ", "mymodel:latest"),
    ("gpt-oss:20b", "gpt-oss:20b"),
    ("team/mymodel", "team/mymodel:latest"),
    ("registry.local:5000/team/mymodel", "registry.local:5000/team/mymodel:latest"),
    ("registry.local:5000/team/mymodel:q4", "registry.local:5000/team/mymodel:q4"),
    ("mymodel@sha256:" + "a" * 64, "mymodel@sha256:" + "a" * 64),
    ("sha256:" + "b" * 64, "sha256:" + "b" * 64),
    ("", ""),
])
def test_normalise_tag(given: str, expected: str) -> None:
    assert normalise_tag(given) == expected


def test_same_model() -> None:
    assert same_model("mymodel", "mymodel:latest")
    assert same_model("MyModel", "mymodel:latest") and model_key("MyModel") == "mymodel:latest"
    assert not same_model("mymodel", "mymodel:7b")
    assert not same_model("gpt-oss:20b", "gpt-oss:120b")


def test_remote_host_matches_either_spelling() -> None:
    assert remote_host("team-120b", {"team-120b:latest": "https://ollama.com"})
    assert remote_host("team-120b:latest", {"team-120b": "https://ollama.com"})
    assert remote_host("Team-120b", {"team-120b:latest": "https://ollama.com"})
    assert remote_host("team-120b:7b", {"team-120b:latest": "https://ollama.com"}) is None


def _policy_data(model_id: str) -> dict[str, Any]:
    return {
        "models": {"gpt-oss-20b": {"vram_gb": 14}},
        "backends": {
            "local": {"type": "ollama", "parallel": 2, "gpu_memory_gb": 24, "num_ctx": 8192,
                      "models": {"gpt-oss-20b": model_id}},
            "bedrock": {"type": "bedrock", "models": {"gpt-oss-20b": "openai.gpt-oss-20b-1:0"}},
        },
        "routes": [{"name": "default", "targets": ["local", "bedrock"]}],
    }


def _policy(model_id: str) -> Any:
    return parse_policy(_policy_data(model_id))


def _ps(reported: str) -> ProbeResult:
    return ProbeResult(ok=True, loaded=[LoadedModel(reported, 14 * GiB, 14 * GiB, 8192)])


@pytest.mark.parametrize(("configured", "reported"), [
    ("mymodel", "mymodel:latest"), ("mymodel:latest", "mymodel:latest"),
    ("mymodel:latest", "mymodel")])
def test_an_untagged_model_id_counts_as_resident(configured: str, reported: str) -> None:
    st = PlannerState(now=0.0)
    st.backends["local"] = BackendView(probe=_ps(reported))
    st.backends["bedrock"] = BackendView()
    p = plan(RequestFacts(model="gpt-oss-20b", privacy="standard", prompt_tokens=100,
                          max_tokens=100), _policy(configured), st)
    assert p.error is None and p.candidates[0].backend == "local"
    assert p.reason.render() == "local" and p.warm == []


def test_another_tag_is_not_resident() -> None:
    st = PlannerState(now=0.0)
    st.backends["local"] = BackendView(probe=_ps("mymodel:7b"))
    st.backends["bedrock"] = BackendView()
    p = plan(RequestFacts(model="gpt-oss-20b", privacy="standard", prompt_tokens=100,
                          max_tokens=100), _policy("mymodel"), st)
    assert p.reason.render() == "model_not_resident"


@pytest.fixture
async def app_client() -> AsyncIterator[httpx.AsyncClient]:
    def factory(name: str, cfg: Any) -> FakeBackend:
        backend = FakeBackend(name, local=bool(cfg.local))
        if cfg.local:
            backend.probe_result = _ps("mymodel:latest")
        return backend

    policy = _policy_data("mymodel")
    policy["keys"] = [{"name": "app", "sha256": hashlib.sha256(b"sk-app").hexdigest()}]
    settings = RouterSettings(policy_file=None, audit_log=None, redis_url=None, admin_key=None,
                              watch_policy=False)
    with mock.patch("router.runtime.build_backend", factory):
        app = create_app(settings, policy=parse_policy(policy), store=MemoryStore())
    transport = httpx.ASGITransport(app=app)
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c):
        yield c


async def test_api_ps_lists_an_untagged_model_that_ollama_reports_tagged(
        app_client: httpx.AsyncClient) -> None:
    r = await app_client.get("/api/ps", headers={"authorization": "Bearer sk-app"})
    assert r.status_code == 200, r.text
    models = r.json()["models"]
    assert len(models) == 1 and models[0]["size_vram"] == 14 * GiB
