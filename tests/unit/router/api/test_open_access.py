"""With no API keys configured, the router serves loopback clients only (unless told)."""

from __future__ import annotations

import hashlib

from starlette.testclient import TestClient

from router.app import create_app
from router.policy.loader import parse_policy
from router.settings import RouterSettings
from router_simulators.server import free_port

BODY = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "hi"}]}


def policy(keys: list[dict[str, str]] | None = None) -> object:
    return parse_policy({
        "models": {"gpt-oss-20b": {"vram_gb": 14}},
        "backends": {"local": {"type": "ollama", "base_url": f"http://127.0.0.1:{free_port()}",
                               "models": {"gpt-oss-20b": "gpt-oss:20b"}}},
        "routes": [{"name": "r", "targets": ["local"]}],
        "keys": keys or [],
    })


def test_open_router_refuses_remote_clients() -> None:
    # TestClient's peer address is "testclient": not loopback.
    app = create_app(RouterSettings(), policy=policy())  # type: ignore[arg-type]
    with TestClient(app, base_url="http://localhost") as client:
        r = client.post("/v1/chat/completions", json=BODY)
        assert r.status_code == 401
        assert "loopback" in r.json()["error"]["message"]
        assert client.get("/healthz").status_code == 200  # probes still work


def test_open_remote_setting_allows_them() -> None:
    app = create_app(RouterSettings(open_remote=True), policy=policy())  # type: ignore[arg-type]
    with TestClient(app, base_url="http://localhost") as client:
        r = client.post("/v1/chat/completions", json=BODY)
        assert r.status_code in (502, 503)  # past auth; the backend is down


def test_keys_configured_means_keys_decide() -> None:
    keys = [{"name": "a", "sha256": hashlib.sha256(b"k").hexdigest()}]
    app = create_app(RouterSettings(), policy=policy(keys))  # type: ignore[arg-type]
    with TestClient(app, base_url="http://localhost") as client:
        assert client.post("/v1/chat/completions", json=BODY).status_code == 401
        r = client.post("/v1/chat/completions", json=BODY, headers={"authorization": "Bearer k"})
        assert r.status_code in (502, 503)
