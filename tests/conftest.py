"""Shared fixtures: simulators on loopback ports and the real router as a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from router_simulators.bedrock import BedrockSimConfig
from router_simulators.bedrock import create_app as bedrock_app
from router_simulators.ollama import OllamaSimConfig
from router_simulators.ollama import create_app as ollama_app
from router_simulators.sagemaker import SageMakerSimConfig
from router_simulators.sagemaker import create_app as sagemaker_app
from router_simulators.server import SimServer, free_port

# pytest-xdist's workers start with COLUMNS=80 and LINES=24 in their environment (a serial run
# has neither): the CLI's module-level rich Console would fix its width at 80 when a test module
# imports it, and the tests that give one command COLUMNS=200 would render truncated columns.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("COLUMNS", "LINES"):
        os.environ.pop(_var, None)

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-west-2", "AWS_EC2_METADATA_DISABLED": "true"}


# Under pytest-xdist (`-n 2 --dist loadgroup`, scripts/test.sh) a test module runs whole on one
# worker (its module fixtures start once), and the fault suite's modules run together on one
# worker, in their usual order: they share their router stacks (tests/e2e/conftest.py) and
# `test_suite_invariants` (test_outage.py) checks what all of them did.
FAULT_SUITE_MODULES = frozenset({
    "test_fault_streams.py", "test_fault_suite.py", "test_faults.py", "test_lifecycle.py",
    "test_outage.py", "test_stream_audit.py"})


def xdist_group_of(item: pytest.Item) -> str:
    path = item.path
    if path.parent.name == "e2e" and path.name in FAULT_SUITE_MODULES:
        return "e2e-fault-suite"
    return str(path)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(xdist_group_of(item)))


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)


@pytest.fixture(scope="session")
def ollama_sim() -> Iterator[SimServer]:
    with SimServer(lambda: ollama_app(OllamaSimConfig(parallel=4, token_delay_s=0.0))) as s:
        yield s


@pytest.fixture(scope="session")
def bedrock_sim() -> Iterator[SimServer]:
    with SimServer(lambda: bedrock_app(BedrockSimConfig())) as s:
        yield s


@pytest.fixture(scope="session")
def sagemaker_sim() -> Iterator[SimServer]:
    with SimServer(lambda: sagemaker_app(SageMakerSimConfig())) as s:
        yield s


def sim_post(sim: SimServer, path: str, body: dict[str, Any] | None = None) -> Any:
    r = httpx.post(sim.url + path, json=body or {}, timeout=5)
    return r.json() if r.content else None


def sim_get(sim: SimServer, path: str) -> Any:
    return httpx.get(sim.url + path, timeout=5).json()


def base_policy(ollama_url: str, bedrock_url: str | None = None,
                sagemaker_url: str | None = None, **over: Any) -> dict[str, Any]:
    backends: dict[str, Any] = {
        "local": {"type": "ollama", "base_url": ollama_url, "parallel": 4,
                  "gpu_memory_gb": 24, "probe_interval_s": 0.2,
                  "models": {"gpt-oss-20b": "gpt-oss:20b", "gpt-oss-120b": "gpt-oss:120b"}},
    }
    targets = ["local"]
    if bedrock_url:
        backends["bedrock"] = {"type": "bedrock", "endpoint_url": bedrock_url,
                               "context_window": 128000,
                               "models": {"gpt-oss-20b": "openai.gpt-oss-20b-1:0",
                                          "gpt-oss-120b": "openai.gpt-oss-120b-1:0"}}
        targets.append("bedrock")
    if sagemaker_url:
        backends["sagemaker"] = {"type": "sagemaker", "endpoint_url": sagemaker_url,
                                 "endpoint_name": "gpt-oss-20b-endpoint",
                                 "context_window": 128000,
                                 "models": {"gpt-oss-20b": "gpt-oss-20b"}}
    policy: dict[str, Any] = {
        "models": {"gpt-oss-20b": {"vram_gb": 14}, "gpt-oss-120b": {"vram_gb": 65}},
        "backends": backends,
        "routes": [{"name": "private", "match": {"privacy": "private"}, "targets": ["local"],
                    "max_queue_wait_s": 5},
                   {"name": "default", "targets": targets, "max_queue_wait_s": 2}],
        "retry": {"attempts": 2, "initial_s": 0.01, "max_s": 0.05},
        "circuit": {"failure_threshold": 3, "local_open_for_s": 0.5},
    }
    policy.update(over)
    return policy


class RouterProcess:
    """`hybrid-router serve` in a child process on a free loopback port."""

    def __init__(self, policy: dict[str, Any], tmp: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.policy_path = tmp / f"policy-{self.port}.yaml"
        self.policy_path.write_text(yaml.safe_dump(policy))
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, **AWS_ENV, "ROUTER_LOG_LEVEL": "warning", **(env or {})}
        self.log = tmp / f"router-{self.port}.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router.cli", "serve", "--policy", str(self.policy_path),
             "--port", str(self.port)],
            env=full_env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("router exited: " + self.log.read_text())
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("router did not start: " + self.log.read_text())
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_router(tmp_path: Path) -> Iterator[Callable[..., RouterProcess]]:
    procs: list[RouterProcess] = []

    def start(policy: dict[str, Any], env: dict[str, str] | None = None) -> RouterProcess:
        p = RouterProcess(policy, tmp_path, env)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("router")
