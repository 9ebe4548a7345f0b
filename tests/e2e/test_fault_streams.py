"""The fault suite, the streaming contract: faults after the first byte reached the client end
in one in-band error event, never in a truncated answer presented as complete; a whole
(non-stream) answer broken the same way is retried, since nothing reached the client yet; a
client that leaves mid-stream frees its local slot and the upstream call.

Runs against the shared router processes of the fault suite (`stack`, see conftest); the pass
criteria and the time scale (24-token answers: "cut after 40 of 60 tokens" is a cut after 16)
are described in `fault_helpers.py`.
"""

from __future__ import annotations

import time

import openai
import pytest
from openai import OpenAI

from tests.e2e.client import HTTP, PROMPT, call
from tests.e2e.conftest import Stack
from tests.e2e.fault_helpers import (
    ATTEMPTS,
    IDLE_S,
    READ_S,
    STREAMS,
    attempts,
    modes,
    within,
)

# -- after the first byte: an in-band error, never a truncated answer --------------------------

@modes(*STREAMS)
def test_stream_cut_after_40_of_60_tokens(stack: Stack, stream: bool) -> None:
    stack.fault(stack.primary, "cut", after_tokens=16)
    out = call(stack.url, stream=True)
    out.assert_broken_stream(stack.primary, tokens=16)
    within(out, 0.2)
    assert attempts(stack) == (1, 0)


@modes(*STREAMS)
def test_stream_cut_before_first_token_fails_over(stack: Stack, stream: bool) -> None:
    stack.fault(stack.primary, "cut", after_tokens=0, times=-1)
    out = call(stack.url, stream=True)
    out.assert_complete(stack.fallback)
    assert (out.reason or "").startswith("failover_after=")
    within(out, 0.4)
    assert attempts(stack) == (ATTEMPTS, 1)


@modes(*STREAMS)
def test_stream_stalls_after_20_tokens(stack: Stack, stream: bool) -> None:
    stack.fault(stack.primary, "stall", after_tokens=8)
    out = call(stack.url, stream=True)
    out.assert_broken_stream(stack.primary, tokens=8, code="stream_stalled")
    assert out.elapsed >= IDLE_S * 0.95, out.describe()
    within(out, IDLE_S + 0.2)
    assert attempts(stack) == (1, 0)


@modes(*STREAMS)
def test_malformed_chunk_mid_stream(stack: Stack, stream: bool) -> None:
    """One undecodable chunk is skipped and the answer goes on to [DONE] (Ollama's NDJSON
    line); an event-stream frame with a bad CRC (Bedrock, SageMaker: the simulators end the
    stream there, and botocore's parser cannot resume) stays a broken stream."""
    skipped = _skipped(stack)
    stack.fault(stack.primary, "malformed", after_tokens=8)
    out = call(stack.url, stream=True)
    if stack.primary == "local":
        out.assert_complete("local")
        assert _skipped(stack) == skipped + 1
    else:
        out.assert_broken_stream(stack.primary, tokens=8)
    within(out, 0.2)
    assert attempts(stack) == (1, 0)


@pytest.mark.parametrize("stack", ["local"], indirect=True)
def test_three_malformed_chunks_in_a_row_are_a_broken_stream(stack: Stack) -> None:
    stack.fault("local", "malformed", after_tokens=8, count=3)
    out = call(stack.url, stream=True)
    out.assert_broken_stream("local", tokens=8, code="stream_malformed")
    within(out, 0.2)
    assert attempts(stack) == (1, 0)


@pytest.mark.parametrize("stack", ["local"], indirect=True)
def test_two_malformed_chunks_in_a_row_are_skipped(stack: Stack) -> None:
    stack.fault("local", "malformed", after_tokens=8, count=2)
    out = call(stack.url, stream=True)
    out.assert_complete("local")
    assert attempts(stack) == (1, 0)


