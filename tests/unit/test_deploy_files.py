"""Deployment files (deploy/, /.dockerignore): parsed and checked without Docker or a cluster.

Pinned images, ports published on loopback only, health checks and probes, non-root and
read-only containers, policies that validate and point at reachable Ollama names, every
`ROUTER_*` name a real setting, nginx tuned for SSE streams, and a health-check one-liner that
really fails when /healthz does.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from router.policy.loader import load_policy, parse_policy
from router.policy.schema import Policy
from router.settings import RouterSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
AWS = DEPLOY / "aws"  # owned elsewhere (may hold CloudFormation tags safe_load cannot read)
COMPOSE = DEPLOY / "compose.yaml"
REPLICAS = DEPLOY / "compose.replicas.yaml"
NGINX = DEPLOY / "nginx" / "nginx.conf"
DOCKERFILE = DEPLOY / "Dockerfile"
YAML_FILES = sorted(p for p in DEPLOY.rglob("*.y*ml") if AWS not in p.parents)
TEXT_FILES = sorted(p for p in DEPLOY.rglob("*") if p.is_file() and AWS not in p.parents)
SETTINGS_ENV = {f"ROUTER_{n.upper()}" for n, f in RouterSettings.model_fields.items()
                if f.validation_alias is None}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
RUN_AS_UID = 10001


def docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def services(path: Path) -> dict[str, Any]:
    svc: dict[str, Any] = docs(path)[0]["services"]
    return svc


def env_of(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {k: (v if sep else None) for k, sep, v in (e.partition("=") for e in env)}
    return {k: None if v is None else str(v) for k, v in env.items()}


def k8s_objects() -> list[dict[str, Any]]:
    return [d for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"
            for d in docs(p)]


def k8s(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in k8s_objects()
            if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def router_deployment() -> dict[str, Any]:
    return k8s("Deployment", "hybrid-router")[0]


def seconds(value: str | int | float) -> float:
    """`40s`, `1m30s`, `600s`, `10m` (nginx and Compose durations) -> seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", value.strip())
    return sum(float(n) * units[u or "s"] for n, u in parts)


def assert_pinned(image: str) -> None:
    if "@sha256:" in image:
        return
    last = image.rsplit("/", 1)[-1]
    assert ":" in last, f"{image}: no tag (pin an exact version)"
    tag = last.split(":", 1)[1]
    assert tag != "latest" and re.match(r"^v?\d+\.\d+\.\d+", tag), (
        f"{image}: tag {tag!r} is not an exact version")


# ---------------------------------------------------------------------------------- all files


@pytest.mark.parametrize("path", YAML_FILES, ids=[str(p.relative_to(DEPLOY)) for p in YAML_FILES])
def test_every_yaml_parses_to_mappings(path: Path) -> None:
    parsed = docs(path)
    assert parsed and all(isinstance(d, dict) for d in parsed)


def test_expected_files_exist() -> None:
    for rel in ("Dockerfile", "README.md", "compose.yaml", "compose.replicas.yaml",
                "nginx/nginx.conf", "k8s/kustomization.yaml", "k8s/deployment.yaml",
                "k8s/service.yaml", "k8s/configmap.yaml", "k8s/secret.yaml", "k8s/pdb.yaml",
                "k8s/redis.yaml"):
        assert (DEPLOY / rel).is_file(), rel
    assert (ROOT / ".dockerignore").is_file()


def test_every_router_env_name_is_a_setting() -> None:
    used: dict[str, set[str]] = {}
    for path in [*TEXT_FILES, ROOT / ".dockerignore"]:
        for name in re.findall(r"\bROUTER_[A-Z][A-Z0-9_]*", path.read_text(encoding="utf-8")):
            used.setdefault(name, set()).add(path.name)
    assert {"ROUTER_HOST", "ROUTER_REDIS_URL", "ROUTER_POLICY_FILE"} <= set(used)
    unknown = {n: sorted(files) for n, files in used.items() if n not in SETTINGS_ENV}
    assert not unknown, f"not fields of RouterSettings: {unknown}"


def test_no_credentials_in_deploy_files() -> None:
    secret = re.compile(r"(A3T[A-Z0-9]|AKIA|ASIA)[A-Z0-9]{16}|BEGIN [A-Z ]*PRIVATE KEY")
    for path in TEXT_FILES:
        assert not secret.search(path.read_text(encoding="utf-8")), path


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


