"""The `hybrid-router` command: check, explain, keygen, audit-summary (no network)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from typer.testing import CliRunner

from router.audit import AuditLog, AuditRecord
from router.cli import app

ROOT = Path(__file__).resolve().parents[2]
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
