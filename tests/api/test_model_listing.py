"""`/v1/models` lists every name a client may send for each served model, and
`GET /v1/models/{id}` answers for each of them (OpenAI's 404 `model_not_found` otherwise),
through the official `openai` SDK against the app in process; every listed name is one chat
accepts (answered by the Ollama and Bedrock simulators), and the keys guard both endpoints."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI
from starlette.testclient import TestClient

from router.app import create_app
from router.policy.loader import parse_policy
from router.settings import RouterSettings
from router_simulators.server import SimServer
from tests.conftest import AWS_ENV

LOCAL = ("127.0.0.1", 50000)


def policy_dict(ollama_url: str, bedrock_url: str, **over: Any) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "models": {"gpt-oss-20b": {"vram_gb": 14, "aliases": ["oss-small"]},
                   "gpt-oss-120b": {"vram_gb": 65},
                   "gpt-oss-unserved": {"vram_gb": 1}},
        "backends": {"local": {"type": "ollama", "base_url": ollama_url, "parallel": 4,
                               "gpu_memory_gb": 80, "probe_interval_s": 0.2,
                               "models": {"gpt-oss-20b": "gpt-oss:20b",
                                          "gpt-oss-120b": "gpt-oss:120b"}},
                     "bedrock": {"type": "bedrock", "endpoint_url": bedrock_url,
                                 "models": {"gpt-oss-120b": "openai.gpt-oss-120b-1:0"}}},
        "routes": [{"name": "private", "match": {"privacy": "private"}, "targets": ["local"]},
                   {"name": "r", "targets": ["local", "bedrock"], "max_queue_wait_s": 2}],
        "privacy": {"private_aliases": {"private-gpt": "gpt-oss-20b"}},
    }
    policy.update(over)
    return policy


def sdk(c: TestClient, key: str = "unused") -> OpenAI:
    return OpenAI(base_url="http://localhost/v1", api_key=key, http_client=c, max_retries=0)


@pytest.fixture(scope="module")
def app_client(ollama_sim: SimServer, bedrock_sim: SimServer) -> Iterator[TestClient]:
    policy = parse_policy(policy_dict(ollama_sim.url, bedrock_sim.url))
    with pytest.MonkeyPatch.context() as mp:  # the Bedrock client is built at start-up
        for k, v in AWS_ENV.items():
            mp.setenv(k, v)
        app = create_app(RouterSettings(), policy=policy)
        with TestClient(app, base_url="http://localhost", client=LOCAL) as c:
            yield c


SMALL = ["gpt-oss-20b", "gpt-oss:20b", "openai/gpt-oss-20b", "openai.gpt-oss-20b-1:0",
         "oss-small", "private-gpt"]
LARGE = ["gpt-oss-120b", "gpt-oss:120b", "openai/gpt-oss-120b", "openai.gpt-oss-120b-1:0"]


def test_list_has_every_sendable_name_per_served_model(app_client: TestClient) -> None:
    models = list(sdk(app_client).models.list())
    assert [m.id for m in models] == SMALL + LARGE  # policy order; unserved models left out
    for m in models:
        assert m.object == "model" and m.owned_by == "openai" and m.created > 0


@pytest.mark.parametrize("name", SMALL + LARGE)
def test_retrieve_answers_for_every_listed_name(app_client: TestClient, name: str) -> None:
    m = sdk(app_client).models.retrieve(name)  # the SDK percent-encodes `/` in `openai/...`
    assert (m.id, m.object, m.owned_by) == (name, "model", "openai")


def test_retrieve_takes_any_spelling_chat_accepts(app_client: TestClient) -> None:
    client = sdk(app_client)
    assert client.models.retrieve("GPT-OSS:20B").id == "gpt-oss:20b"  # the listed spelling
    assert client.models.retrieve("us.openai.gpt-oss-20b-1:0").id == "us.openai.gpt-oss-20b-1:0"


@pytest.mark.parametrize("name", ["llama-3", "gpt-oss-unserved", "gpt-oss:20b-cloud"])
def test_unknown_or_unserved_model_is_openais_404(app_client: TestClient, name: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        sdk(app_client).models.retrieve(name)
    err = info.value.body
    assert isinstance(err, dict)
    assert (err["code"], err["type"], err["param"]) == (
        "model_not_found", "invalid_request_error", "model")
    assert name in err["message"] and "gpt-oss-20b" in err["message"]


def test_every_listed_name_is_accepted_by_chat(app_client: TestClient) -> None:
    client = sdk(app_client)
    for name in SMALL + LARGE:
        raw = client.chat.completions.with_raw_response.create(
            model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=20)
        logical = "gpt-oss-20b" if name in SMALL else "gpt-oss-120b"
        # `model` names what served it, as that backend names the model
        served = {"local": {"gpt-oss-20b": "gpt-oss:20b", "gpt-oss-120b": "gpt-oss:120b"},
                  "bedrock": {"gpt-oss-120b": "openai.gpt-oss-120b-1:0"}}
        assert raw.parse().model == served[raw.headers["x-router-backend"]][logical], name
    raw = client.chat.completions.with_raw_response.create(
        model="private-gpt", messages=[{"role": "user", "content": "hi"}], max_tokens=20)
    assert raw.headers["x-router-route"] == "private"  # the alias made it private


def test_a_backend_id_that_means_another_model_is_not_listed(
        ollama_sim: SimServer, bedrock_sim: SimServer) -> None:
    # `gpt-oss:120b-cloud` resolves to no model: the backend id is not a name a client may send.
    policy = policy_dict(ollama_sim.url, bedrock_sim.url)
    policy["backends"]["local"]["models"]["gpt-oss-120b"] = "gpt-oss:120b-cloud"
    service = create_app(RouterSettings(), policy=parse_policy(policy)).state.service
    names = service.model_names()
    assert "gpt-oss:120b-cloud" not in names
    assert names["gpt-oss:120b"] == "gpt-oss-120b"


def test_keys_guard_the_list_and_each_model(
        ollama_sim: SimServer, bedrock_sim: SimServer) -> None:
    key = {"name": "app", "sha256": hashlib.sha256(b"sk-app").hexdigest()}
    policy = parse_policy(policy_dict(ollama_sim.url, bedrock_sim.url, keys=[key]))
    with TestClient(create_app(RouterSettings(), policy=policy),
                    base_url="http://localhost", client=("203.0.113.7", 50000)) as c:
        for path in ("/v1/models", "/v1/models/gpt-oss:20b", "/v1/models/llama-3"):
            r = c.get(path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert sdk(c, "sk-app").models.retrieve("gpt-oss:20b").id == "gpt-oss:20b"
        assert len(list(sdk(c, "sk-app").models.list())) == len(SMALL + LARGE)
        assert c.get("/v1/models/", headers={"authorization": "Bearer sk-app"}).json()[
            "error"]["code"] == "not_found"
