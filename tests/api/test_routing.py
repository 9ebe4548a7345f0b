"""End-to-end routing decisions (issue: routing engine) through a real router process:
overload spill, private waits then 503, a cold/oversized 120b, long prompts, API keys,
explain, audit and metrics."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from router_simulators.ollama import OllamaSimConfig
from router_simulators.ollama import create_app as ollama_app
from router_simulators.server import SimServer
from tests.conftest import RouterProcess, base_policy, sim_get


@pytest.fixture(scope="module")
def slow_ollama() -> Iterator[SimServer]:
    cfg = OllamaSimConfig(parallel=2, token_delay_s=0.02)
    with SimServer(lambda: ollama_app(cfg)) as s:
        yield s


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_overload_spills_standard_and_private_waits_then_503(
        slow_ollama: SimServer, bedrock_sim: SimServer, start_router: Any) -> None:
    policy = base_policy(slow_ollama.url, bedrock_sim.url)
    policy["backends"]["local"]["parallel"] = 2
    policy["routes"][1]["max_queue_wait_s"] = 0.5
    policy["privacy"] = {"private_max_queue_wait_s": 0.8}
    proc = start_router(policy)
    httpx.post(slow_ollama.url + "/_sim/reset")
    client = OpenAI(base_url=proc.url + "/v1", api_key="x", max_retries=0, timeout=30)

    def one(i: int) -> tuple[str, str, int, str | None]:
        private = i % 4 == 0
        headers = {"X-Privacy": "private"} if private else {}
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-oss-20b", messages=user(f"load {i}"), extra_headers=headers)
            return ("private" if private else "standard", raw.headers["x-router-backend"],
                    200, raw.headers["x-router-reason"])
        except openai.APIStatusError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            assert exc.response.headers.get("retry-after")
            return ("private" if private else "standard", "-", exc.status_code,
                    body.get("code"))

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(48)))
    standard = [r for r in results if r[0] == "standard"]
    private = [r for r in results if r[0] == "private"]
    assert all(r[2] == 200 for r in standard), standard
    spilled = [r for r in standard if r[1] == "bedrock"]
    assert spilled and all(r[3].startswith("queue_wait_") for r in spilled), standard
    assert any(r[1] == "local" for r in results)
    assert all(r[1] in ("local", "-") for r in private)  # never the cloud
    refused = [r for r in private if r[2] == 503]
    assert refused and all(r[3] == "no_local_capacity" for r in refused), private
    stats = sim_get(slow_ollama, "/_sim/stats")
    assert stats["max_in_flight"] <= 2
    status = httpx.get(proc.url + "/v1/router/status").json()
    q = status["backends"]["local"]["queues"]["gpt-oss-20b"]
    assert q["in_flight"] == 0 and q["queued"] == 0


@pytest.fixture(scope="module")
def router(ollama_sim: SimServer, bedrock_sim: SimServer, module_tmp: Path,
           ) -> Iterator[RouterProcess]:
    audit = module_tmp / "audit.jsonl"
    keys = [
        {"name": "app", "sha256": hashlib.sha256(b"sk-app").hexdigest()},
        {"name": "hr", "sha256": hashlib.sha256(b"sk-hr").hexdigest(),
         "default_privacy": "private"},
        {"name": "small", "sha256": hashlib.sha256(b"sk-small").hexdigest(),
         "models": ["gpt-oss-20b"]},
        {"name": "capped", "sha256": hashlib.sha256(b"sk-capped").hexdigest(),
         "daily_budget_usd": 0.000001},
        {"name": "ops", "sha256": hashlib.sha256(b"sk-ops").hexdigest(), "ops": True},
    ]
    policy = base_policy(ollama_sim.url, bedrock_sim.url, keys=keys)
    policy["backends"]["bedrock"]["price"] = {"input_per_mtok": 0.07, "output_per_mtok": 0.3}
    proc = RouterProcess(policy, module_tmp,
                         env={"ROUTER_AUDIT_LOG": str(audit)})
    proc.audit = audit  # type: ignore[attr-defined]
    yield proc
    proc.stop()


OPS = {"authorization": "Bearer sk-ops"}  # status and metrics need an ops key once keys exist


def client_for(proc: RouterProcess, key: str | None) -> OpenAI:
    return OpenAI(base_url=proc.url + "/v1", api_key=key or "", max_retries=0, timeout=20)


def test_keys_401_403_and_private_default(router: RouterProcess) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        client_for(router, "sk-wrong").chat.completions.create(model="gpt-oss-20b",
                                                               messages=user("a"))
    assert "sk-wrong" not in str(info.value.body)
    with pytest.raises(openai.PermissionDeniedError):
        client_for(router, "sk-small").chat.completions.create(model="gpt-oss-120b",
                                                               messages=user("a"))
    raw = client_for(router, "sk-hr").chat.completions.with_raw_response.create(
        model="gpt-oss-20b", messages=user("a"))
    assert raw.headers["x-router-reason"] == "private_local_only"


def test_private_long_prompt_400_and_standard_goes_to_bedrock(router: RouterProcess) -> None:
    big = "word " * 40000  # ~67K estimated tokens
    c = client_for(router, "sk-app")
    raw = c.chat.completions.with_raw_response.create(model="gpt-oss-20b", messages=user(big))
    assert raw.headers["x-router-backend"] == "bedrock"
    assert raw.headers["x-router-reason"].startswith("context_")
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="gpt-oss-20b", messages=user(big),
                                  extra_headers={"X-Privacy": "private"})
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "context_length_exceeded"


def test_120b_goes_to_cloud_private_120b_refused(router: RouterProcess) -> None:
    c = client_for(router, "sk-app")
    raw = c.chat.completions.with_raw_response.create(model="gpt-oss-120b", messages=user("a"))
    assert raw.headers["x-router-backend"] == "bedrock"
    with pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="gpt-oss-120b", messages=user("a"),
                                  metadata={"privacy": "private"})
    assert info.value.status_code == 503
    assert info.value.response.headers["retry-after"]


def test_explain_sends_nothing(router: RouterProcess, ollama_sim: SimServer) -> None:
    before = sim_get(ollama_sim, "/_sim/stats")["requests"]
    r = httpx.post(router.url + "/v1/router/explain", headers={"authorization": "Bearer sk-app"},
                   json={"model": "gpt-oss-120b", "messages": user("hi")})
    plan = r.json()
    assert r.status_code == 200
    assert plan["candidates"][0]["backend"] == "bedrock"
    assert {"backend": "local", "reason": "vram_insufficient"} in plan["excluded"]
    assert sim_get(ollama_sim, "/_sim/stats")["requests"] == before


def test_audit_has_private_records_without_text(router: RouterProcess) -> None:
    secret = "the merger closes on friday"
    client_for(router, "sk-app").chat.completions.create(
        model="gpt-oss-20b", messages=user(secret), extra_headers={"X-Privacy": "private",
                                                                   "x-request-id": "aud-1"})
    audit: Path = router.audit  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        records = [json.loads(x) for x in audit.read_text().splitlines() if x.strip()]
        if any(r["request_id"] == "aud-1" for r in records):
            break
        time.sleep(0.05)
    rec = next(r for r in records if r["request_id"] == "aud-1")
    assert rec["privacy"] == "private" and rec["backend"] == "local"
    assert "header" in rec["privacy_sources"] and rec["key"] == "app"
    assert secret not in audit.read_text()
    from router.audit import summarize

    summary = summarize(str(audit), local_backends={"local"})
    assert summary["private_on_non_local"] == 0


def test_metrics_and_status(router: RouterProcess) -> None:
    client_for(router, "sk-app").chat.completions.create(model="gpt-oss-20b", messages=user("m"))
    text = httpx.get(router.url + "/metrics", headers=OPS).text
    assert "router_requests_total" in text and 'backend="local"' in text
    assert "router_local_in_flight" in text
    status = httpx.get(router.url + "/v1/router/status", headers=OPS).json()
    assert status["backends"]["local"]["breaker"] == "closed"
    assert status["store"]["kind"] == "memory"


def test_key_budget_cap_gives_429_budget_exhausted(router: RouterProcess) -> None:
    c = client_for(router, "sk-capped")
    raw = c.chat.completions.with_raw_response.create(model="gpt-oss-120b", messages=user("a"))
    assert raw.headers["x-router-backend"] == "bedrock"  # spends past the tiny cap
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="gpt-oss-120b", messages=user("a"))
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "budget_exhausted"
    # gpt-oss-20b still works: it stays local.
    raw = c.chat.completions.with_raw_response.create(model="gpt-oss-20b", messages=user("a"))
    assert raw.headers["x-router-backend"] == "local"
    text = httpx.get(router.url + "/metrics", headers=OPS).text
    assert "router_cloud_spend_usd_total" in text


def test_cli_explain_live_asks_the_running_router(router: RouterProcess,
                                                  ollama_sim: SimServer) -> None:
    from typer.testing import CliRunner

    from router.cli import app

    before = sim_get(ollama_sim, "/_sim/stats")["requests"]
    result = CliRunner().invoke(app, ["explain", "--url", router.url, "--api-key", "sk-app",
                                      "--model", "gpt-oss-120b", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["candidates"][0]["backend"] == "bedrock"
    assert {"backend": "local", "reason": "vram_insufficient"} in plan["excluded"]
    assert sim_get(ollama_sim, "/_sim/stats")["requests"] == before  # nothing sent upstream
    bad = CliRunner().invoke(app, ["explain", "--url", router.url, "--api-key", "nope"])
    assert bad.exit_code == 1 and "401" in bad.output