@modes(*STREAMS)
def test_malformed_first_chunk(stack: Stack, stream: bool) -> None:
    """Before any token: Ollama's bad line is skipped on the same attempt; a bad frame on the
    cloud backends is retried (nothing reached the client yet)."""
    stack.fault(stack.primary, "malformed", after_tokens=0)
    out = call(stack.url, stream=True)
    out.assert_complete(stack.primary)
    within(out, 0.3)
    assert attempts(stack) == ((1, 0) if stack.primary == "local" else (2, 0))


def _skipped(stack: Stack) -> float:
    """router_stream_chunks_skipped_total{backend=primary} from the router's /metrics."""
    text = HTTP.get(stack.url + "/metrics").text
    label = f'router_stream_chunks_skipped_total{{backend="{stack.primary}"}} '
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(label))


@modes(*STREAMS)
def test_in_band_vendor_error_mid_stream(stack: Stack, stream: bool) -> None:
    stack.fault(stack.primary, "midstream_error", after_tokens=8)
    out = call(stack.url, stream=True)
    out.assert_broken_stream(stack.primary, tokens=8)
    within(out, 0.2)
    assert attempts(stack) == (1, 0)


@modes(*STREAMS)
def test_complete_stream_without_terminator(stack: Stack, stream: bool) -> None:
    stack.fault(stack.primary, "no_terminator")
    out = call(stack.url, stream=True)
    # Every token arrived, but without the upstream's end marker it is not presented as done.
    full = 24 + (1 if stack.primary == "sagemaker" else 0)  # SageMaker's sim adds one token
    out.assert_broken_stream(stack.primary, tokens=full)
    within(out, 0.2)
    assert attempts(stack) == (1, 0)


@pytest.mark.parametrize(("stack", "kind"), [
    ("local", "cut"), ("local", "stall"), ("local", "malformed"), ("local", "no_terminator"),
    # the SageMaker simulator turns cut/stall/malformed into reset/hang/bad JSON for whole answers
    ("sagemaker", "cut"), ("sagemaker", "stall"), ("sagemaker", "malformed"),
], indirect=["stack"])
def test_broken_whole_answer_is_retried(stack: Stack, kind: str) -> None:
    """Non-stream: nothing reached the client yet, so a broken body is retried, never passed on."""
    stack.fault(stack.primary, kind)
    out = call(stack.url, stream=False)
    out.assert_complete(stack.primary)
    within(out, (READ_S if kind == "stall" else 0) + 0.2)
    assert attempts(stack) == (2, 0)


@pytest.mark.parametrize("stack", ["local"], indirect=True)
def test_sdk_raises_on_in_band_error_after_cut(stack: Stack) -> None:
    stack.fault("local", "cut", after_tokens=16)
    client = OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0, timeout=10)
    text, finish = "", None
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(
                model="gpt-oss-20b", messages=[{"role": "user", "content": PROMPT}],
                reasoning_effort="high", stream=True):
            for c in chunk.choices:
                text += c.delta.content or ""
                finish = c.finish_reason or finish
    assert finish is None and text
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "stream_error"
    assert attempts(stack) == (1, 0)


# -- the ledger: a client that leaves mid-stream frees its slot and the upstream ---------------

@pytest.mark.parametrize("stack", ["local"], indirect=True)
def test_client_disconnect_mid_stream_frees_slot_and_upstream(stack: Stack) -> None:
    sim = stack.sims["local"]
    HTTP.post(sim.url + "/_sim/config", json={"token_delay_s": 0.1})
    try:
        body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": PROMPT}],
                "stream": True}
        with HTTP.stream("POST", stack.url + "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            seen = 0
            for line in r.iter_lines():
                seen += line.startswith("data: {")
                if seen == 3:
                    assert stack.slots_in_use() == 1  # streaming: the slot is held
                    break  # leaving the iteration closes the connection (httpcore)
        left = time.monotonic()
        stack.wait_idle(timeout=3)
        while stack.stats("local")["in_flight"] and time.monotonic() - left < 3:
            time.sleep(0.02)
        stats = stack.stats("local")
        assert stats["in_flight"] == 0 and stats["completed"] == 0, stats  # upstream closed early
    finally:
        HTTP.post(sim.url + "/_sim/config", json={"token_delay_s": 0.0})
