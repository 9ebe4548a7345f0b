"""Browser-borne requests: the Host allow-list (DNS rebinding), no CORS headers unless origins
are configured, and the request-body timeout (a JSON 408 before the app sees the stall)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from router.api.guards import BodyTimeout, allowed_host_set, host_name
from router.app import create_app
from router.policy.loader import parse_policy
from router.settings import RouterSettings
from tests.api.test_ops_access import LOCAL, policy_dict

BODY = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "hi"}]}


def client(settings: RouterSettings | None = None) -> TestClient:
    app = create_app(settings or RouterSettings(), policy=parse_policy(policy_dict()))
    return TestClient(app, base_url="http://localhost", client=LOCAL)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:11435", "127.0.0.1.nip.io",
                                  "localhost.evil.example", "", "router", "[nope]:80"])
def test_foreign_host_gets_421(host: str) -> None:
    with client() as c:
        for method, path in (("GET", "/v1/models"), ("GET", "/v1/router/status"),
                             ("POST", "/v1/chat/completions")):
            r = c.request(method, path, headers={"host": host}, json=BODY)
            assert r.status_code == 421, (host, path)
            assert r.json()["error"]["code"] == "host_not_allowed"


@pytest.mark.parametrize("host", ["localhost", "localhost:11435", "127.0.0.1:8080", "[::1]",
                                  "[::1]:11435", "LOCALHOST:1", "10.0.0.5:11435",
                                  "[fd00::5]:11435"])
def test_loopback_hosts_pass(host: str) -> None:
    with client() as c:
        assert c.get("/v1/models", headers={"host": host}).status_code == 200, host


def test_configured_and_bind_hosts_pass_and_star_disables() -> None:
    settings = RouterSettings(allowed_hosts="router.internal, *.svc.cluster.local",
                              host="10.1.2.3")
    with client(settings) as c:
        for host in ("router.internal:11435", "hybrid-router.ns.svc.cluster.local",
                     "10.1.2.3:11435", "localhost"):
            assert c.get("/healthz", headers={"host": host}).status_code == 200
            assert c.get("/v1/models", headers={"host": host}).status_code == 200, host
        assert c.get("/v1/models", headers={"host": "other"}).status_code == 421
    with client(RouterSettings(allowed_hosts="*")) as c:
        assert c.get("/v1/models", headers={"host": "anything.example"}).status_code == 200
    assert allowed_host_set("", "0.0.0.0") == frozenset({"localhost", "127.0.0.1", "[::1]"})
    assert "[fd00::1]" in (allowed_host_set("fd00::1", "::") or ())
    assert host_name("[::1]:80") == "[::1]" and host_name("Example.COM:8") == "example.com"


def test_probes_answer_any_host() -> None:
    with client() as c:
        assert c.get("/healthz", headers={"host": "pod.internal:11435"}).status_code == 200
        assert c.get("/readyz", headers={"host": "pod.internal:11435"}).status_code in (200, 503)


def test_no_cors_headers_unless_configured() -> None:
    origin = {"origin": "http://evil.example"}
    with client() as c:
        r = c.get("/v1/models", headers=origin)
        assert not [h for h in r.headers if h.startswith("access-control-")]
        r = c.options("/v1/chat/completions", headers={
            **origin, "access-control-request-method": "POST"})
        assert not [h for h in r.headers if h.startswith("access-control-")]
    settings = RouterSettings(cors_origins="http://app.example")
    with client(settings) as c:
        r = c.get("/v1/models", headers={"origin": "http://app.example"})
        assert r.headers["access-control-allow-origin"] == "http://app.example"
        r = c.get("/v1/models", headers=origin)
        assert "access-control-allow-origin" not in r.headers
        r = c.options("/v1/chat/completions", headers={
            "origin": "http://app.example", "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type"})
        assert r.status_code == 200 and "POST" in r.headers["access-control-allow-methods"]


async def _drive(app: Any, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run one request through an ASGI app; `receive` hangs after the given messages."""
    sent: list[dict[str, Any]] = []
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()  # the client stopped sending
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
             "scheme": "http", "http_version": "1.1", "client": LOCAL,
             "server": ("127.0.0.1", 11435), "asgi": {"version": "3.0", "spec_version": "2.3"},
             "headers": [(b"host", b"localhost"), (b"content-type", b"application/json"),
                         (b"content-length", b"500")]}
    await asyncio.wait_for(app(scope, receive, send), 5)
    return sent


async def test_a_stalled_body_gets_408_before_the_app_sees_it() -> None:
    app = create_app(RouterSettings(body_timeout_s=0.05), policy=parse_policy(policy_dict()))
    sent = await _drive(app, [{"type": "http.request", "body": b'{"model": "gpt',
                               "more_body": True}])
    assert sent[0]["status"] == 408
    assert orjson.loads(sent[1]["body"])["error"]["code"] == "request_timeout"
    text = app.state.service.metrics.render()[0].decode()
    assert 'router_slow_clients_total{kind="body_timeout"} 1.0' in text


async def test_body_timeout_leaves_a_complete_body_alone() -> None:
    seen: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())
        seen.append(await receive())  # after the body: the disconnect wait is not timed

    async def receive() -> dict[str, Any]:
        if not seen:
            return {"type": "http.request", "body": b"{}", "more_body": False}
        await asyncio.sleep(0.2)
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        raise AssertionError("nothing is sent")

    await BodyTimeout(inner, 0.05)({"type": "http"}, receive, send)
    assert [m["type"] for m in seen] == ["http.request", "http.disconnect"]


def test_deploy_files_allow_the_names_routers_are_reached_by() -> None:
    import yaml

    from router.api.guards import _host_allowed

    deploy = Path(__file__).resolve().parents[2] / "deploy"
    k8s = next(d for d in yaml.safe_load_all((deploy / "k8s/configmap.yaml").read_text())
               if d["metadata"]["name"] == "hybrid-router-env")["data"]
    allowed = allowed_host_set(k8s["ROUTER_ALLOWED_HOSTS"], k8s["ROUTER_HOST"])
    assert allowed is not None
    for name in ("hybrid-router", "hybrid-router.hybrid-router.svc.cluster.local", "10.1.2.3"):
        assert _host_allowed(name, allowed), name
    for path, names in (("compose.yaml", ["router"]),
                        ("compose.replicas.yaml", ["router-1", "router-2"])):
        services = yaml.safe_load((deploy / path).read_text())["services"]
        for name in names:
            env = services[name]["environment"]
            allowed = allowed_host_set(env["ROUTER_ALLOWED_HOSTS"], "0.0.0.0")
            assert allowed is not None and _host_allowed(name, allowed), (path, name)
