"""Deployment files (deploy/, /.dockerignore) as a whole: parsed and checked without Docker or a
cluster. Every YAML file parses, the expected files exist, every `ROUTER_*` name is a real
setting, and no credential is written in any of them.

The per-target checks are in `test_deploy_compose.py` (Compose and nginx), `test_deploy_k8s.py`
(Kubernetes manifests) and `test_deploy_docker.py` (Dockerfile, .dockerignore, health-check
command); shared paths and helpers in `deploy_helpers.py`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.deploy_helpers import DEPLOY, ROOT, SETTINGS_ENV, TEXT_FILES, YAML_FILES, docs

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
