"""deploy/aws: the IAM policy grants exactly what the router needs; the deploy script's CLI.

The script is never allowed to reach AWS here: the SageMaker SDK is either blocked
(`sys.modules["sagemaker"] = None`) or replaced by a recording fake.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
AWS_DIR = ROOT / "deploy" / "aws"
SCRIPT = AWS_DIR / "deploy_sagemaker.py"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
SDK_MODULES = ("sagemaker", "sagemaker.serve", "sagemaker.core", "sagemaker.core.jumpstart",
               "sagemaker.core.jumpstart.configs", "sagemaker.core.training",
               "sagemaker.core.training.configs")


def load_script() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_sagemaker_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def script() -> types.ModuleType:
    return load_script()


@pytest.fixture
def no_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any import of the SDK fails, whether or not it is installed."""
    for name in SDK_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]


# --- IAM policy --------------------------------------------------------------------------------


def test_policy_grants_exactly_the_router_actions() -> None:
    policy = json.loads((AWS_DIR / "iam-policy.json").read_text())
    assert policy["Version"] == "2012-10-17"
    grants: dict[str, set[str]] = {}
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        assert set(st) <= {"Sid", "Effect", "Action", "Resource"}  # no NotAction / wildcards
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        for action in actions:
            assert "*" not in action
            grants.setdefault(action, set()).update(resources)
    models = {"arn:aws:bedrock:*::foundation-model/openai.gpt-oss-20b-1:0",
              "arn:aws:bedrock:*::foundation-model/openai.gpt-oss-120b-1:0"}
    endpoint = {"arn:aws:sagemaker:REGION:ACCOUNT:endpoint/ENDPOINT_NAME"}
    assert grants == {
        "bedrock:InvokeModel": models,
        "bedrock:InvokeModelWithResponseStream": models,
        "sagemaker:InvokeEndpoint": endpoint,
        "sagemaker:InvokeEndpointWithResponseStream": endpoint,
        "sagemaker:DescribeEndpoint": endpoint,
    }


def test_readme_documents_the_placeholders() -> None:
    readme = (AWS_DIR / "README.md").read_text()
    for word in ("REGION", "ACCOUNT", "ENDPOINT_NAME", "--dry-run", "hybrid-router[deploy]"):
        assert word in readme


# --- argument parsing ----------------------------------------------------------------------------


def test_defaults(script: types.ModuleType) -> None:
    args = script.parse_args(["--dry-run"])
    assert (args.endpoint_name, args.instance_type, args.region, args.model_id) == (
        "gpt-oss-20b-endpoint", "ml.g6e.xlarge", "us-west-2", "openai-reasoning-gpt-oss-20b")
    assert args.accept_eula is False and args.role_arn is None


def test_all_arguments(script: types.ModuleType) -> None:
    args = script.parse_args(["--endpoint-name", "my-ep", "--instance-type", "ml.g5.12xlarge",
                              "--role-arn", ROLE, "--region", "eu-west-1", "--accept-eula"])
    assert (args.endpoint_name, args.instance_type, args.role_arn, args.region) == (
        "my-ep", "ml.g5.12xlarge", ROLE, "eu-west-1")
    assert args.accept_eula is True and args.dry_run is False


@pytest.mark.parametrize("argv", [
    [],  # a real deploy without --role-arn
    ["--dry-run", "--endpoint-name", "bad_name!"],
    ["--dry-run", "--endpoint-name", "-leading-hyphen"],
    ["--dry-run", "--instance-type", "g6e.xlarge"],
    ["--dry-run", "--role-arn", "not-an-arn"],
    ["--dry-run", "--unknown-flag"],
])
def test_bad_arguments_exit_2(script: types.ModuleType, argv: list[str],
                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        script.parse_args(argv)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


# --- dry run and the deploy path ---------------------------------------------------------------


def test_dry_run_prints_the_plan_without_the_sdk(
    script: types.ModuleType, no_sdk: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert script.main(["--dry-run", "--role-arn", ROLE, "--accept-eula",
                        "--endpoint-name", "gpt-oss-test"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["jumpstart_model_id"] == "openai-reasoning-gpt-oss-20b"
    assert out["endpoint_name"] == "gpt-oss-test" and out["instance_type"] == "ml.g6e.xlarge"
    assert out["role_arn"] == ROLE and out["accept_eula"] is True
    backend = out["router_backend"]
    assert backend["type"] == "sagemaker" and backend["endpoint_name"] == "gpt-oss-test"


def test_dry_run_as_a_subprocess() -> None:
    proc = subprocess.run(
        [sys.executable, "-c",
         "import sys, runpy; sys.modules['sagemaker'] = None; "
         f"sys.argv = ['deploy_sagemaker.py', '--dry-run']; "
         f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"],
        capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["action"] == "deploy"


def test_missing_sdk_exits_2_with_install_hint(
    script: types.ModuleType, no_sdk: None, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    assert script.main(["--role-arn", ROLE]) == 2
    captured = capsys.readouterr()
    assert "pip install 'hybrid-router[deploy]'" in captured.err and captured.out == ""


def test_deploy_drives_model_builder(
    script: types.ModuleType, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str, Any]] = []

    class FakeBuilder:
        @classmethod
        def from_jumpstart_config(cls, **kw: Any) -> FakeBuilder:
            calls.append(("from_jumpstart_config", kw))
            return cls()

        def build(self, **kw: Any) -> None:
            calls.append(("build", kw))

        def deploy(self, **kw: Any) -> Any:
            calls.append(("deploy", kw))
            return types.SimpleNamespace(endpoint_name=kw["endpoint_name"])

    def config_cls(name: str) -> type:
        return type(name, (), {"__init__": lambda self, **kw: self.__dict__.update(kw)})

    fakes = {name: types.ModuleType(name) for name in SDK_MODULES}
    fakes["sagemaker.serve"].ModelBuilder = FakeBuilder  # type: ignore[attr-defined]
    fakes["sagemaker.core.jumpstart.configs"].JumpStartConfig = config_cls("JumpStartConfig")  # type: ignore[attr-defined]
    fakes["sagemaker.core.training.configs"].Compute = config_cls("Compute")  # type: ignore[attr-defined]
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")

    assert script.main(["--role-arn", ROLE, "--region", "eu-central-1", "--accept-eula",
                        "--endpoint-name", "gpt-oss-x"]) == 0
    (_, kw), (_, build_kw), (_, deploy_kw) = calls
    assert kw["jumpstart_config"].model_id == "openai-reasoning-gpt-oss-20b"
    assert kw["jumpstart_config"].accept_eula is True
    assert kw["compute"].instance_type == "ml.g6e.xlarge" and kw["role_arn"] == ROLE
    assert build_kw == {"model_name": "gpt-oss-x-model"}
    assert deploy_kw == {"endpoint_name": "gpt-oss-x"}
    assert json.loads(capsys.readouterr().out)["deployed"] == "gpt-oss-x"
    assert os.environ["AWS_DEFAULT_REGION"] == "eu-central-1"
