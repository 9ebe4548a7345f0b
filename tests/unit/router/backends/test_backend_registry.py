"""The backend registry: type name -> config model + factory, the policy's backend types taken
from it, local capacity as a capability, and a type registered from a test module only."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

from router.backends.capacity import GB, LocalCapacity
from router.backends.configs import BedrockConfig, OllamaConfig
from router.backends.registry import (
    UnknownBackendType,
    backend_types,
    build_backend,
    register_backend,
)
from router.planner import PlannerState, RequestFacts, plan
from router.policy.loader import PolicyError, parse_policy
from router.runtime import Runtime
from router.state.memory import MemoryStore
from tests import compat_backend


def policy_data(backend: dict[str, Any]) -> dict[str, Any]:
    return {"models": {"gpt-oss-20b": {"vram_gb": 14}},
            "backends": {"box": backend},
            "routes": [{"name": "all", "targets": ["box"]}]}


COMPAT = {"type": "openai_compat", "base_url": "http://127.0.0.1:1", "parallel": 3,
          "models": {"gpt-oss-20b": "gpt-oss:20b"}}


def test_builtin_types_are_registered_in_order() -> None:
    assert backend_types()[:3] == ("ollama", "bedrock", "sagemaker")


def test_unknown_type_lists_the_registered_ones() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(policy_data(COMPAT), "p.yaml")
    assert info.value.lines == ["p.yaml: backends.box.type: unknown backend type 'openai_compat' "
                                "(known: 'ollama', 'bedrock', 'sagemaker')"]
    with compat_backend.registered(), pytest.raises(PolicyError) as info:
        parse_policy(policy_data({**COMPAT, "type": "nope"}), "p.yaml")
    assert info.value.lines == ["p.yaml: backends.box.type: unknown backend type 'nope' (known: "
                                "'ollama', 'bedrock', 'sagemaker', 'openai_compat')"]


def test_missing_type_and_a_non_mapping_entry() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(policy_data({"models": {}}), "p.yaml")
    assert info.value.lines == ["p.yaml: backends.box.type: missing backend type (known: "
                                "'ollama', 'bedrock', 'sagemaker')"]
    with pytest.raises(PolicyError) as info:
        parse_policy(policy_data(5), "p.yaml")  # type: ignore[arg-type]
    assert info.value.lines[0].startswith("p.yaml: backends.box: must be a mapping")


def test_a_registered_type_parses_with_its_own_keys_and_errors() -> None:
    with compat_backend.registered():
        policy = parse_policy(policy_data(COMPAT))
        cfg = policy.backends["box"]
        assert isinstance(cfg, compat_backend.CompatConfig) and cfg.parallel == 3
        with pytest.raises(PolicyError) as info:
            parse_policy(policy_data({**COMPAT, "paralel": 2}), "p.yaml")
    assert info.value.lines[0].startswith("p.yaml: backends.box.paralel: unknown key 'paralel' "
                                          "(allowed: base_url, context_window, ")


def test_runtime_builds_a_registered_type_and_the_planner_plans_it_as_local() -> None:
    with compat_backend.registered():
        policy = parse_policy(policy_data(COMPAT))
        runtime = Runtime(policy, MemoryStore(), clock=time.monotonic)
    backend = runtime.backends["box"]
    assert isinstance(backend, compat_backend.CompatBackend) and backend.local
    assert runtime.prober.intervals == {"box": 5.0}
    p = plan(RequestFacts(model="gpt-oss-20b", privacy="private", prompt_tokens=10), policy,
             PlannerState())
    assert [(c.backend, c.local, c.slots, c.reason.render()) for c in p.candidates] == [
        ("box", True, 3, "private_local_only")]


def test_build_backend_refuses_an_unregistered_type() -> None:
    with compat_backend.registered():
        cfg = compat_backend.CompatConfig.model_validate(COMPAT)
    with pytest.raises(UnknownBackendType, match="unknown backend type 'openai_compat'"):
        build_backend("box", cfg)


def test_registration_checks() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_backend("ollama", OllamaConfig, lambda n, c: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="must default to 'other'"):
        register_backend("other", BedrockConfig, lambda n, c: None)  # type: ignore[arg-type,return-value]


def test_local_capacity_is_the_one_local_capability() -> None:
    cfg = OllamaConfig(models={}, parallel=2, num_ctx=4096, gpu_memory_gb=24,
                       probe_interval_s=1.5)
    assert cfg.local_capacity() == LocalCapacity(slots=2, probe_interval_s=1.5, num_ctx=4096,
                                                 gpu_memory_bytes=24 * GB)
    assert BedrockConfig(models={}).local_capacity() is None
    assert cfg.remote_model_reason("gpt-oss:120b-cloud", None) is not None
    assert BedrockConfig(models={}).remote_model_reason("gpt-oss:120b-cloud", None) is None


def test_a_local_type_without_capacity_is_refused() -> None:
    class Broken(compat_backend.CompatConfig):
        def local_capacity(self) -> Any:
            return None

    with pytest.raises(ValueError, match="is local but has no local_capacity"):
        Broken.model_validate(COMPAT)


def test_parsing_a_policy_imports_no_vendor_module() -> None:
    code = ("import sys; from router.policy.loader import default_policy; default_policy(); "
            "bad = [m for m in ('router.backends.ollama', 'router.backends.bedrock', "
            "'router.backends.sagemaker', 'boto3', 'aiohttp') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
