"""The router through the official `openai` SDK: a real `hybrid-router serve` process in front of
the Ollama and Bedrock simulators on loopback ports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from router_simulators.server import SimServer
from tests.conftest import RouterProcess, base_policy

TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.fixture(scope="module")
def router(ollama_sim: SimServer, bedrock_sim: SimServer, module_tmp: Path,
           ) -> Iterator[RouterProcess]:
    proc = RouterProcess(base_policy(ollama_sim.url, bedrock_sim.url), module_tmp)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(router: RouterProcess) -> OpenAI:
    return OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0, timeout=20)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_chat_answer_reasoning_usage_and_headers(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-oss-20b", messages=user("hello"), extra_headers={"x-request-id": "abc123"})
    resp = raw.parse()
    assert raw.headers["x-request-id"] == "abc123"
    assert raw.headers["x-router-backend"] == "local"
    assert raw.headers["x-router-reason"] == "local"
    msg = resp.choices[0].message
    assert msg.content and getattr(msg, "reasoning", None)
    assert resp.model == "gpt-oss:20b"  # the served model, as the local Ollama names it
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage and resp.usage.completion_tokens > 0 and resp.usage.prompt_tokens > 0


def test_stream_with_usage(client: OpenAI) -> None:
    stream = client.chat.completions.create(model="gpt-oss-20b", messages=user("hi"),
                                            stream=True, stream_options={"include_usage": True})
    text, reasoning, finish, usage = "", "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            reasoning += getattr(c.delta, "reasoning", None) or ""
            finish = c.finish_reason or finish
    assert text and reasoning and finish == "stop"
    assert usage is not None and usage.total_tokens > 0


def test_tool_call_round_trip_with_reasoning_passed_back(client: OpenAI) -> None:
    msgs: list[dict[str, Any]] = user("What is the weather in Paris?")
    first = client.chat.completions.create(model="gpt-oss-20b", messages=msgs, tools=[TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)
    msgs.append({"role": "assistant", "content": None,
                 "reasoning": getattr(choice.message, "reasoning", None),
                 "tool_calls": [{"id": call.id, "type": "function",
                                 "function": {"name": "get_weather",
                                              "arguments": call.function.arguments}}]})
    msgs.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 24C"})
    second = client.chat.completions.create(model="gpt-oss-20b", messages=msgs, tools=[TOOL])
    assert "sunny, 24C" in (second.choices[0].message.content or "")
    assert second.choices[0].finish_reason == "stop"


def test_streamed_tool_call(client: OpenAI) -> None:
    stream = client.chat.completions.create(model="gpt-oss-20b", messages=user("Weather in Oslo?"),
                                            tools=[TOOL], stream=True)
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"name": "", "args": ""})
                entry["name"] += (tc.function.name or "") if tc.function else ""
                entry["args"] += (tc.function.arguments or "") if tc.function else ""
            finish = c.finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["args"])


def test_reasoning_effort_changes_reasoning(client: OpenAI) -> None:
    low = client.chat.completions.create(model="gpt-oss-20b", messages=user("x"),
                                         reasoning_effort="low")
    high = client.chat.completions.create(model="gpt-oss-20b", messages=user("x"),
                                          reasoning_effort="high")
    r_low = getattr(low.choices[0].message, "reasoning", "")
    r_high = getattr(high.choices[0].message, "reasoning", "")
    assert len(r_high) > len(r_low) > 0


@pytest.mark.parametrize("name", ["gpt-oss-20b", "gpt-oss:20b", "openai/gpt-oss-20b",
                                  "openai.gpt-oss-20b-1:0"])
def test_aliases_20b(client: OpenAI, name: str) -> None:
    raw = client.chat.completions.with_raw_response.create(model=name, messages=user("a"))
    assert raw.parse().model == "gpt-oss:20b"  # whatever alias was asked for: what served it
    assert raw.headers["x-router-backend"] == "local"


@pytest.mark.parametrize("name", ["gpt-oss-120b", "gpt-oss:120b", "openai/gpt-oss-120b",
                                  "openai.gpt-oss-120b-1:0"])
def test_aliases_120b_go_to_cloud(client: OpenAI, name: str) -> None:
    raw = client.chat.completions.with_raw_response.create(model=name, messages=user("a"))
    assert raw.parse().model == "openai.gpt-oss-120b-1:0"  # as Bedrock names it
    assert raw.headers["x-router-backend"] == "bedrock"
    assert raw.headers["x-router-reason"] == "vram_insufficient"


def test_models_list(client: OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"gpt-oss-20b", "gpt-oss-120b", "gpt-oss:20b", "gpt-oss:120b"} <= ids


def test_unknown_model_404_lists_known(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="llama-3", messages=user("a"))
    err = info.value.body
    assert isinstance(err, dict) and err["code"] == "model_not_found"
    assert "gpt-oss-20b" in err["message"] and "gpt-oss-120b" in err["message"]


def test_unknown_role_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-oss-20b",
                                       messages=[{"role": "wizard", "content": "x"}])  # type: ignore[list-item]
    assert info.value.body["param"] == "messages[0].role"  # type: ignore[index]


def raw_post(router: RouterProcess, content: bytes, ctype: str = "application/json",
             ) -> httpx.Response:
    return httpx.post(router.url + "/v1/chat/completions", content=content,
                      headers={"content-type": ctype}, timeout=30)


def assert_openai_error(r: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in r.text
    if param is not None:
        assert body["error"]["param"] == param
    return body["error"]  # type: ignore[no-any-return]


def test_malformed_json_400(router: RouterProcess) -> None:
    assert_openai_error(raw_post(router, b'{"model": "gpt-oss-20b", "messages": ['), 400)


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "gpt-oss-20b"}, "messages"),
    ({"model": "gpt-oss-20b", "messages": "hello"}, "messages"),
    ({"model": "gpt-oss-20b", "messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "x"}],
      "temperature": 7}, "temperature"),
    ({"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "x"}],
      "reasoning_effort": "extreme"}, "reasoning_effort"),
])
def test_bad_fields_400_name_param(router: RouterProcess, body: dict[str, Any],
                                   param: str) -> None:
    assert_openai_error(raw_post(router, json.dumps(body).encode()), 400, param)


def test_non_object_body_400(router: RouterProcess) -> None:
    assert_openai_error(raw_post(router, b"[1,2]"), 400)


def test_wrong_content_type_415(router: RouterProcess) -> None:
    assert_openai_error(raw_post(router, b"model=x", "application/x-www-form-urlencoded"), 415)


def test_body_over_limit_413(router: RouterProcess) -> None:
    big = b'{"model":"gpt-oss-20b","messages":[{"role":"user","content":"' + b"x" * (
        10 * 1024 * 1024 + 10) + b'"}]}'
    assert_openai_error(raw_post(router, big), 413)


def test_unknown_path_is_openai_shaped_404(router: RouterProcess) -> None:
    assert_openai_error(httpx.get(router.url + "/v1/nothing", timeout=5), 404)


def test_health_and_ready(router: RouterProcess) -> None:
    assert httpx.get(router.url + "/healthz").json() == {"status": "ok"}
    r = httpx.get(router.url + "/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready"}  # a status word only
    r = httpx.get(router.url + "/v1/router/status")  # the details are for ops (loopback here)
    assert r.status_code == 200 and "local" in r.json()["usable_backends"]


def test_ollama_down_gives_clear_5xx(start_router: Any) -> None:
    from router_simulators.server import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    proc = start_router(base_policy(dead))
    client = OpenAI(base_url=proc.url + "/v1", api_key="x", max_retries=0, timeout=20)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-oss-20b", messages=user("a"))
    assert info.value.status_code in (502, 503)
    body = info.value.body
    assert isinstance(body, dict) and body["message"] and "Traceback" not in str(body)
    assert httpx.get(proc.url + "/readyz").status_code == 503
