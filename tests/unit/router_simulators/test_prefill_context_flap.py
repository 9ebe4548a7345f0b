"""Issue 12 simulator behaviour: assistant prefill (continue, reject_prefill, echo_prefill),
Ollama's `truncate`, the Bedrock and SageMaker context windows, and the `flap` fault."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from router_simulators import bedrock, ollama, sagemaker
from router_simulators.prefill import BEDROCK_PREFILL_REJECTED, scripted_answer
from router_simulators.script import Fault, FaultQueue, build_script
from router_simulators.server import SimServer

USER: Any = [{"role": "user", "content": "Hello there"}]
FULL = "".join(build_script(USER).content)
PREFIX = " ".join(FULL.split()[:4])


def post(srv: SimServer, path: str, body: Any) -> tuple[int, Any]:
    req = urllib.request.Request(srv.url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def get(srv: SimServer, path: str) -> int:
    with urllib.request.urlopen(srv.url + path, timeout=5) as resp:
        return int(resp.status)


@pytest.fixture(scope="module")
def oll() -> Iterator[SimServer]:
    srv = SimServer(lambda: ollama.create_app(ollama.OllamaSimConfig(
        context_length=64, model_context={"gpt-oss:120b": 4096}))).start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _clear(oll: SimServer) -> None:
    oll.app[ollama.SIM_KEY].faults.clear()


def chat(srv: SimServer, messages: Any, **extra: Any) -> tuple[int, Any]:
    return post(srv, "/api/chat", {"model": "gpt-oss:20b", "messages": messages,
                                   "stream": False, **extra})


# ---- prefill ----------------------------------------------------------------------------------


def test_scripted_answer_continues_after_a_prefix_and_counts_new_tokens() -> None:
    full = build_script(USER)
    cont = scripted_answer(USER + [{"role": "assistant", "content": PREFIX}])
    assert cont.reasoning == [] and cont.tool_call is None
    assert PREFIX + "".join(cont.content) == FULL
    spaced = scripted_answer(USER + [{"role": "assistant", "content": PREFIX + " \n"}])
    assert (PREFIX + " \n" + "".join(spaced.content)).split() == FULL.split()
    assert cont.completion_tokens == len(full.content) - 4
    mid = scripted_answer(USER + [{"role": "assistant", "content": FULL[:7]}])
    assert FULL[:7] + "".join(mid.content) == FULL
    echo = scripted_answer(USER + [{"role": "assistant", "content": PREFIX}], echo=True)
    assert "".join(echo.content).startswith(PREFIX) and "".join(echo.content).endswith(
        "".join(cont.content))
    capped = scripted_answer(USER + [{"role": "assistant", "content": PREFIX}], max_tokens=2)
    assert len(capped.content) == 2 and capped.finish_reason == "length"
    other = scripted_answer(USER + [{"role": "assistant", "content": "Nothing like it"}])
    assert "".join(other.content) == FULL and other.reasoning


def test_ollama_native_and_v1_continue_a_prefill(oll: SimServer) -> None:
    msgs = USER + [{"role": "assistant", "content": PREFIX}]
    status, body = chat(oll, msgs)
    assert status == 200 and PREFIX + body["message"]["content"] == FULL
    assert body["eval_count"] == len(build_script(USER).content) - 4
    status, body = post(oll, "/v1/chat/completions", {"model": "gpt-oss:20b", "messages": msgs})
    assert status == 200
    assert PREFIX + body["choices"][0]["message"]["content"] == FULL


def test_ollama_reject_prefill_spares_other_requests(oll: SimServer) -> None:
    assert post(oll, "/_sim/faults", {"faults": [{"kind": "reject_prefill"}]})[0] == 200
    assert chat(oll, USER)[0] == 200  # not consumed by a plain request
    status, body = chat(oll, USER + [{"role": "assistant", "content": PREFIX}])
    assert status == 400 and isinstance(body["error"], str)
    assert chat(oll, USER + [{"role": "assistant", "content": PREFIX}])[0] == 200


def test_ollama_echo_prefill_resends_the_prefix(oll: SimServer) -> None:
    post(oll, "/_sim/faults", {"faults": [{"kind": "echo_prefill"}]})
    status, body = chat(oll, USER + [{"role": "assistant", "content": PREFIX}])
    assert status == 200 and body["message"]["content"] == PREFIX + FULL[len(PREFIX):]


# ---- Ollama truncate ----------------------------------------------------------------------------


def test_ollama_truncate_false_over_the_context_is_ollamas_400(oll: SimServer) -> None:
    long = [{"role": "user", "content": "word " * 100}]  # ~129 tokens > 64
    status, body = chat(oll, long, truncate=False)
    assert status == 400 and body == {"error": "the input length exceeds the context length"}
    assert chat(oll, long)[0] == 200  # absent: Ollama truncates silently
    assert chat(oll, long, truncate=True)[0] == 200
    assert chat(oll, long, truncate=False, options={"num_ctx": 1024})[0] == 200
    status, _ = post(oll, "/api/chat", {"model": "gpt-oss:120b", "messages": long,
                                        "stream": False, "truncate": False})
    assert status == 200  # its per-model context is 4096


# ---- flap ---------------------------------------------------------------------------------------


def test_flap_queue_uses_the_clock_and_scale() -> None:
    now = [100.0]
    q = FaultQueue(clock=lambda: now[0], time_scale=0.5)
    q.add([Fault(kind="flap", duration_s=10), Fault(kind="cut")])
    f = q.take("m")
    assert f is not None and f.kind == "status" and f.status == 503
    now[0] = 105.1
    f = q.take("m")
    assert f is not None and f.kind == "cut"


def test_ollama_flap_keeps_probes_answering(oll: SimServer) -> None:
    post(oll, "/_sim/faults", {"faults": [{"kind": "flap", "duration_s": 60}]})
    assert chat(oll, USER)[0] == 503
    assert post(oll, "/v1/chat/completions", {"model": "gpt-oss:20b", "messages": USER})[0] == 503
    assert get(oll, "/api/version") == get(oll, "/api/tags") == get(oll, "/api/ps") == 200


# ---- Bedrock ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bed() -> Iterator[SimServer]:
    srv = SimServer(lambda: bedrock.create_app(bedrock.BedrockSimConfig(
        context_window=100))).start()
    yield srv
    srv.stop()


def converse(srv: SimServer, turns: list[tuple[str, str]]) -> tuple[int, Any]:
    msgs = [{"role": r, "content": [{"text": t}]} for r, t in turns]
    return post(srv, "/model/openai.gpt-oss-20b-1%3A0/converse", {"messages": msgs})


def test_bedrock_prefill_continue_reject_and_window(bed: SimServer) -> None:
    status, body = converse(bed, [("user", "Hello there"), ("assistant", PREFIX)])
    assert status == 200
    texts = [b["text"] for b in body["output"]["message"]["content"] if "text" in b]
    assert PREFIX + "".join(texts) == FULL
    post(bed, "/_sim/faults", {"faults": [{"kind": "reject_prefill"}]})
    assert converse(bed, [("user", "Hello there")])[0] == 200
    status, body = converse(bed, [("user", "Hello there"), ("assistant", PREFIX)])
    assert status == 400 and body["message"] == BEDROCK_PREFILL_REJECTED
    status, body = converse(bed, [("user", "word " * 200)])
    assert status == 400 and "Input is too long for requested model." in body["message"]
    assert "254 tokens" in body["message"] and "100 tokens" in body["message"]
    post(bed, "/_sim/faults", {"faults": [{"kind": "flap", "duration_s": 60}]})
    assert converse(bed, [("user", "Hello there")])[0] == 503
    bed.app[bedrock.STATE].faults.clear()


# ---- SageMaker ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sm() -> Iterator[SimServer]:
    srv = SimServer(lambda: sagemaker.create_app(sagemaker.SageMakerSimConfig(
        context_window=100, utf8_suffix=""))).start()
    yield srv
    srv.stop()


def invoke(srv: SimServer, messages: Any, **extra: Any) -> tuple[int, Any]:
    return post(srv, "/endpoints/gpt-oss-20b-endpoint/invocations",
                {"messages": messages, **extra})


def test_sagemaker_prefill_continue_reject_and_window(sm: SimServer) -> None:
    status, body = invoke(sm, USER + [{"role": "assistant", "content": PREFIX}])
    assert status == 200 and PREFIX + body["choices"][0]["message"]["content"] == FULL
    post(sm, "/_sim/faults", {"faults": [{"kind": "reject_prefill"}]})
    assert invoke(sm, USER)[0] == 200
    status, body = invoke(sm, USER + [{"role": "assistant", "content": PREFIX}])
    assert status == 424 and body["OriginalStatusCode"] == 400
    status, body = invoke(sm, [{"role": "user", "content": "word " * 100}], max_tokens=10)
    assert status == 424 and body["OriginalStatusCode"] == 400
    inner = json.loads(body["OriginalMessage"])["error"]
    assert inner["code"] == "context_length_exceeded"
    assert "maximum context length is 100 tokens" in inner["message"]
    post(sm, "/_sim/faults", {"faults": [{"kind": "flap", "duration_s": 60}]})
    assert invoke(sm, USER)[0] == 503
    sm.app[sagemaker.FAULTS_KEY].clear()
