"""Paths and parsing helpers shared by the deployment-file tests (`test_deploy_files.py`,
`test_deploy_compose.py`, `test_deploy_k8s.py`, `test_deploy_docker.py`): where the files are,
YAML documents and Compose services, environment blocks, durations, and the pinned-image check.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

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
