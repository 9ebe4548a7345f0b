"""The `hybrid-router` command: check, explain, keygen, audit-summary (no network)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from router.audit import AuditLog, AuditRecord
from router.cli import app

ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()


def test_check_valid_files_exit_0() -> None:
    files = [str(p) for p in sorted((ROOT / "policies").glob("*.yaml"))]
    result = runner.invoke(app, ["check", *files])
    assert result.exit_code == 0, result.output
    assert result.output.count(": ok") == len(files)


def test_check_invalid_file_exit_1_with_lines() -> None:
    bad = ROOT / "tests/fixtures/policies/invalid/unknown-backend.yaml"
    result = runner.invoke(app, ["check", str(bad)])
    assert result.exit_code == 1
    assert "routes[1].targets[0]: unknown backend 'bedrok' (known: bedrock, local)" in (
        result.output)


def test_explain_prints_candidates_and_sends_nothing(tmp_path: Path) -> None:
    policy = (ROOT / "policies/default.yaml").read_text().replace(
        "# gpu_memory_gb: 24", "gpu_memory_gb: 24")
    (tmp_path / "p.yaml").write_text(policy)
    result = runner.invoke(app, ["explain", "--model", "gpt-oss:120b", "--json",
                                 "--policy", str(tmp_path / "p.yaml")])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["model"] == "gpt-oss-120b"
    assert plan["candidates"][0]["backend"] == "bedrock"
    assert {"backend": "local", "reason": "vram_insufficient"} in plan["excluded"]


def test_explain_private_long_prompt_would_fail() -> None:
    result = runner.invoke(app, ["explain", "--privacy", "private", "--prompt-tokens", "50000",
                                 "--json"])
    plan = json.loads(result.output)
    assert plan["privacy"] == "private"
    assert plan["error"]["code"] == "context_length_exceeded"


def test_explain_table_output() -> None:
    result = runner.invoke(app, ["explain", "--model", "gpt-oss-20b",
                                 "--policy", str(ROOT / "policies/hybrid-prod.yaml")])
    assert result.exit_code == 0, result.output
    assert "gpu-a" in result.output and "local" in result.output


def test_keygen_prints_key_and_matching_hash() -> None:
    result = runner.invoke(app, ["keygen", "team-a"])
    assert result.exit_code == 0
    key = result.output.split("): ", 1)[1].split()[0]
    assert hashlib.sha256(key.encode()).hexdigest() in result.output
    assert "name: team-a" in result.output


def test_audit_summary_flags_private_on_cloud(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    for backend in ("local", "bedrock"):
        log.write(AuditRecord(request_id=f"r-{backend}", key=None, privacy="private",
                              model="gpt-oss-20b", backend=backend, outcome="ok", status=200,
                              latency_ms=1.0))
    log.close()
    result = runner.invoke(app, ["audit-summary", str(path)])
    summary = json.loads(result.output)
    assert summary["private_on_non_local"] == 1
    assert result.exit_code == 1  # a violation makes the command fail


CLOUD_POLICY = """
models:
  gpt-oss-20b: {vram_gb: 14}
  gpt-oss-120b: {vram_gb: 65}
backends:
  local: {type: ollama, gpu_memory_gb: 80,
          models: {gpt-oss-20b: "gpt-oss:20b", gpt-oss-120b: "gpt-oss:120b-cloud"}}
  bedrock: {type: bedrock, models: {gpt-oss-120b: "openai.gpt-oss-120b-1:0"}}
routes:
  - {name: private, match: {privacy: private}, targets: [local]}
  - {name: default, targets: [local, bedrock]}
"""


def test_check_warns_about_an_ollama_cloud_model(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(CLOUD_POLICY)
    result = runner.invoke(app, ["check", str(tmp_path / "p.yaml")])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "warning: backends.local.models.gpt-oss-120b: 'gpt-oss:120b-cloud' is one of " \
           "Ollama's cloud models" in out
    assert "never sent to it" in out
    assert "routes[0].targets[0]: route 'private' matches private requests" in out


def test_explain_says_why_an_ollama_cloud_model_is_excluded(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(CLOUD_POLICY)
    result = runner.invoke(app, ["explain", "--model", "gpt-oss-120b", "--privacy", "private",
                                 "--json", "--policy", str(tmp_path / "p.yaml")])
    plan = json.loads(result.output)
    assert plan["excluded"] == [{"backend": "local", "reason": "ollama_cloud_model"}]
    assert plan["error"]["code"] == "no_local_capacity"
    assert any("ollama.com" in n and "never serves private" in n for n in plan["notes"])
    table = runner.invoke(app, ["explain", "--model", "gpt-oss-120b", "--privacy", "private",
                                "--policy", str(tmp_path / "p.yaml")])
    assert "ollama_cloud_model" in table.output and "note:" in table.output


def test_check_default_policies_have_no_cloud_warnings() -> None:
    files = [str(p) for p in sorted((ROOT / "policies").glob("*.yaml"))]
    result = runner.invoke(app, ["check", *files])
    assert "warning" not in result.output


@pytest.mark.parametrize("missing", ["openai", "router_demo", "router_simulators"])
def test_demo_without_its_extra_names_it_in_one_line(missing: str) -> None:
    """A production install (no `demo` extra): `hybrid-router demo` says what to install."""
    code = (f"import sys; sys.modules[{missing!r}] = None; sys.argv = ['hybrid-router', 'demo']; "
            "from router.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == "the demo needs the 'demo' extra: pip install 'hybrid-router[demo]'\n"
    assert proc.stdout == ""
