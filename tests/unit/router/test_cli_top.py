"""`hybrid-router top`: the dashboard's figures rendered by rich from a running router's
`/ui/events` (`--once`, no tty); and `hybrid-router demo --hold`, which prints the dashboard's
URL and keeps the router up for `top` or a browser to look at."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from typing import Any

import httpx
from typer.testing import CliRunner

from router.cli import app
from router_simulators.server import SimServer
from tests.conftest import AWS_ENV, base_policy

runner = CliRunner()


def test_top_once_renders_backends_and_decisions(
        ollama_sim: SimServer, bedrock_sim: SimServer, start_router: Any) -> None:
    router = start_router(base_policy(ollama_sim.url, bedrock_sim.url))
    r = httpx.post(router.url + "/v1/chat/completions", timeout=15, headers={
        "x-privacy": "private"}, json={"model": "gpt-oss-20b",
                                       "messages": [{"role": "user", "content": "top test"}]})
    assert r.status_code == 200
    result = runner.invoke(app, ["top", "--url", router.url, "--once"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "ready" in out and "total 1" in out and "private kept local 1" in out
    assert "local (local)" in out and "bedrock (cloud)" in out
    assert re.search(r"openai .*gpt-oss-20b .*private .*local .*" + r.headers["x-router-reason"],
                     out), out
    assert "top test" not in out


def test_top_needs_an_ops_key_when_keys_are_configured(
        ollama_sim: SimServer, start_router: Any) -> None:
    keys = [{"name": "ops", "sha256": hashlib.sha256(b"sk-ops").hexdigest(), "ops": True}]
    router = start_router(base_policy(ollama_sim.url, keys=keys))
    result = runner.invoke(app, ["top", "--url", router.url, "--once"])
    assert result.exit_code == 1 and "HTTP 401" in result.output
    result = runner.invoke(app, ["top", "--url", router.url, "--once", "--api-key", "sk-ops"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "local (local)" in result.output, result.output


def test_top_says_when_nothing_answers() -> None:
    from router_simulators.server import free_port

    result = runner.invoke(app, ["top", "--url", f"http://127.0.0.1:{free_port()}", "--once"])
    assert result.exit_code == 1 and "127.0.0.1" in result.output


def test_demo_hold_prints_the_dashboard_and_keeps_the_router_up() -> None:
    env = {**os.environ, **AWS_ENV, "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "router.cli", "demo", "--fast", "--hold", "--hold-seconds", "20"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    try:
        url = None
        for line in proc.stdout:
            m = re.search(r"dashboard: (http://127\.0\.0\.1:\d+)/ui", line)
            url = url or (m.group(1) if m else None)
            if line.startswith("holding the router"):
                break
        assert url is not None
        page = httpx.get(url + "/ui", timeout=5)
        assert page.status_code == 200 and "hybrid-router" in page.text
        result = runner.invoke(app, ["top", "--url", url, "--once"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and "local (local)" in result.output, result.output
    finally:
        proc.terminate()
        proc.wait(30)
