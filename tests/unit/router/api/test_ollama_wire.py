"""Ollama-native codec, pure parts: body -> ChatRequest dict, results -> Ollama JSON/NDJSON,
the Ollama options on the way to a local Ollama, and a requested num_ctx as a routing input."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from router.api.ollama_encode import Encoder, rfc3339_now
from router.api.ollama_wire import decode_chat, decode_generate, is_load_request, ollama_param
from router.backends.base import BackendCall
from router.backends.configs import OllamaConfig
from router.backends.ollama_wire import build_payload
from router.errors import InvalidRequest
from router.planner import BackendView, PlannerState, RequestFacts, plan
from router.reasons import ReasonCode
from router.types import ChatRequest, ChatResult, FunctionCall, StreamEvent, ToolCall, Usage
from tests.unit.router.test_planner import make_policy, resident

USER = {"role": "user", "content": "Weather in Paris?"}


def chat(**over: Any) -> dict[str, Any]:
    return {"model": "gpt-oss:20b", "messages": [USER], **over}


def test_defaults_stream_true_and_latest_is_the_same_model() -> None:
    d = decode_chat(chat(model="gpt-oss:20b:latest"))
    assert d.stream and d.data["stream"] is True and d.model == "gpt-oss:20b"
    assert decode_chat(chat(stream=False)).stream is False
    with pytest.raises(InvalidRequest, match="stream"):
        decode_chat(chat(stream="yes"))


@pytest.mark.parametrize(("think", "effort", "shown"), [
    (None, None, True), (True, None, True), (False, "low", False), ("high", "high", True)])
def test_think(think: Any, effort: str | None, shown: bool) -> None:
    d = decode_chat(chat(think=think))
    assert d.data.get("reasoning_effort") == effort and d.show_thinking is shown


def test_think_level_unknown_is_400() -> None:
    with pytest.raises(InvalidRequest, match="think"):
        decode_chat(chat(think="max"))


def test_options_format_and_keep_alive_map_to_chat_request() -> None:
    d = decode_chat(chat(format={"type": "object"}, keep_alive="10m", options={
        "num_predict": 64, "temperature": 0.3, "top_p": 0.9, "top_k": 20, "stop": ["END"],
        "seed": 7, "num_ctx": 16384, "repeat_penalty": 1.1}))
    req = ChatRequest.model_validate(d.data)
    assert (req.max_tokens, req.temperature, req.top_p, req.top_k, req.stop, req.seed,
            req.num_ctx, req.keep_alive) == (64, 0.3, 0.9, 20, ["END"], 7, 16384, "10m")
    assert req.response_format == {"type": "json_schema", "json_schema": {
        "name": "ollama_format", "schema": {"type": "object"}}}
    assert decode_chat(chat(format="json")).data["response_format"] == {"type": "json_object"}
    assert "max_tokens" not in decode_chat(chat(options={"num_predict": -1})).data
    with pytest.raises(InvalidRequest, match="format"):
        decode_chat(chat(format="yaml"))
    with pytest.raises(ValueError, match="duration"):
        ChatRequest.model_validate({**d.data, "keep_alive": "soon"})
    assert ollama_param("max_tokens") == "options.num_predict"
    assert ollama_param("messages[1].content") == "messages[1].content"


def test_tool_results_without_ids_pair_with_the_calls_before_them() -> None:
    calls = [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
             {"function": {"name": "get_time", "arguments": {"tz": "CET"}}}]
    d = decode_chat(chat(messages=[
        USER, {"role": "assistant", "content": "", "thinking": "need tools", "tool_calls": calls},
        {"role": "tool", "content": "12:00", "tool_name": "get_time"},
        {"role": "tool", "content": "sunny"}]))
    req = ChatRequest.model_validate(d.data)
    asst, t1, t2 = req.messages[1:]
    assert asst.reasoning == "need tools" and asst.tool_calls is not None
    ids = [tc.id for tc in asst.tool_calls]
    assert ids == ["call_1_0", "call_1_1"]  # stable across turns: the same body, the same ids
    assert asst.tool_calls[0].function.arguments == '{"city":"Paris"}'
    assert (t1.tool_call_id, t1.name, t2.tool_call_id) == ("call_1_1", "get_time", "call_1_0")
    kept = decode_chat(chat(messages=[
        USER, {"role": "assistant", "tool_calls": [{"id": "c9", **calls[0]}]},
        {"role": "tool", "content": "x", "tool_call_id": "c9"}]))
    assert kept.data["messages"][2]["tool_call_id"] == "c9"
    with pytest.raises(InvalidRequest, match="no tool call"):
        decode_chat(chat(messages=[USER, {"role": "tool", "content": "x"}]))


def test_unsupported_inputs_are_400s_naming_them() -> None:
    with pytest.raises(InvalidRequest, match="text-only"):
        decode_chat(chat(messages=[{**USER, "images": ["aGk="]}]))
    for key in ("raw", "suffix", "template", "context", "images", "logprobs"):
        with pytest.raises(InvalidRequest) as err:
            decode_generate({"model": "gpt-oss:20b", "prompt": "x", key: [1] if key in (
                "context", "images") else True if key in ("raw", "logprobs") else "y"})
        assert err.value.param == key


def test_generate_is_system_plus_prompt_and_load_calls_are_recognised() -> None:
    d = decode_generate({"model": "gpt-oss:20b", "prompt": "Hi", "system": "Be brief."})
    assert d.data["messages"] == [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "Hi"}]
    assert is_load_request({"model": "m"}, generate=True)
    assert is_load_request({"model": "m", "messages": []}, generate=False)
    assert not is_load_request({"model": "m", "prompt": "x"}, generate=True)


def test_whole_answer_and_stream_lines_in_ollama_shape() -> None:
    call = ToolCall(id="c1", function=FunctionCall(name="get_weather", arguments='{"city":"P"}'))
    body = orjson.loads(Encoder("gpt-oss:20b", chat=True, show_thinking=True).whole(ChatResult(
        content="", reasoning="hmm", tool_calls=[call], finish_reason="tool_calls",
        usage=Usage(10, 5))))
    assert body["message"] == {"role": "assistant", "content": "", "thinking": "hmm",
                               "tool_calls": [{"id": "c1", "function": {
                                   "index": 0, "name": "get_weather",
                                   "arguments": {"city": "P"}}}]}
    assert body["done"] is True and body["done_reason"] == "stop"
    assert (body["prompt_eval_count"], body["eval_count"]) == (10, 5)
    assert all(isinstance(body[k], int) for k in (
        "total_duration", "load_duration", "prompt_eval_duration", "eval_duration"))
    enc = Encoder("gpt-oss:20b", chat=False, show_thinking=False)
    lines = [orjson.loads(x) for x in b"".join([
        enc.line(StreamEvent(reasoning="r", content="Hel")),
        enc.line(StreamEvent(content="lo", finish_reason="length", usage=Usage(3, 2)))]
    ).splitlines()]
    assert [x.get("response") for x in lines] == ["Hel", "lo", ""]
    assert not any("thinking" in x for x in lines)  # think: false
    assert [x["done"] for x in lines] == [False, False, True]
    assert lines[-1]["done_reason"] == "length" and lines[-1]["eval_count"] == 2
    stamp = rfc3339_now()
    assert stamp.endswith("Z") and len(stamp) == len("2025-08-05T00:00:00.123456789Z")


def test_request_options_reach_local_ollama_over_its_config() -> None:
    req = ChatRequest.model_validate({"model": "gpt-oss-20b", "messages": [USER], "top_k": 5,
                                      "num_ctx": 32768, "keep_alive": -1})
    cfg = OllamaConfig(base_url="http://x", num_ctx=8192, keep_alive="5m",
                       models={"gpt-oss-20b": "gpt-oss:20b"})
    body = orjson.loads(build_payload(BackendCall(req, "gpt-oss:20b", "gpt-oss-20b"), cfg,
                                      stream=True))
    assert body["options"]["top_k"] == 5 and body["options"]["num_ctx"] == 32768
    assert body["keep_alive"] == -1
    plain_req = ChatRequest.model_validate({"model": "gpt-oss-20b", "messages": [USER]})
    body = orjson.loads(build_payload(BackendCall(plain_req, "gpt-oss:20b", "gpt-oss-20b"), cfg,
                                      stream=True))
    assert body["options"] == {"num_ctx": 8192} and body["keep_alive"] == "5m"


# KV cache of 100 kB a token: 8192 tokens fit next to the weights on 24 GB, 131072 do not.
POLICY = make_policy(models={"gpt-oss-20b": {"vram_gb": 14, "kv_bytes_per_token": 100_000},
                             "gpt-oss-120b": {"vram_gb": 65}})


def _plan(num_ctx: int | None, prompt: int = 100, max_tokens: int | None = 100) -> Any:
    st = PlannerState(now=0.0, backends={"local": BackendView(probe=resident(ctx=8192)),
                                         "bedrock": BackendView()})
    return plan(RequestFacts(model="gpt-oss-20b", privacy="standard", prompt_tokens=prompt,
                             max_tokens=max_tokens, num_ctx=num_ctx), POLICY, st)


def test_requested_num_ctx_is_the_local_window() -> None:
    # Loaded with 8192: the same window stays local and warm.
    assert _plan(8192).candidates[0].backend == "local"
    # 16384 needs a reload with a larger KV cache: not resident, so the cloud goes first.
    p = _plan(16384)
    assert p.candidates[0].backend == "bedrock"
    local = next(c for c in p.candidates if c.backend == "local")
    assert local.cold and local.context_window == 16384
    # A window the GPU cannot hold (14 GB of weights + 13 GB of KV cache > 24 GB).
    p = _plan(131072)
    assert [e.reason.code for e in p.excluded] == [ReasonCode.VRAM_INSUFFICIENT]
    # Asked for 4096 and no max_tokens: only the prompt must fit (the answer takes the rest).
    assert _plan(4096, prompt=3000, max_tokens=None).candidates[0].backend in ("local", "bedrock")
    assert all(e.reason.code is not ReasonCode.CONTEXT
               for e in _plan(4096, prompt=3000, max_tokens=None).excluded)
    assert [e.reason.code for e in _plan(4096, prompt=5000, max_tokens=None).excluded] == [
        ReasonCode.CONTEXT]
