"""At ROUTER_LOG_LEVEL=debug the router's log still holds no prompt text: botocore (which logs
whole Converse bodies at debug) and the other wire-level loggers stay at WARNING unless
ROUTER_WIRE_LOGS asks for them."""

from __future__ import annotations

from pathlib import Path

import httpx

from router_simulators.server import SimServer
from tests.conftest import RouterProcess, base_policy

SECRET = "the quarterly numbers are in the blue folder"


def test_debug_log_holds_no_prompt_text(ollama_sim: SimServer, bedrock_sim: SimServer,
                                        tmp_path: Path) -> None:
    proc = RouterProcess(base_policy(ollama_sim.url, bedrock_sim.url), tmp_path,
                         {"ROUTER_LOG_LEVEL": "debug"})
    try:
        # gpt-oss-120b does not fit the simulated card: it goes to Bedrock through botocore.
        r = httpx.post(proc.url + "/v1/chat/completions", timeout=20, json={
            "model": "gpt-oss-120b", "messages": [{"role": "user", "content": SECRET}]})
        assert r.status_code == 200 and r.headers["x-router-backend"] == "bedrock", r.text
    finally:
        proc.stop()
    log = proc.log.read_text()
    assert "Uvicorn running" in log
    # With ROUTER_WIRE_LOGS=true (or without the fix) botocore writes the whole Converse body.
    assert SECRET not in log