# ----------------------------------------------------------------------------------- kubernetes


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    kustom = docs(K8S / "kustomization.yaml")[0]
    listed = set(kustom["resources"])
    assert all((K8S / r).is_file() for r in listed)
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.yaml"}


def test_deployment_probes_security_and_drain() -> None:
    dep = router_deployment()
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert spec["replicas"] >= 2
    assert_pinned(c["image"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 11435}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path and ports.get(get["port"], get["port"]) == 11435
    psc, csc = pod["securityContext"], c["securityContext"]
    assert psc.get("runAsNonRoot") or csc.get("runAsNonRoot")
    assert csc.get("runAsUser", psc.get("runAsUser")) == RUN_AS_UID
    assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and c["resources"]["limits"]
    env = k8s("ConfigMap", "hybrid-router-env")[0]["data"]
    grace = float(env.get("ROUTER_GRACE_S", RouterSettings().grace_s))
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pod["terminationGracePeriodSeconds"] > grace + (float(pre_stop[-1]) if pre_stop[0] ==
                                                            "sleep" else 0)
    refs = [e.get("configMapRef") or e.get("secretRef") for e in c["envFrom"]]
    assert k8s("ConfigMap", refs[0]["name"]) and all(
        r.get("optional") or k8s("ConfigMap", r["name"]) for r in refs[1:])


def test_deployment_mounts_the_policy_configmap() -> None:
    pod = router_deployment()["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    policy_mount = next(m for m in mounts.values()
                        if m["mountPath"] == "/etc/hybrid-router/policies")
    assert "subPath" not in policy_mount, "subPath mounts never see ConfigMap updates"
    cm_name = volumes[policy_mount["name"]]["configMap"]["name"]
    policy_file = k8s("ConfigMap", "hybrid-router-env")[0]["data"]["ROUTER_POLICY_FILE"]
    key = policy_file.removeprefix("/etc/hybrid-router/policies/")
    assert key in k8s("ConfigMap", cm_name)[0]["data"]
    audit = k8s("ConfigMap", "hybrid-router-env")[0]["data"].get("ROUTER_AUDIT_LOG")
    if audit:  # a read-only root filesystem: the audit folder must be a volume
        assert any(audit.startswith(m["mountPath"] + "/") for m in mounts.values())


def test_configmap_policy_validates_and_reaches_ollama_in_cluster() -> None:
    policies = [parse_policy(yaml.safe_load(text), f"{cm['metadata']['name']}/{key}")
                for cm in k8s("ConfigMap") for key, text in cm.get("data", {}).items()
                if key.endswith((".yaml", ".yml"))]
    assert policies, "no policy in any ConfigMap"
    for policy in policies:
        local = [b for b in policy.backends.values() if b.type == "ollama"]
        assert local
        for backend in local:
            assert urlsplit(backend.base_url).hostname not in LOOPBACK, "a pod is not the GPU host"
            assert backend.gpu_memory_gb, "no NVML in the router pod: declare the card"


def test_redis_url_points_at_the_redis_service() -> None:
    url = urlsplit(k8s("ConfigMap", "hybrid-router-env")[0]["data"]["ROUTER_REDIS_URL"])
    (svc,) = k8s("Service", url.hostname)
    assert url.port in [p["port"] for p in svc["spec"]["ports"]]


def test_service_and_pdb_select_the_router_pods() -> None:
    dep = router_deployment()
    labels = dep["spec"]["template"]["metadata"]["labels"]
    (svc,) = k8s("Service", "hybrid-router")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] in ("http", 11435)
    (pdb,) = k8s("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] >= 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_every_workload_is_pinned_and_unprivileged() -> None:
    for dep in k8s("Deployment"):
        pod = dep["spec"]["template"]["spec"]
        for c in pod["containers"]:
            assert_pinned(c["image"])
            csc = c.get("securityContext", {})
            assert pod["securityContext"].get("runAsNonRoot") or csc.get("runAsNonRoot")
            assert csc.get("allowPrivilegeEscalation") is False
            assert csc.get("capabilities", {}).get("drop") == ["ALL"]
            assert c.get("readinessProbe") and c.get("livenessProbe")


def test_secret_template_holds_placeholders_only() -> None:
    (secret,) = k8s("Secret")
    values = {**secret.get("stringData", {}), **secret.get("data", {})}
    assert values and all(v == "REPLACE_ME" for v in values.values())


# ------------------------------------------------------------------------------------ Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    lines = [ln for ln in DOCKERFILE.read_text(encoding="utf-8").splitlines()
             if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            op, _, args = line.strip().partition(" ")
            out.append((op.upper(), args.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = [[]]
    for op, args in dockerfile():
        if op == "FROM":
            result.append([])
        result[-1].append((op, args))
    return result  # result[0]: global ARGs before the first FROM


def test_dockerfile_bases_pinned_and_multistage() -> None:
    glob = dict(a.split("=", 1) for op, a in stages()[0] if op == "ARG" and "=" in a)
    bases = [re.sub(r"\$\{?(\w+)\}?", lambda m: glob[m[1]], s[0][1].split()[0])
             for s in stages()[1:]]
    assert len(bases) >= 2 and len(set(bases)) == 1, bases  # venv symlinks need the same base
    assert_pinned(bases[0])
    assert re.match(r"python:3\.\d+\.\d+-slim", bases[0])
    assert any("--from=" in a for op, a in stages()[-1] if op == "COPY")


def test_dockerfile_runtime_contract() -> None:
    final = stages()[-1]
    ops: dict[str, list[str]] = {}
    for op, args in final:
        ops.setdefault(op, []).append(args)
    user = ops["USER"][-1].split(":")[0]
    assert user not in ("root", "0") and int(user) == RUN_AS_UID
    assert "11435" in ops["EXPOSE"][0].split()
    assert json.loads(ops["ENTRYPOINT"][-1]) == ["hybrid-router"]
    assert json.loads(ops["CMD"][-1]) == ["serve"]
    env = " ".join(ops["ENV"])
    for pair in ("ROUTER_HOST=0.0.0.0", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1",
                 "ROUTER_POLICY_FILE=/etc/hybrid-router/policies/default.yaml"):
        assert pair in env
    assert any(a.split()[-1] == "/etc/hybrid-router/policies/" and "policies/" in a
               for a in ops["COPY"])
    assert (ROOT / "policies" / "default.yaml").is_file()
    assert "/healthz" in ops["HEALTHCHECK"][0]
    for op, args in dockerfile():
        if op == "RUN" and "pip install" in args:
            assert "--no-cache-dir" in args
        if op in ("ENV", "ARG"):
            assert not re.search(r"(KEY|SECRET|TOKEN|PASSWORD)\w*=", args), args


def dockerignored(path: str) -> bool:
    """The last matching .dockerignore pattern decides (a `!` pattern re-includes)."""
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch(p, pattern) for p in prefixes):
            ignored = not negate
    return ignored


def test_build_context_has_what_copy_needs_and_nothing_secret() -> None:
    for op, args in dockerfile():
        if op == "COPY" and "--from=" not in args:
            for src in [a for a in args.split() if not a.startswith("--")][:-1]:
                matches = list(ROOT.glob(src.rstrip("/")))
                assert matches, f"COPY {src}: nothing in the repository"
                for m in matches:
                    assert not dockerignored(str(m.relative_to(ROOT))), f"COPY {src}: ignored"
    for private in (".venv", ".git", "tests", ".env", "deploy/k8s/secret.yaml",
                    "router/__pycache__", "benchmarks"):
        assert dockerignored(private), private
    assert not dockerignored("router/app.py") and not dockerignored("policies/default.yaml")


# --------------------------------------------------------------------------- health-check command


def healthcheck_snippets() -> list[str]:
    snippets = set()
    for op, args in dockerfile():
        if op == "HEALTHCHECK":
            snippets.add(json.loads(args.split(" CMD ", 1)[1])[-1])
    for path in (COMPOSE, REPLICAS):
        for svc in services(path).values():
            test = (svc.get("healthcheck") or {}).get("test", [])
            if test[1:3] == ["python", "-c"]:
                snippets.add(test[3])
    return sorted(snippets)


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _run(code: str, port: int) -> int:
    env = {"ROUTER_PORT": str(port), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          timeout=20).returncode


@pytest.mark.parametrize("code", healthcheck_snippets())
def test_healthcheck_command_follows_healthz(
    code: str, health_server: http.server.ThreadingHTTPServer
) -> None:
    port = health_server.server_address[1]
    _Health.status = 200
    assert _run(code, port) == 0
    _Health.status = 500
    try:
        assert _run(code, port) != 0
    finally:
        _Health.status = 200
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert _run(code, closed) != 0
