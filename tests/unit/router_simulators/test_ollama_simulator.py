"""The Ollama simulator's wire format (docs/protocols.md, Ollama), residency, slots and its /v1
surface."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from router_simulators import ollama as sim_mod
from router_simulators.ollama import BUSY, SIM_KEY, GiB, OllamaSim, OllamaSimConfig, create_app
from router_simulators.script import Fault
from router_simulators.server import SimServer

RFC3339_NS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
CALL_ID = re.compile(r"^call_[a-z0-9]{8}$")
WEATHER: Any = {"type": "function", "function": {
    "name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
USER: Any = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def server() -> Iterator[SimServer]:
    srv = SimServer(lambda: create_app(OllamaSimConfig())).start()
    yield srv
    srv.stop()


@pytest.fixture
def sim(server: SimServer) -> OllamaSim:
    s = server.app[SIM_KEY]
    s.faults.clear()
    s.stats.reset()
    return s


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any, str]:
    async with http.post(url, data=orjson.dumps(body)) as r:
        raw = await r.read()
        return r.status, (orjson.loads(raw) if raw else None), r.headers.get("Content-Type", "")


async def ndjson(http: aiohttp.ClientSession, url: str, body: Any) -> list[dict[str, Any]]:
    async with http.post(url, data=orjson.dumps(body)) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/x-ndjson"
        return [orjson.loads(line) for line in (await r.read()).splitlines()]


async def test_native_whole_answer(server: SimServer, sim: OllamaSim,
                                   http: aiohttp.ClientSession) -> None:
    status, body, ctype = await post(http, server.url + "/api/chat",
                                     {"model": "gpt-oss:20b", "messages": USER, "stream": False})
    assert status == 200 and ctype.startswith("application/json")
    assert body["model"] == "gpt-oss:20b" and RFC3339_NS.match(body["created_at"])
    msg = body["message"]
    assert msg["role"] == "assistant" and msg["content"] and msg["thinking"].startswith("Thinking")
    assert "tool_calls" not in msg
    assert body["done"] is True and body["done_reason"] == "stop"
    for k in ("total_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
              "eval_duration"):
        assert isinstance(body[k], int) and body[k] > 0
    assert "load_duration" not in body  # resident already: zero metrics are omitted
    assert sim.stats.as_dict()["completed"] == 1


async def test_native_stream(server: SimServer, http: aiohttp.ClientSession) -> None:
    lines = await ndjson(http, server.url + "/api/chat",
                         {"model": "gpt-oss:20b", "messages": USER})  # stream defaults to true
    *tokens, last = lines
    assert all(x["done"] is False and "done_reason" not in x for x in tokens)
    assert [bool(x["message"].get("thinking")) for x in tokens][:6] == [True] * 6
    assert all(x["message"]["role"] == "assistant" for x in lines)
    assert last["done"] is True and last["done_reason"] == "stop" and last["eval_count"] == 18
    assert last["message"] == {"role": "assistant", "content": ""}


async def test_native_tools_round_trip(server: SimServer, http: aiohttp.ClientSession) -> None:
    ask = [{"role": "user", "content": "Weather in Tokyo?"}]
    _, body, _ = await post(http, server.url + "/api/chat", {
        "model": "gpt-oss:20b", "messages": ask, "tools": [WEATHER], "stream": False})
    [tc] = body["message"]["tool_calls"]
    assert CALL_ID.match(tc["id"])
    assert tc["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}}
    assert body["done_reason"] == "stop"  # native Ollama: tool calls still end with "stop"
    history = ask + [
        {"role": "assistant", "content": "", "thinking": body["message"]["thinking"],
         "tool_calls": [tc]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather", "tool_call_id": tc["id"]},
    ]
    lines = await ndjson(http, server.url + "/api/chat",
                         {"model": "gpt-oss:20b", "messages": history, "tools": [WEATHER]})
    assert "sunny" in "".join(x["message"]["content"] for x in lines)
    streamed = await ndjson(http, server.url + "/api/chat",
                            {"model": "gpt-oss:20b", "messages": ask, "tools": [WEATHER]})
    assert sum(1 for x in streamed if x["message"].get("tool_calls")) == 1


@pytest.mark.parametrize("think,n", [("low", 3), ("medium", 6), ("high", 12), ("max", 12),
                                     (True, 6), (False, 6), (None, 6)])
async def test_think_levels(server: SimServer, http: aiohttp.ClientSession, think: Any,
                            n: int) -> None:
    req = {"model": "gpt-oss:20b", "messages": USER, "stream": False, "think": think}
    _, body, _ = await post(http, server.url + "/api/chat", req)
    assert body["message"]["thinking"].endswith(f"step {n}.")


@pytest.mark.parametrize("body,status,error", [
    ({"model": "gpt-oss:20b", "messages": USER, "think": "extreme"}, 400, "invalid think value"),
    ({"model": "llama9:1b", "messages": USER}, 404,
     'model "llama9:1b" not found, try pulling it first'),
    ({"messages": USER}, 400, "model is required"),
    ({"model": "gpt-oss:20b", "messages": USER, "keep_alive": "5 minutes"}, 400, "duration"),
])
async def test_native_errors(server: SimServer, http: aiohttp.ClientSession, body: Any,
                             status: int, error: str) -> None:
    got, resp, ctype = await post(http, server.url + "/api/chat", body)
    assert got == status and error in resp["error"] and ctype.startswith("application/json")


async def test_missing_body(server: SimServer, http: aiohttp.ClientSession) -> None:
    async with http.post(server.url + "/api/chat") as r:
        assert r.status == 400 and (await r.json())["error"] == "missing request body"


async def test_residency_load_evict_and_partial(http: aiohttp.ClientSession) -> None:
    cfg = OllamaSimConfig(models={"a:1b": 10, "b:1b": 10, "c:1b": 10, "big:1b": 40}, gpu_gb=24)
    with SimServer(lambda: create_app(cfg)) as srv:
        async def ps() -> dict[str, dict[str, Any]]:
            async with http.get(srv.url + "/api/ps") as r:
                return {m["name"]: m for m in (await r.json())["models"]}

        start = await ps()
        assert set(start) == {"a:1b", "b:1b"}  # all that fit, in order
        a = start["a:1b"]
        assert a["size"] == a["size_vram"] == 10 * GiB and a["context_length"] == 8192
        assert RFC3339_NS.match(a["expires_at"]) and a["details"]["family"] == "gptoss"
        assert a["model"] == "a:1b" and len(a["digest"]) == 64

        async def chat(tag: str, **kw: Any) -> dict[str, Any]:
            _, body, _ = await post(http, srv.url + "/api/chat",
                                    {"model": tag, "messages": USER, "stream": False, **kw})
            return dict(body)

        await chat("a:1b")  # b is now least recently used
        body = await chat("c:1b", options={"num_ctx": 4096})
        assert body["load_duration"] > 0
        now = await ps()
        assert set(now) == {"a:1b", "c:1b"} and now["c:1b"]["context_length"] == 4096
        await chat("big:1b")  # bigger than the card: loads partly, alone
        big = (await ps())["big:1b"]
        assert set(await ps()) == {"big:1b"} and 0 < big["size_vram"] < big["size"]
        await chat("a:1b", keep_alive=0)  # unload after the answer
        assert "a:1b" not in await ps()


async def test_empty_messages_load_and_unload(http: aiohttp.ClientSession) -> None:
    with SimServer(lambda: create_app(OllamaSimConfig(resident=set()))) as srv:
        url = srv.url + "/api/chat"
        _, body, _ = await post(http, url, {"model": "gpt-oss:20b", "messages": []})
        assert body["done"] is True and body["done_reason"] == "load"
        async with http.get(srv.url + "/api/ps") as r:
            assert [m["name"] for m in (await r.json())["models"]] == ["gpt-oss:20b"]
        _, body, _ = await post(http, url, {"model": "gpt-oss:20b", "keep_alive": 0})
        assert body["done_reason"] == "unload"
        async with http.get(srv.url + "/api/ps") as r:
            assert (await r.json())["models"] == []


async def test_tags_version_show(server: SimServer, http: aiohttp.ClientSession) -> None:
    async with http.get(server.url + "/api/tags") as r:
        tags = (await r.json())["models"]
    assert [t["name"] for t in tags] == ["gpt-oss:20b", "gpt-oss:120b"]
    assert {"name", "model", "modified_at", "size", "digest", "details"} <= set(tags[0])
    async with http.get(server.url + "/api/version") as r:
        assert await r.json() == {"version": "0.12.3"}
    _, show, _ = await post(http, server.url + "/api/show", {"model": "gpt-oss:120b"})
    assert show["capabilities"] == ["completion", "tools", "thinking"]
    assert show["model_info"]["gptoss.context_length"] == 131072
    status, _, _ = await post(http, server.url + "/api/show", {"model": "nope"})
    assert status == 404


async def _until(pred: Any) -> None:
    for _ in range(500):
        if pred():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def test_parallel_slots_bound_concurrency(http: aiohttp.ClientSession) -> None:
    cfg = OllamaSimConfig(parallel=2, token_delay_s=0.005)
    with SimServer(lambda: create_app(cfg)) as srv:
        body = {"model": "gpt-oss:20b", "messages": USER, "options": {"num_predict": 4}}
        results = await asyncio.gather(*(ndjson(http, srv.url + "/api/chat", body)
                                         for _ in range(6)))
        stats = srv.app[SIM_KEY].stats.as_dict()
    assert all(r[-1]["done"] for r in results)
    assert stats["max_in_flight"] == 2 and stats["completed"] == 6 and stats["in_flight"] == 0


async def test_queue_overflow_is_503(http: aiohttp.ClientSession) -> None:
    cfg = OllamaSimConfig(parallel=1, max_queue=1)
    with SimServer(lambda: create_app(cfg)) as srv:
        sim = srv.app[SIM_KEY]
        sim.faults.add([Fault(kind="stall", after_tokens=1)])
        url = srv.url + "/api/chat"
        body = {"model": "gpt-oss:20b", "messages": USER}
        holder = await http.post(url, data=orjson.dumps(body))  # holds the only slot
        await _until(lambda: sim.stats.in_flight == 1)
        waiting = asyncio.create_task(post(http, url, {**body, "stream": False}))
        await _until(lambda: sim.pending == 1)
        status, err, _ = await post(http, url, body)
        assert (status, err) == (503, {"error": BUSY})
        holder.close()  # the stalled client gives up; the queued request gets the slot
        status, answer, _ = await waiting
        assert status == 200 and answer["done"] is True
        assert sim.stats.max_in_flight == 1


async def test_fault_control_endpoints(server: SimServer, sim: OllamaSim,
                                       http: aiohttp.ClientSession) -> None:
    url = server.url
    status, _, _ = await post(http, url + "/_sim/faults", {"faults": [{"kind": "bogus"}]})
    assert status == 400
    status, _, _ = await post(http, url + "/_sim/faults", {"faults": [
        {"kind": "status", "status": 429, "retry_after": 7, "times": 2}]})
    assert status == 200
    for _ in range(2):
        async with http.post(url + "/api/chat", data=orjson.dumps(
                {"model": "gpt-oss:20b", "messages": USER})) as r:
            assert r.status == 429 and r.headers["Retry-After"] == "7"
            assert "error" in await r.json()
    await post(http, url + "/_sim/faults", {"faults": [{"kind": "status", "status": 500}]})
    async with http.delete(url + "/_sim/faults") as r:
        assert r.status == 200
    status, _, _ = await post(http, url + "/api/chat",
                              {"model": "gpt-oss:20b", "messages": USER, "stream": False})
    assert status == 200
    async with http.get(url + "/_sim/stats") as r:
        stats = await r.json()
    assert stats["faults_applied"] == 2 and stats["completed"] == 1 and stats["requests"] == 3
    await post(http, url + "/_sim/reset", {})
    async with http.get(url + "/_sim/stats") as r:
        assert (await r.json())["requests"] == 0
    _, conf, _ = await post(http, url + "/_sim/config", {"token_delay_s": 0, "parallel": 3})
    assert conf["parallel"] == 3 and sim.cfg.parallel == 3
    await post(http, url + "/_sim/config", {"parallel": 1})


async def test_fault_applies_to_its_model_only(server: SimServer, sim: OllamaSim,
                                               http: aiohttp.ClientSession) -> None:
    sim.faults.add([Fault(kind="status", status=500, model="gpt-oss:120b")])
    status, _, _ = await post(http, server.url + "/api/chat",
                              {"model": "gpt-oss:20b", "messages": USER, "stream": False})
    assert status == 200
    status, _, _ = await post(http, server.url + "/api/chat",
                              {"model": "gpt-oss:120b", "messages": USER, "stream": False})
    assert status == 500


async def test_stream_faults_on_the_wire(server: SimServer, sim: OllamaSim,
                                         http: aiohttp.ClientSession) -> None:
    body = {"model": "gpt-oss:20b", "messages": USER}
    sim.faults.add([Fault(kind="midstream_error", after_tokens=2)])
    lines = await ndjson(http, server.url + "/api/chat", body)
    assert len(lines) == 3 and lines[-1] == {"error": "simulated error mid-stream"}
    sim.faults.add([Fault(kind="no_terminator")])
    lines = await ndjson(http, server.url + "/api/chat", body)
    assert len(lines) == 18 and not any(x["done"] for x in lines)
    sim.faults.add([Fault(kind="malformed", after_tokens=1)])
    async with http.post(server.url + "/api/chat", data=orjson.dumps(body)) as r:
        raw = (await r.read()).splitlines()
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw[1])
    sim.faults.add([Fault(kind="cut", after_tokens=2)])
    with pytest.raises(aiohttp.ClientPayloadError):
        await ndjson(http, server.url + "/api/chat", body)
    sim.faults.add([Fault(kind="reset")])
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await ndjson(http, server.url + "/api/chat", body)


# -- Ollama's OpenAI surface, through the official SDK ----------------------------------------

@pytest.fixture
async def oai(server: SimServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="ollama", max_retries=0)
    yield client
    await client.close()


async def test_v1_whole(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="gpt-oss:20b", messages=USER,
                                          reasoning_effort="low")
    assert r.object == "chat.completion" and r.system_fingerprint == "fp_ollama"
    msg = r.choices[0].message
    assert msg.content and (msg.model_extra or {})["reasoning"].endswith("step 3.")
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.completion_tokens == 15
    assert r.usage.total_tokens == r.usage.prompt_tokens + 15


async def test_v1_stream_with_usage(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(model="gpt-oss:20b", messages=USER,
                                               stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning") or ""
                        for c in chunks if c.choices)
    assert reasoning.endswith("step 6.")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert len({c.created for c in chunks}) == 1 and len({c.id for c in chunks}) == 1


async def test_v1_tool_calls(oai: openai.AsyncOpenAI) -> None:
    ask: Any = [{"role": "user", "content": "Weather in Lima?"}]
    r = await oai.chat.completions.create(model="gpt-oss:20b", messages=ask,
                                          tools=[WEATHER])
    [tc] = r.choices[0].message.tool_calls or []
    assert r.choices[0].finish_reason == "tool_calls" and CALL_ID.match(tc.id)
    assert tc.function.arguments == '{"city":"Lima"}'  # type: ignore[union-attr]
    stream = await oai.chat.completions.create(model="gpt-oss:20b", messages=ask,
                                               tools=[WEATHER], stream=True)
    chunks = [c async for c in stream]
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].function is not None
    assert calls[0].function.arguments == '{"city":"Lima"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    history = ask + [
        {"role": "assistant", "content": None, "tool_calls": [tc.model_dump()]},
        {"role": "tool", "tool_call_id": tc.id, "content": "foggy"},
    ]
    r = await oai.chat.completions.create(model="gpt-oss:20b", messages=history)
    assert "foggy" in (r.choices[0].message.content or "")


async def test_v1_errors_and_models(oai: openai.AsyncOpenAI, sim: OllamaSim) -> None:
    with pytest.raises(openai.NotFoundError):
        await oai.chat.completions.create(model="nope", messages=USER)
    with pytest.raises(openai.BadRequestError):
        await oai.chat.completions.create(model="gpt-oss:20b", messages=USER,
                                          reasoning_effort="extreme")  # type: ignore[call-overload]
    sim.faults.add([Fault(kind="status", status=503)])
    with pytest.raises(openai.InternalServerError) as ei:
        await oai.chat.completions.create(model="gpt-oss:20b", messages=USER)
    assert ei.value.status_code == 503
    sim.faults.add([Fault(kind="midstream_error", after_tokens=2)])
    stream = await oai.chat.completions.create(model="gpt-oss:20b", messages=USER,
                                               stream=True)
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    models = await oai.models.list()
    assert [m.id for m in models.data] == ["gpt-oss:20b", "gpt-oss:120b"]


def test_main_parses_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_run(app: Any, host: str, port: int) -> None:
        seen.update(cfg=app[SIM_KEY].cfg, host=host, port=port)

    monkeypatch.setattr(sim_mod, "run_forever", fake_run)
    sim_mod.main(["--port", "9999", "--models", "gpt-oss:20b=14,gpt-oss:120b=65", "--gpu-gb",
                  "80", "--parallel", "2", "--token-delay", "0", "--load-time", "2", "--context",
                  "16384"])
    cfg = seen["cfg"]
    assert seen["port"] == 9999 and seen["host"] == "127.0.0.1"
    assert cfg.models == {"gpt-oss:20b": 14.0, "gpt-oss:120b": 65.0} and cfg.gpu_gb == 80
    assert (cfg.parallel, cfg.token_delay_s, cfg.load_time_s, cfg.context_length) == (2, 0, 2,
                                                                                     16384)


# -- Ollama's cloud models and its cloud switch --------------------------------------------------

CLOUD = {"gpt-oss:120b-cloud": "gpt-oss:120b"}


@pytest.fixture(scope="module")
def cloud_server() -> Iterator[SimServer]:
    srv = SimServer(lambda: create_app(OllamaSimConfig(cloud_models=dict(CLOUD),
                                                       cloud_disabled=False))).start()
    yield srv
    srv.stop()


async def test_tags_list_cloud_models_with_remote_host_and_ps_never(
        cloud_server: SimServer, http: aiohttp.ClientSession) -> None:
    async with http.get(cloud_server.url + "/api/tags") as r:
        models = {m["name"]: m for m in (await r.json())["models"]}
    entry = models["gpt-oss:120b-cloud"]
    assert entry["remote_host"] == "https://ollama.com:443"
    assert entry["remote_model"] == "gpt-oss:120b" and entry["size"] < 1024
    assert "remote_host" not in models["gpt-oss:20b"]
    async with http.get(cloud_server.url + "/api/ps") as r:
        assert "gpt-oss:120b-cloud" not in {m["name"] for m in (await r.json())["models"]}


async def test_status_endpoint_is_404_before_0_16_2_and_reports_cloud_after(
        server: SimServer, cloud_server: SimServer, http: aiohttp.ClientSession) -> None:
    async with http.get(server.url + "/api/status") as r:
        assert r.status == 404
    async with http.get(cloud_server.url + "/api/status") as r:
        assert await r.json() == {"cloud": {"disabled": False, "source": "none"}}


async def test_a_cloud_model_answers_with_remote_fields_and_is_counted(
        cloud_server: SimServer, http: aiohttp.ClientSession) -> None:
    sim = cloud_server.app[SIM_KEY]
    before = sim.cloud_requests
    status, body, _ = await post(http, cloud_server.url + "/api/chat", {
        "model": "gpt-oss:120b:cloud", "messages": USER, "stream": False})
    assert status == 200 and body["remote_host"] == "https://ollama.com:443"
    assert body["message"]["content"] and body["done"] is True
    lines = await ndjson(http, cloud_server.url + "/api/chat",
                         {"model": "gpt-oss:120b-cloud", "messages": USER})
    assert all(line["remote_model"] == "gpt-oss:120b" for line in lines) and lines[-1]["done"]
    assert sim.cloud_requests == before + 2
    async with http.get(cloud_server.url + "/_sim/stats") as r:
        assert (await r.json())["cloud_requests"] == before + 2


async def test_with_cloud_disabled_a_cloud_model_is_403(http: aiohttp.ClientSession) -> None:
    with SimServer(lambda: create_app(OllamaSimConfig(
            cloud_models=dict(CLOUD), cloud_disabled=True, cloud_source="env"))) as srv:
        status, body, _ = await post(http, srv.url + "/api/chat", {
            "model": "gpt-oss:120b-cloud", "messages": USER, "stream": False})
        assert status == 403 and "cloud is disabled" in body["error"]
        async with http.get(srv.url + "/api/status") as r:
            assert await r.json() == {"cloud": {"disabled": True, "source": "env"}}
        assert srv.app[SIM_KEY].cloud_requests == 0
