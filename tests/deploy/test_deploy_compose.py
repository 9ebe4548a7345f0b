"""Compose deployment files (deploy/compose.yaml, deploy/compose.replicas.yaml) and the nginx
load balancer in front of the replicas: parsed and checked without Docker.

Pinned images, ports published on loopback only, health checks, policies that validate and
point at reachable Ollama names, drain times above the router's grace, replicas sharing one
Redis and one policy, and nginx tuned for SSE streams.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from router.policy.loader import load_policy
from router.policy.schema import Policy
from router.settings import RouterSettings
from tests.deploy.deploy_helpers import (
    COMPOSE,
    DEPLOY,
    DOCKERFILE,
    LOOPBACK,
    NGINX,
    REPLICAS,
    assert_pinned,
    env_of,
    seconds,
    services,
)

# ------------------------------------------------------------------------------------ compose


def test_compose_services() -> None:
    assert {"ollama", "router"} <= set(services(COMPOSE))
    assert {"ollama", "redis", "router-1", "router-2", "lb"} <= set(services(REPLICAS))


@pytest.mark.parametrize("path", [COMPOSE, REPLICAS], ids=["compose", "replicas"])
def test_compose_images_pinned_and_healthchecked(path: Path) -> None:
    for name, svc in services(path).items():
        assert "image" in svc, f"{name}: no image (tag what `build` makes, too)"
        assert_pinned(svc["image"])
        test = (svc.get("healthcheck") or {}).get("test")
        assert test and test != ["NONE"] and not svc["healthcheck"].get("disable"), name
        if "build" in svc:
            build = svc["build"]
            assert (path.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
            assert any("/healthz" in part for part in test), name


@pytest.mark.parametrize("path", [COMPOSE, REPLICAS], ids=["compose", "replicas"])
def test_compose_publishes_on_loopback_only(path: Path) -> None:
    published: dict[str, list[int]] = {}
    for name, svc in services(path).items():
        for port in svc.get("ports", []):
            if isinstance(port, dict):
                host_ip, target = port.get("host_ip"), int(port["target"])
            else:
                parts = str(port).rsplit(":", 2)
                assert len(parts) == 3, f"{name}: {port!r} publishes on every interface"
                host_ip, target = parts[0], int(parts[2].split("/")[0])
            assert host_ip in LOOPBACK, f"{name}: {port!r} is not bound to loopback"
            published.setdefault(name, []).append(target)
    expected = {"router": [11435]} if path == COMPOSE else {"lb": [11435]}
    assert published == expected


def _policy_for(path: Path, svc: dict[str, Any]) -> Policy:
    """The policy file a Compose router service reads: ROUTER_POLICY_FILE in a mounted folder."""
    target = env_of(svc)["ROUTER_POLICY_FILE"]
    assert target
    for volume in svc.get("volumes", []):
        source, _, rest = str(volume).partition(":")
        mount = rest.split(":")[0]
        if source.startswith(".") and target.startswith(mount.rstrip("/") + "/"):
            return load_policy(path.parent / source / target[len(mount):].lstrip("/"))
    raise AssertionError(f"{target} is not in a folder mounted from the repository")


@pytest.mark.parametrize("path", [COMPOSE, REPLICAS], ids=["compose", "replicas"])
def test_compose_routers_reach_ollama_and_drain(path: Path) -> None:
    svcs = services(path)
    ollama_env = env_of(svcs["ollama"])
    routers = {n: s for n, s in svcs.items() if "build" in s}
    assert routers
    for name, svc in routers.items():
        env = env_of(svc)
        policy = _policy_for(path, svc)
        local = [b for b in policy.backends.values() if b.type == "ollama"]
        assert local
        for backend in local:
            assert urlsplit(backend.base_url).hostname in svcs, f"{name}: {backend.base_url}"
            assert backend.parallel == int(ollama_env["OLLAMA_NUM_PARALLEL"] or 0)
            assert backend.num_ctx == int(ollama_env["OLLAMA_CONTEXT_LENGTH"] or 0)
            assert backend.keep_alive == ollama_env["OLLAMA_KEEP_ALIVE"]
            assert backend.gpu_memory_gb, "no NVML in the router container: declare the card"
        assert urlsplit(env["OLLAMA_HOST"] or "").hostname == "ollama"
        grace = float(env.get("ROUTER_GRACE_S") or RouterSettings().grace_s)
        assert seconds(svc["stop_grace_period"]) > grace, name
        for key, value in env.items():
            if re.search(r"KEY|SECRET|TOKEN|PASSWORD", key):
                assert value is None or value.startswith("${"), f"{name}: {key} written inline"


@pytest.mark.parametrize("path", [COMPOSE, REPLICAS], ids=["compose", "replicas"])
def test_compose_ollama_on_gpu(path: Path) -> None:
    ollama = services(path)["ollama"]
    devices = ollama["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert any(str(v).endswith(":/root/.ollama") for v in ollama["volumes"])
    assert {"OLLAMA_NUM_PARALLEL", "OLLAMA_KEEP_ALIVE"} <= set(env_of(ollama))
    assert "ports" not in ollama, "only the router talks to Ollama"


def test_replicas_share_redis_and_policy() -> None:
    svcs = services(REPLICAS)
    envs = [env_of(svcs[n]) for n in ("router-1", "router-2")]
    for env in envs:
        url = urlsplit(env["ROUTER_REDIS_URL"] or "")
        assert url.scheme == "redis" and url.hostname == "redis" and url.port == 6379
    assert envs[0]["ROUTER_POLICY_FILE"] == envs[1]["ROUTER_POLICY_FILE"]
    assert svcs["router-1"]["volumes"][0] == svcs["router-2"]["volumes"][0]
    assert svcs["lb"]["image"].startswith("nginx:")
    assert any(str(v).startswith("./nginx/nginx.conf:") for v in svcs["lb"]["volumes"])


# -------------------------------------------------------------------------------------- nginx


def nginx_directives() -> list[tuple[str, list[str]]]:
    text = re.sub(r"(^|\s)#[^\n]*", r"\1", NGINX.read_text(encoding="utf-8"))
    return [(m[1], m[2].split()) for m in re.finditer(r"(?m)^\s*(\w+)\s+([^;{}]*?)\s*;", text)]


def nginx_size(value: str) -> int:
    scale = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    return int(value[:-1]) * scale[value[-1].lower()] if value[-1].isalpha() else int(value)


def test_nginx_is_tuned_for_streams_and_the_router() -> None:
    d: dict[str, list[list[str]]] = {}
    for name, args in nginx_directives():
        d.setdefault(name, []).append(args)
    assert d["proxy_buffering"] == [["off"]]
    assert d["proxy_http_version"] == [["1.1"]]
    policies = [load_policy(f) for f in (DEPLOY / "policies").glob("*.yaml")]
    longest = max([300.0, *(p.deadline_s for p in policies)])
    assert seconds(d["proxy_read_timeout"][0][0]) >= longest
    assert nginx_size(d["client_max_body_size"][0][0]) == RouterSettings().max_body_bytes
    headers = {a[0].lower(): a[1:] for a in d["proxy_set_header"]}
    assert "x-request-id" in headers and headers["connection"] == ['""']
    upstream = {a[0] for a in d["server"]}
    assert upstream == {f"{n}:11435" for n in services(REPLICAS) if n.startswith("router-")}
    assert d["listen"] == [["11435"]]
