"""service_time.py: answer-length specs and draws, prefill and batched decode time, the flags,
and the simulators answering with the drawn lengths (no sleeps: every delay is 0 here)."""

from __future__ import annotations

import argparse
import json
import random
import urllib.request
from typing import Any

import pytest

from router_simulators import bedrock, ollama, sagemaker, service_time
from router_simulators.prefill import scripted_answer
from router_simulators.server import SimServer
from router_simulators.service_time import AnswerLengths, LengthKind, LengthSpec, ServiceTime

USER: Any = [{"role": "user", "content": "Hello there"}]


def test_parse_specs() -> None:
    assert LengthSpec.parse("fixed") == LengthSpec()
    assert LengthSpec.parse("lognormal:24:1.0:400") == LengthSpec(LengthKind.LOGNORMAL, 24, 1.0,
                                                                  400)
    assert LengthSpec.parse("pareto:10:1.5") == LengthSpec(LengthKind.PARETO, 10, 1.5, None)
    for bad in ("uniform:1:2", "lognormal:24", "pareto:0:1", "fixed:3"):
        with pytest.raises(ValueError):
            LengthSpec.parse(bad)
    lengths = AnswerLengths.parse(["pareto:10:2", "gpt-oss:120b=lognormal:50:0.5:60"], seed=3)
    assert lengths.default.kind is LengthKind.PARETO and lengths.seed == 3
    assert lengths.per_model["gpt-oss:120b"].cap == 60


def test_draws_are_seeded_capped_and_heavy_tailed() -> None:
    spec = LengthSpec.parse("pareto:10:1.2:500")
    draws = [spec.draw(random.Random(i)) for i in range(2000)]
    assert all(d is not None and 10 <= d <= 500 for d in draws)
    ints = sorted(d for d in draws if d is not None)
    assert ints[len(ints) // 2] < 30 and ints[-1] > 200  # median short, tail long
    med = sorted(LengthSpec.parse("lognormal:24:0.8").draw(random.Random(i)) or 0
                 for i in range(2000))[1000]
    assert 18 <= med <= 30
    assert LengthSpec().draw(random.Random(0)) is None


def test_lengths_are_deterministic_per_seed_and_prompt() -> None:
    a = AnswerLengths.parse(["lognormal:24:1.0:400"], seed=7)
    assert a.tokens("m", "hello") == a.tokens("m", "hello")
    many = {a.tokens("m", f"prompt {i}") for i in range(50)}
    assert len(many) > 10
    b = AnswerLengths.parse(["lognormal:24:1.0:400"], seed=8)
    assert [a.tokens("m", f"p{i}") for i in range(20)] != [b.tokens("m", f"p{i}")
                                                          for i in range(20)]
    assert AnswerLengths.parse(["x=pareto:5:2"]).tokens("y", "hello") is None  # y: fixed


def test_service_time_model() -> None:
    st = ServiceTime(token_delay_s=0.01, prefill_tps=1000, batch_slowdown=0.5)
    assert st.prefill_s(500) == pytest.approx(0.5)
    assert ServiceTime().prefill_s(10_000) == 0.0
    assert st.token_s(1) == pytest.approx(0.01)
    assert st.token_s(3) == pytest.approx(0.02)
    assert st.token_s(0) == pytest.approx(0.01)


def test_flags_round_trip() -> None:
    p = argparse.ArgumentParser()
    service_time.add_flags(p)
    lengths, tps, slow = service_time.from_args(p.parse_args(
        ["--answer-tokens", "lognormal:24:1.0:400", "--answer-tokens", "a:b=fixed",
         "--seed", "5", "--prefill-tps", "6000", "--batch-slowdown", "0.3"]))
    assert lengths.default.kind is LengthKind.LOGNORMAL and lengths.per_model["a:b"] == LengthSpec()
    assert (lengths.seed, tps, slow) == (5, 6000.0, 0.3)
    lengths, tps, slow = service_time.from_args(p.parse_args([]))
    assert lengths.default == LengthSpec() and (lengths.seed, tps, slow) == (0, 0.0, 0.0)


def test_long_answers_extend_the_script_and_max_tokens_caps() -> None:
    lengths = AnswerLengths.parse(["lognormal:200:0.01"])
    s = scripted_answer(USER, lengths=lengths, model="m")
    assert 190 <= len(s.content) <= 210
    capped = scripted_answer(USER, max_tokens=20, lengths=lengths, model="m")
    assert capped.completion_tokens == 20 and capped.finish_reason == "length"
    prefix = "".join(s.content[:50])
    cont = scripted_answer(USER + [{"role": "assistant", "content": prefix}], lengths=lengths,
                           model="m")
    assert prefix + "".join(cont.content) == "".join(s.content)


def _post(url: str, body: Any) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_simulators_answer_with_the_drawn_length() -> None:
    lengths = AnswerLengths.parse(["lognormal:80:0.01"])
    with SimServer(lambda: ollama.create_app(ollama.OllamaSimConfig(
            answer_lengths=lengths, prefill_tps=1e9, batch_slowdown=1.0))) as o:
        body = _post(o.url + "/api/chat", {"model": "gpt-oss:20b", "messages": USER,
                                           "stream": False})
        assert 75 <= len(body["message"]["content"].split()) <= 85
        body = _post(o.url + "/api/chat", {"model": "gpt-oss:20b", "messages": USER,
                                           "stream": False, "options": {"num_predict": 10}})
        assert body["done_reason"] == "length" and body["eval_count"] == 10
    with SimServer(lambda: bedrock.create_app(bedrock.BedrockSimConfig(
            answer_lengths=lengths))) as b:
        body = _post(b.url + "/model/openai.gpt-oss-20b-1%3A0/converse",
                     {"messages": [{"role": "user", "content": [{"text": "Hello there"}]}]})
        assert 75 <= body["usage"]["outputTokens"] - 6 <= 85  # 6 reasoning tokens
    with SimServer(lambda: sagemaker.create_app(sagemaker.SageMakerSimConfig(
            answer_lengths=lengths, utf8_suffix=""))) as sm:
        body = _post(sm.url + "/endpoints/gpt-oss-20b-endpoint/invocations", {"messages": USER})
        assert 75 <= len(body["choices"][0]["message"]["content"].split()) <= 85
