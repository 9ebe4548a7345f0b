"""The container image (deploy/Dockerfile, /.dockerignore) and its health-check command,
checked without Docker.

Pinned multi-stage bases, a non-root runtime with the router's entrypoint, port and policy,
no secrets in ENV/ARG, a build context that holds what COPY needs and nothing private, and a
health-check one-liner (Dockerfile and Compose) that really fails when /healthz does.
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
from typing import Any

import pytest

from tests.deploy.deploy_helpers import (
    COMPOSE,
    DOCKERFILE,
    REPLICAS,
    ROOT,
    RUN_AS_UID,
    assert_pinned,
    services,
)

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
