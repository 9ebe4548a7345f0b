"""Who may read status, metrics and models; what /healthz and /readyz reveal; no absolute paths
in any response; 405 answers carry `Allow`; a trailing slash is a JSON 404, not a redirect."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from router.app import create_app
from router.policy.loader import parse_policy
from router.settings import RouterSettings
from router_simulators.server import free_port

LOCAL = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.7", 50000)
OPS_PATHS = ("/v1/router/status", "/metrics")


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


KEYS = [{"name": "app", "sha256": _sha("sk-app")},
        {"name": "ops", "sha256": _sha("sk-ops"), "ops": True},
        {"name": "root", "sha256": _sha("sk-root"), "admin": True}]


def policy_dict(keys: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "models": {"gpt-oss-20b": {"vram_gb": 14}},
        "backends": {"local": {"type": "ollama", "base_url": f"http://127.0.0.1:{free_port()}",
                               "models": {"gpt-oss-20b": "gpt-oss:20b"}}},
        "routes": [{"name": "r", "targets": ["local"]}],
        "keys": keys or [],
    }


def client(settings: RouterSettings | None = None, keys: list[dict[str, Any]] | None = None,
           peer: tuple[str, int] = LOCAL) -> TestClient:
    app = create_app(settings or RouterSettings(), policy=parse_policy(policy_dict(keys)))
    return TestClient(app, base_url="http://localhost", client=peer)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_with_keys_status_and_metrics_need_an_ops_or_admin_key() -> None:
    with client(RouterSettings(admin_key="env-admin"), KEYS) as c:  # type: ignore[arg-type]
        for path in OPS_PATHS:
            r = c.get(path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            assert c.get(path, headers=bearer("wrong")).status_code == 401
            r = c.get(path, headers=bearer("sk-app"))
            assert r.status_code == 403 and r.json()["error"]["code"] == "ops_key_required"
            for key in ("sk-ops", "sk-root", "env-admin"):
                assert c.get(path, headers=bearer(key)).status_code == 200, (path, key)
            assert c.get(path, headers={"x-api-key": "sk-ops"}).status_code == 200


def test_with_keys_models_needs_a_client_key() -> None:
    with client(keys=KEYS, peer=REMOTE) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers=bearer("wrong")).status_code == 401
        r = c.get("/v1/models", headers=bearer("sk-app"))
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "gpt-oss-20b"


def test_without_keys_ops_and_models_serve_loopback_only() -> None:
    with client(peer=REMOTE) as c:
        for path in (*OPS_PATHS, "/v1/models"):
            r = c.get(path)
            assert r.status_code == 401 and "loopback" in r.json()["error"]["message"], path
    with client(peer=LOCAL) as c:
        for path in (*OPS_PATHS, "/v1/models"):
            assert c.get(path).status_code == 200, path
    with client(RouterSettings(open_remote=True), peer=REMOTE) as c:
        for path in (*OPS_PATHS, "/v1/models"):
            assert c.get(path).status_code == 200, path
    with client(RouterSettings(admin_key="env-admin"), peer=REMOTE) as c:  # type: ignore[arg-type]
        assert c.get("/metrics", headers=bearer("env-admin")).status_code == 200


def test_health_and_ready_reveal_only_a_status_word() -> None:
    with client(keys=KEYS, peer=REMOTE) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        r = c.get("/readyz")  # the backend is down: not ready, and nothing said about why
        assert r.status_code == 503 and r.json() == {"status": "unavailable"}
        assert "local" not in r.text and "breaker" not in r.text


def test_ready_is_200_with_a_usable_backend() -> None:
    with client() as c:
        rt = c.app.state.service.runtime  # type: ignore[attr-defined]
        rt.prober.results.clear()  # never probed yet and breaker closed: usable
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json() == {"status": "ready"}
        status = c.get("/v1/router/status").json()
        assert status["ready"] is True and status["usable_backends"] == ["local"]


@pytest.mark.parametrize("broken", ["routes: [\n", "models: {}\nbackends: {}\nroutes: []\n"])
def test_reload_errors_show_no_absolute_path(tmp_path: Path, broken: str) -> None:
    path = tmp_path / "deep" / "site-policy.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(policy_dict()))
    app = create_app(RouterSettings(policy_file=str(path), watch_policy=False,
                                    admin_key="adm"))  # type: ignore[arg-type]
    with TestClient(app, base_url="http://localhost", client=LOCAL) as c:
        r = c.post("/admin/reload", headers=bearer("adm"))
        assert r.status_code == 200 and r.json()["message"] == (
            "policy reloaded from site-policy.yaml")
        path.write_text(broken)
        r = c.post("/admin/reload", headers=bearer("adm"))
        assert r.status_code == 400 and "site-policy.yaml" in r.json()["message"], r.text
        status = c.get("/v1/router/status")
        for text in (r.text, status.text):
            assert str(tmp_path) not in text and "/deep/" not in text, text
        assert "site-policy.yaml" in status.json()["last_reload_error"]


def test_405_carries_allow() -> None:
    with client() as c:
        r = c.get("/v1/chat/completions")
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        assert r.json()["error"]["code"] == "method_not_allowed"
        allow = c.post("/v1/models").headers["allow"]
        assert {m.strip() for m in allow.split(",")} == {"GET", "HEAD"}


def test_trailing_slash_is_a_json_404_not_a_redirect() -> None:
    with client() as c:
        for path in ("/v1/models/", "/v1/chat/completions/", "/healthz/"):
            r = c.request("GET" if "chat" not in path else "POST", path,
                          headers={"host": "localhost"}, follow_redirects=False)
            assert r.status_code == 404, path
            assert "location" not in r.headers and r.json()["error"]["code"] == "not_found"
