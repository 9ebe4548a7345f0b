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


# -- serve --workers N (several processes on one port; the state must be shared) --------------

def test_serve_workers_without_redis_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import router.server

    monkeypatch.delenv("ROUTER_REDIS_URL", raising=False)
    started: list[object] = []
    monkeypatch.setattr(router.server, "run_workers", started.append)
    result = runner.invoke(app, ["serve", "--workers", "2", "--port", "0"])
    assert result.exit_code == 2, result.output
    assert "--workers 2 needs shared state: set ROUTER_REDIS_URL" in result.output
    assert started == []


def test_serve_workers_setting_without_redis_refuses_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUTER_REDIS_URL", raising=False)
    monkeypatch.setenv("ROUTER_WORKERS", "3")
    result = runner.invoke(app, ["serve", "--port", "0"])
    assert result.exit_code == 2, result.output
    assert "--workers 3 needs shared state" in result.output


@pytest.mark.parametrize("n", ["0", "65"])
def test_serve_workers_out_of_range_is_a_usage_error(n: str) -> None:
    result = runner.invoke(app, ["serve", "--workers", n])
    assert result.exit_code == 2


def test_serve_workers_with_redis_runs_the_workers(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    import router.server
    from router.settings import RouterSettings

    monkeypatch.setenv("ROUTER_REDIS_URL", "redis://127.0.0.1:6379/0")
    policy = tmp_path / "p.yaml"
    policy.write_text((ROOT / "policies/default.yaml").read_text())
    seen: list[RouterSettings] = []

    def fake_run_workers(settings: RouterSettings) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(router.server, "run_workers", fake_run_workers)
    result = runner.invoke(app, ["serve", "--workers", "2", "--port", "0",
                                 "--policy", str(policy)])
    assert result.exit_code == 0, result.output
    assert [(s.workers, s.redis_url, s.policy_file) for s in seen] == [
        (2, "redis://127.0.0.1:6379/0", str(policy))]


def test_serve_workers_checks_the_policy_before_starting_any(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import router.server

    monkeypatch.setenv("ROUTER_REDIS_URL", "redis://127.0.0.1:6379/0")
    started: list[object] = []
    monkeypatch.setattr(router.server, "run_workers", started.append)
    bad = ROOT / "tests/fixtures/policies/invalid/unknown-backend.yaml"
    result = runner.invoke(app, ["serve", "--workers", "2", "--policy", str(bad)])
    assert result.exit_code == 1
    assert "unknown backend 'bedrok'" in result.output
    assert started == []


def test_worker_settings_give_each_worker_its_own_replica_id() -> None:
    from router.server import worker_settings, workers_problem
    from router.settings import RouterSettings

    base = RouterSettings(workers=2, redis_url="redis://x:6379/0", replica_id="gpu-host")
    assert workers_problem(base) is None
    assert workers_problem(RouterSettings(workers=1, redis_url=None)) is None
    w = [worker_settings(base, i) for i in range(2)]
    assert [(s.workers, s.replica_id, s.redis_url) for s in w] == [
        (1, "gpu-host/w0", "redis://x:6379/0"), (1, "gpu-host/w1", "redis://x:6379/0")]
    # No replica id given: each worker's default (hostname:pid) already differs.
    assert worker_settings(RouterSettings(workers=2, replica_id=None), 0).replica_id is None
