"""Mid-stream continuation through the whole app, in every dialect's stream: a local backend
breaks after answer text went out and the cloud fallback continues it. The client sees one
stream (one id, one finish, usage summed over the attempts, the terminal event only when the
answer is whole), and the in-band error as before when the continuation is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import orjson
import pytest

from router.app import create_app
from router.backends.base import LoadedModel, ProbeResult
from router.errors import BackendStreamError
from router.policy.loader import parse_policy
from router.settings import RouterSettings
from router.state.memory import MemoryStore
from router.types import StreamEvent, Usage
from tests.unit.router.fake_streams import ScriptBackend, Step, text, tool_call

MSG = [{"role": "user", "content": "Hi"}]
BROKEN: list[Step] = [StreamEvent(reasoning="thinking"), *text("Hello", " wor", finish=False),
                      BackendStreamError("cut", backend="local", code="stream_truncated")]
FALLBACK_USAGE = Usage(20, 7)
# The broken attempt reported no usage: its 17 characters (reasoning and text) are estimated
# as 6 tokens.
COMPLETION = 6 + 7


def _policy(prefill: bool) -> dict[str, Any]:
    return {
        "models": {"gpt-oss-20b": {"vram_gb": 14}},
        "backends": {
            "local": {"type": "ollama", "parallel": 2, "prefill": False,
                      "models": {"gpt-oss-20b": "gpt-oss:20b"}},
            "bedrock": {"type": "bedrock", "prefill": prefill,
                        "models": {"gpt-oss-20b": "openai.gpt-oss-20b-1:0"}},
        },
        "routes": [{"name": "default", "targets": ["local", "bedrock"]}],
    }


@asynccontextmanager
async def _app(prefill: bool, fallback: list[Step], audit: str | None = None,
               first: list[Step] | None = None
               ) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, ScriptBackend]]]:
    backends: dict[str, ScriptBackend] = {}

    def factory(name: str, cfg: Any) -> ScriptBackend:
        b = backends[name] = ScriptBackend(name, local=bool(cfg.local))
        if cfg.local:  # resident, so local is first
            b.scripts = [list(first or BROKEN)]
            b.probe_result = ProbeResult(ok=True, loaded=[
                LoadedModel("gpt-oss:20b", size=14 << 30, size_vram=14 << 30)])
        else:
            b.scripts = [fallback]
        return b

    settings = RouterSettings(policy_file=None, audit_log=audit, redis_url=None, admin_key=None,
                              watch_policy=False)
    with mock.patch("router.runtime.build_backend", factory):
        app = create_app(settings, policy=parse_policy(_policy(prefill)), store=MemoryStore())
    transport = httpx.ASGITransport(app=app)
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c):
        yield c, backends


def _sse(body: str) -> list[Any]:
    return [orjson.loads(line[6:]) for line in body.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def _chat(body: str) -> tuple[str, dict[str, Any]]:
    chunks = _sse(body)
    errors = [c for c in chunks if "error" in c]
    answer = [c for c in chunks if "error" not in c]
    assert len({c["id"] for c in answer}) == 1
    finishes = [ch["finish_reason"] for c in answer for ch in c["choices"]
                if ch.get("finish_reason")]
    whole = body.rstrip().endswith("data: [DONE]")
    assert whole == (finishes == ["stop"]) and whole != bool(errors)
    usage = next((c["usage"] for c in answer if c.get("usage")), {})
    content = "".join(ch["delta"].get("content") or "" for c in answer for ch in c["choices"])
    return content, {"whole": whole, "completion": usage.get("completion_tokens")}


def _responses(body: str) -> tuple[str, dict[str, Any]]:
    events = _sse(body)
    assert len({e["response"]["id"] for e in events if "response" in e}) == 1
    done = [e for e in events if e["type"] in ("response.completed", "response.incomplete")]
    failed = [e for e in events if e["type"] == "response.failed"]
    assert len(done) + len(failed) == 1
    content = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    usage = done[0]["response"]["usage"] if done else {}
    return content, {"whole": bool(done), "completion": usage.get("output_tokens")}


def _ollama(body: str) -> tuple[str, dict[str, Any]]:
    lines = [orjson.loads(x) for x in body.splitlines() if x]
    done = [x for x in lines if x.get("done")]
    errors = [x for x in lines if "error" in x]
    assert len(done) + len(errors) == 1
    content = "".join((x.get("message") or {}).get("content") or "" for x in lines)
    return content, {"whole": bool(done),
                     "completion": done[0].get("eval_count") if done else None}


def _anthropic(body: str) -> tuple[str, dict[str, Any]]:
    events = _sse(body)
    starts = [e for e in events if e["type"] == "message_start"]
    assert len(starts) == 1 and starts[0]["message"]["id"]
    stops = [e for e in events if e["type"] == "message_stop"]
    errors = [e for e in events if e["type"] == "error"]
    deltas = [e for e in events if e["type"] == "message_delta"]
    assert len(stops) + len(errors) == 1 and len(deltas) == len(stops)
    content = "".join(e["delta"].get("text") or "" for e in events
                      if e["type"] == "content_block_delta")
    return content, {"whole": bool(stops),
                     "completion": deltas[0]["usage"]["output_tokens"] if deltas else None}


Parse = Callable[[str], tuple[str, dict[str, Any]]]
DIALECTS: list[tuple[str, dict[str, Any], Parse]] = [
    ("/v1/chat/completions", {"model": "gpt-oss-20b", "messages": MSG, "stream": True,
                              "stream_options": {"include_usage": True}}, _chat),
    ("/v1/responses", {"model": "gpt-oss-20b", "input": "Hi", "store": False,
                       "stream": True}, _responses),
    ("/api/chat", {"model": "gpt-oss-20b", "messages": MSG, "stream": True}, _ollama),
    ("/v1/messages", {"model": "gpt-oss-20b", "max_tokens": 64, "messages": MSG,
                      "stream": True}, _anthropic),
]
IDS = [d[0] for d in DIALECTS]


async def _post(c: httpx.AsyncClient, path: str, body: dict[str, Any]) -> str:
    r = await c.post(path, json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-router-backend"] == "local"  # headers went out before the break
    return r.text


@pytest.mark.parametrize(("path", "body", "parse"), DIALECTS, ids=IDS)
async def test_prefill_continuation_is_one_whole_stream(path: str, body: dict[str, Any],
                                                        parse: Parse) -> None:
    async with _app(True, text("ld", "!", usage=FALLBACK_USAGE)) as (c, backends):
        content, got = parse(await _post(c, path, body))
    assert content == "Hello world!" and got == {"whole": True, "completion": COMPLETION}
    sent = backends["bedrock"].last_messages()
    assert sent[-1] == {"role": "assistant", "content": "Hello wor"}


@pytest.mark.parametrize(("path", "body", "parse"), DIALECTS, ids=IDS)
async def test_regenerated_continuation_skips_the_delivered_text(
        path: str, body: dict[str, Any], parse: Parse) -> None:
    fallback = [StreamEvent(reasoning="again"), *text("Hello ", "world!", usage=FALLBACK_USAGE)]
    async with _app(False, fallback) as (c, backends):
        content, got = parse(await _post(c, path, body))
    assert content == "Hello world!" and got == {"whole": True, "completion": COMPLETION}
    assert backends["bedrock"].last_messages()[-1]["role"] == "user"


@pytest.mark.parametrize(("path", "body", "parse"), DIALECTS, ids=IDS)
async def test_a_refused_continuation_ends_in_band(path: str, body: dict[str, Any],
                                                   parse: Parse) -> None:
    async with _app(False, text("Something", " else", usage=FALLBACK_USAGE)) as (c, _):
        content, got = parse(await _post(c, path, body))
    assert content == "Hello wor" and got == {"whole": False, "completion": None}



@pytest.mark.parametrize(("path", "body", "parse"), DIALECTS, ids=IDS)
async def test_after_reasoning_only_the_fallback_restarts(path: str, body: dict[str, Any],
                                                          parse: Parse) -> None:
    first: list[Step] = [StreamEvent(reasoning="thinking"),
                         BackendStreamError("stall", backend="local", code="stream_stalled")]
    fallback = [StreamEvent(reasoning="anew"), *text("Hello world!", usage=FALLBACK_USAGE)]
    async with _app(True, fallback, first=first) as (c, backends):
        content, got = parse(await _post(c, path, body))
    assert content == "Hello world!" and got["whole"]
    assert got["completion"] == 3 + 7  # "thinking" estimated as 3 tokens
    assert backends["bedrock"].last_messages()[-1]["role"] == "user"  # no prefill


@pytest.mark.parametrize(("path", "body", "parse"), DIALECTS, ids=IDS)
async def test_never_after_a_tool_call_began(path: str, body: dict[str, Any],
                                             parse: Parse) -> None:
    first = [*text("Let me look.", finish=False), tool_call(),
             BackendStreamError("cut", backend="local", code="stream_truncated")]
    async with _app(True, text("ld!"), first=first) as (c, backends):
        content, got = parse(await _post(c, path, body))
    assert content == "Let me look." and not got["whole"]
    assert backends["bedrock"].calls == []


async def test_metrics_and_audit_count_the_continuation(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    async with _app(True, text("ld!", usage=FALLBACK_USAGE), str(audit)) as (c, _):
        await _post(c, *DIALECTS[0][:2])
        metrics = (await c.get("/metrics")).text
    assert ('router_stream_continuations_total{backend="bedrock",outcome="prefill"} 1.0'
            in metrics)
    (rec,) = [orjson.loads(line) for line in audit.read_bytes().splitlines()]
    assert rec["outcome"] == "ok" and rec["backend"] == "bedrock"
    assert [(a["backend"], a["outcome"]) for a in rec["attempts"]] == [
        ("local", "stream_truncated"), ("bedrock", "continuation_prefill")]
    assert rec["completion_tokens"] == COMPLETION
    assert "Hello" not in audit.read_text()
