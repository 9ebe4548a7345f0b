"""Policy loading: every shipped example is valid; every invalid fixture fails with exactly the
expected lines (file, path inside it, problem, valid choices)."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.policy.loader import PolicyError, default_policy, load_policy
from router.policy.schema import normalise_model_name

ROOT = Path(__file__).resolve().parents[4]
INVALID = ROOT / "tests" / "fixtures" / "policies" / "invalid"
EXAMPLES = sorted((ROOT / "policies").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_shipped_policies_are_valid(path: Path) -> None:
    policy = load_policy(path)
    assert policy.routes and policy.backends


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 4


CASES = sorted(INVALID.glob("*.yaml"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_invalid_policy_messages(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(INVALID)
    with pytest.raises(PolicyError) as info:
        load_policy(path.name)
    expected = path.with_suffix(".expected").read_text().strip().splitlines()
    assert info.value.lines == expected


def test_missing_file() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy("/nonexistent/policy.yaml")
    assert info.value.lines[0].startswith("/nonexistent/policy.yaml: cannot read")


def test_default_policy_serves_both_models_locally_with_bedrock_fallback() -> None:
    p = default_policy("localhost:9999", "eu-central-1")
    assert p.backends["local"].base_url == "http://localhost:9999"  # type: ignore[union-attr]
    assert p.backends["bedrock"].region == "eu-central-1"  # type: ignore[union-attr]
    assert set(p.backends["local"].models) == {"gpt-oss-20b", "gpt-oss-120b"}


@pytest.mark.parametrize("name", ["gpt-oss-20b", "gpt-oss:20b", "openai/gpt-oss-20b",
                                  "openai.gpt-oss-20b-1:0", "GPT-OSS-20B"])
def test_aliases_normalise(name: str) -> None:
    assert normalise_model_name(name) == "gpt-oss-20b"
    assert default_policy().alias_table()[normalise_model_name(name)] == ("gpt-oss-20b", False)
