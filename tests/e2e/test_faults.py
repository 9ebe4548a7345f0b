"""The fault suite: scripted simulator faults against a real router process (design §7).

Each fault runs with local Ollama as primary and Bedrock as fallback, and, where it applies, with
a cloud backend as primary (Bedrock -> SageMaker, SageMaker -> Bedrock). Every test states its
pass criteria explicitly:
- the client call ended within a bound (3x the expected time, at least 1.5 s: slack for a
  loaded 2-core CI machine) and always inside the request deadline;
- a complete answer (the simulator's whole scripted answer, `finish_reason`, `[DONE]` for
  streams, the logical model in `model`, the serving backend in `x-router-backend`) or a clean
  OpenAI-shaped error (before output: status + `{"error": {...}}`; after output: one in-band
  `data: {"error": ...}` event and neither a `finish_reason` nor `[DONE]`);
- attempts counted on the simulators (`GET /_sim/stats` `requests`, primary and fallback);
- no truncated answer presented as complete (checked on every call, see conftest);
- the router healthy afterwards: the `stack` fixture settles after each test (breakers closed,
  `/readyz` 200 with every backend usable, no local slot held or queued).

Time scale. Per-request timings run at 1/10 of real time, the outage at 1/20 (so its 60 s fit
in 3 s); every relation the test depends on is kept (a fault exceeds the limit it tests, the
recovery bound exceeds the probe and breaker windows):

    issue / production                      here
    time-to-first-token limit ~10 s         stream.first_token_timeout_s 1.0
    idle gap limit ~5 s                     stream.idle_timeout_s 0.5
    non-stream read timeout ~10 s           timeouts.read_s 1.0
    request deadline ~100 s                 deadline_s 10
    backoff 0.5 .. 2 s                      retry.initial_s 0.05, max_s 0.2 (3 attempts)
    Retry-After: 2                          Retry-After: 2 (kept: proves the hint is honoured)
    first token after 20 s                  slow_first_token delay_s 2.0
    backend fails for 60 s                  3 s outage (probes every 0.2 s, breaker 0.5 s/1 s)
    back on primary within 30 s             within 1.5 s of recovery

Streams: the simulators' answer at reasoning effort "high" is 24 tokens (12 reasoning + 12
answer), so "cut after 40 of 60 tokens" is a cut after 16 of 24 (the same 2/3 point, inside the
answer) and "stalls after 20 tokens" a stall after 8 of 24 (1/3, inside the reasoning: a
reasoning token counts as a token for the idle limit).

Also here: the suite's invariants (private requests never on a cloud backend, checked on the
simulators and in every audit log; no truncated answer presented as complete; no local slot
held afterwards; flat memory over 10,000 requests with faults, marked `slow` but run by
default), and the lifecycle (SIGTERM drain, policy reload by file, SIGHUP and admin call).
The bugs this suite found (429 without Retry-After, half-open letting every request through,
exit status after SIGTERM, sub-second grace, streams cut at the grace) are fixed; their tests
stay as regressions.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
import yaml
from openai import OpenAI

from router.simulators.ollama import OllamaSimConfig
from router.simulators.ollama import create_app as ollama_app
from router.simulators.server import SimServer
from tests.e2e.conftest import (
    AUDIT_LOGS,
    HTTP,
    PIN,
    PROMPT,
    TRUNCATED_SUCCESSES,
    Outcome,
    Stack,
    call,
    fast_policy,
    private_on_cloud,
    start_stack,
)

TTFT_S, IDLE_S, READ_S, DEADLINE_S = 1.0, 0.5, 1.0, 10.0
ATTEMPTS = 3
OUTAGE_S, RECOVERY_BOUND_S = 3.0, 1.5


def within(out: Outcome, expected_s: float) -> None:
    """Ended within 3x the expected time (at least 1.5 s), and before the deadline."""
    limit = min(max(1.5, 3 * expected_s), DEADLINE_S)
    assert out.elapsed < limit, f"took {out.elapsed:.2f}s > {limit:.2f}s: {out.describe()}"


def attempts(st: Stack) -> tuple[int, int]:
    """Requests the primary's and the fallback's simulators received."""
    return st.requests(st.primary), st.requests(st.fallback)


# -- stacks: one router process per primary, shared by the module ------------------------------

class Stacks:
    """Router processes by primary, started on first use and kept for the module."""

    def __init__(self, sims: dict[str, SimServer], tmp: Path) -> None:
        self.sims, self.tmp = sims, tmp
        self.made: dict[str, Stack] = {}

    def __call__(self, primary: str) -> Stack:
        if primary not in self.made:
            policy = fast_policy(self.sims["local"].url, self.sims["bedrock"].url,
                                 self.sims["sagemaker"].url, primary=primary)
            self.made[primary] = start_stack(policy, self.sims, self.tmp, primary=primary)
        return self.made[primary]


@pytest.fixture(scope="module")
def stacks(e2e_ollama: SimServer, e2e_bedrock: SimServer, e2e_sagemaker: SimServer,
           module_tmp: Path) -> Iterator[Stacks]:
    pool = Stacks({"local": e2e_ollama, "bedrock": e2e_bedrock, "sagemaker": e2e_sagemaker},
                  module_tmp)
    yield pool
    for st in pool.made.values():
        st.router.stop()


@pytest.fixture
def stack(request: pytest.FixtureRequest, stacks: Stacks) -> Iterator[Stack]:
    """The router for `request.param` as primary: settled before, checked healthy after."""
    st = stacks(request.param)
    st.settle()
    yield st
    st.settle()


def modes(*spec: str) -> pytest.MarkDecorator:
    """Parametrize (stack, stream) from ids like 'local-stream', 'bedrock-whole'."""
    params = [pytest.param(s.split("-")[0], s.endswith("-stream"), id=s) for s in spec]
    return pytest.mark.parametrize(("stack", "stream"), params, indirect=["stack"])


ALL = ("local-whole", "local-stream", "bedrock-whole", "bedrock-stream", "sagemaker-whole",
       "sagemaker-stream")
STREAMS = ("local-stream", "bedrock-stream", "sagemaker-stream")


# -- before any output: retry on the same backend, then fail over ------------------------------

@modes("local-whole", "local-stream", "bedrock-stream", "sagemaker-whole")
def test_429_with_retry_after_then_success(stack: Stack, stream: bool) -> None:
    stack.fault(stack.primary, "status", status=429, retry_after=2)
    out = call(stack.url, stream=stream)
    out.assert_complete(stack.primary)
    assert out.elapsed >= 1.9, f"Retry-After: 2 not honoured: {out.describe()}"
    within(out, 2.0)
    assert attempts(stack) == (2, 0)


@modes(*ALL)
def test_429_without_hint_persistent_fails_over(stack: Stack, stream: bool) -> None:
    stack.fault(stack.primary, "status", status=429, times=-1)
    out = call(stack.url, stream=stream)
    out.assert_complete(stack.fallback)
    assert out.reason == "failover_after=backend_rate_limited"
    within(out, 0.4)
    assert attempts(stack) == (ATTEMPTS, 1)


@modes(*ALL)
def test_500_once_then_success(stack: Stack, stream: bool) -> None:
    stack.fault(stack.primary, "status", status=500)
    out = call(stack.url, stream=stream)
    out.assert_complete(stack.primary)
    assert not (out.reason or "").startswith("failover")
    within(out, 0.2)
    assert attempts(stack) == (2, 0)


@modes(*ALL)
def test_503_persistent_fails_over(stack: Stack, stream: bool) -> None:
    stack.fault(stack.primary, "status", status=503, times=-1)
    out = call(stack.url, stream=stream)
    out.assert_complete(stack.fallback)
    assert out.reason == "failover_after=backend_unavailable"
    within(out, 0.4)
    assert attempts(stack) == (ATTEMPTS, 1)


@modes(*ALL)
def test_connection_reset_before_headers_fails_over(stack: Stack, stream: bool) -> None:
    stack.fault(stack.primary, "reset", times=-1)
    out = call(stack.url, stream=stream)
    out.assert_complete(stack.fallback)
    assert out.reason == "failover_after=backend_unavailable"
    within(out, 0.4)
    assert attempts(stack) == (ATTEMPTS, 1)


@modes("local-whole", "local-stream", "bedrock-stream", "sagemaker-whole")
def test_no_response_at_all_times_out_and_fails_over(stack: Stack, stream: bool) -> None:
    stack.fault(stack.primary, "hang", times=-1)
    out = call(stack.url, stream=stream)
    out.assert_complete(stack.fallback)
    assert out.reason == "failover_after=backend_timeout"
    limit = TTFT_S if stream else READ_S
    assert out.elapsed >= ATTEMPTS * limit * 0.95, out.describe()
    within(out, ATTEMPTS * limit + 0.3)
    assert attempts(stack) == (ATTEMPTS, 1)


@modes("local-stream", "bedrock-stream", "sagemaker-stream")
def test_first_token_after_20s_fails_over(stack: Stack, stream: bool) -> None:
    stack.fault(stack.primary, "slow_first_token", delay_s=2.0, times=-1)
    out = call(stack.url, stream=stream)
    out.assert_complete(stack.fallback)
    assert out.reason == "failover_after=backend_timeout"
    within(out, ATTEMPTS * TTFT_S + 0.3)
    assert attempts(stack) == (ATTEMPTS, 1)


@modes("local-stream", "bedrock-stream", "sagemaker-stream")
def test_first_token_inside_the_limit_is_served(stack: Stack, stream: bool) -> None:
    """Control: a first token slower than usual but inside the limit is not cut off."""
    stack.fault(stack.primary, "slow_first_token", delay_s=TTFT_S / 2)
    out = call(stack.url, stream=stream)
    out.assert_complete(stack.primary)
    within(out, TTFT_S / 2)
    assert attempts(stack) == (1, 0)


@modes(*ALL)
def test_every_candidate_failing_gives_a_clean_error(stack: Stack, stream: bool) -> None:
    """Primary and fallback both down: an OpenAI-shaped 502 before any byte, streams included."""
    stack.fault(stack.primary, "status", status=503, times=-1)
    stack.fault(stack.fallback, "status", status=503, times=-1)
    out = call(stack.url, stream=stream)
    out.assert_clean_error(502, code="backend_unavailable")
    assert not out.chunks and not out.done
    within(out, 0.8)
    assert attempts(stack) == (ATTEMPTS, ATTEMPTS)


@modes("local-whole", "bedrock-stream")
def test_every_candidate_rate_limited_gives_429_with_retry_after(stack: Stack,
                                                                  stream: bool) -> None:
    stack.fault(stack.primary, "status", status=429, times=-1)
    stack.fault(stack.fallback, "status", status=429, times=-1)
    out = call(stack.url, stream=stream)
    out.assert_clean_error(429)
    within(out, 0.8)
    assert attempts(stack) == (ATTEMPTS, ATTEMPTS)
    assert out.headers.get("retry-after"), out.describe()


@pytest.mark.parametrize("stack", ["bedrock"], indirect=True)
def test_half_open_breaker_admits_one_trial_request(stack: Stack) -> None:
    stack.fault("bedrock", "status", status=503, times=6)  # two requests: 6 failures, open
    stack.fault("bedrock", "hang", times=-1)  # then it hangs
    for _ in range(2):
        call(stack.url, stream=False).assert_complete("sagemaker")
    assert stack.breaker("bedrock") == "open"
    deadline = time.monotonic() + 3
    while stack.breaker("bedrock") != "half_open":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    before = stack.requests("bedrock")
    results: list[Outcome] = []
    threads = [threading.Thread(target=lambda: results.append(call(stack.url, stream=True)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    for out in results:
        out.assert_complete("sagemaker")
    fast = [o for o in results if o.elapsed < 1.5]
    assert stack.requests("bedrock") - before <= ATTEMPTS, "more than one trial request"
    assert len(fast) >= 7, sorted(round(o.elapsed, 2) for o in results)


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
    stack.fault(stack.primary, "malformed", after_tokens=8)
    out = call(stack.url, stream=True)
    out.assert_broken_stream(stack.primary, tokens=8)
    within(out, 0.2)
    assert attempts(stack) == (1, 0)


@modes(*STREAMS)
def test_malformed_first_chunk_is_retried(stack: Stack, stream: bool) -> None:
    stack.fault(stack.primary, "malformed", after_tokens=0)
    out = call(stack.url, stream=True)
    out.assert_complete(stack.primary)
    within(out, 0.3)
    assert attempts(stack) == (2, 0)


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


# -- context window and content filter: not retried --------------------------------------------

BIG_PROMPT = "Summarise this log line please. " * 1300  # ~10K tokens > local 8192 window


@modes("local-whole", "local-stream")
def test_prompt_over_local_window_goes_to_bedrock(stack: Stack, stream: bool) -> None:
    out = call(stack.url, stream=stream, text=BIG_PROMPT)
    out.assert_complete("bedrock", text=BIG_PROMPT)
    assert (out.reason or "").startswith("context_"), out.describe()
    within(out, 0.3)
    assert attempts(stack) == (0, 1)


@modes("local-whole", "local-stream")
def test_context_exceeded_from_ollama_is_a_clean_400(stack: Stack, stream: bool) -> None:
    """Ollama's 400 carries no structured context signal: returned with its reason, once."""
    stack.fault("local", "context_exceeded")
    out = call(stack.url, stream=stream)
    err = out.assert_clean_error(400)
    assert "context length" in err["message"]
    within(out, 0.2)
    assert attempts(stack) == (1, 0)


@modes("bedrock-stream", "sagemaker-whole", "sagemaker-stream")
def test_context_exceeded_moves_only_to_a_larger_window(stack: Stack, stream: bool) -> None:
    stack.fault(stack.primary, "context_exceeded")
    out = call(stack.url, stream=stream)
    within(out, 0.3)
    if stack.primary == "sagemaker":  # 32K window -> Bedrock's 128K
        out.assert_complete("bedrock")
        assert out.reason == "failover_after=context_length_exceeded"
        assert attempts(stack) == (1, 1)
    else:  # Bedrock's 128K -> SageMaker's 32K is no larger: not tried
        out.assert_clean_error(400, code="context_length_exceeded")
        assert attempts(stack) == (1, 0)


@modes("local-whole", "local-stream", "bedrock-whole", "bedrock-stream", "sagemaker-whole",
       "sagemaker-stream")
def test_content_filter_is_not_retried_or_failed_over(stack: Stack, stream: bool) -> None:
    stack.fault(stack.primary, "content_filter", after_tokens=4)
    out = call(stack.url, stream=stream)
    within(out, 0.2)
    assert attempts(stack) == (1, 0)
    if stack.primary == "local":  # the backend's own 400 and reason
        assert "safety filter" in out.assert_clean_error(400)["message"]
    elif stack.primary == "bedrock" and not stream:
        out.assert_clean_error(400, code="content_filter")
    else:  # an OpenAI-style answer that ends with finish_reason "content_filter"
        assert out.status == 200 and out.finish_reason == "content_filter", out.describe()
        assert out.stream_error is None and (out.done or not stream), out.describe()


# -- outages: served from the fallback meanwhile, back on the primary soon after ---------------

def _drive_outage(st: Stack, restore: Callable[[], None], fallback: str) -> list[Outcome]:
    """Requests every ~50 ms for OUTAGE_S, then `restore()`, then until back on the primary."""
    served: list[Outcome] = []
    start = time.monotonic()
    while time.monotonic() - start < OUTAGE_S:
        out = call(st.url, stream=len(served) % 2 == 1)
        out.assert_complete(fallback)
        within(out, ATTEMPTS * 0.2)
        served.append(out)
        time.sleep(0.05)
    restore()
    recovered = time.monotonic()
    while True:
        out = call(st.url, stream=len(served) % 2 == 1)
        if out.backend == st.primary:
            out.assert_complete(st.primary)
            break
        out.assert_complete(fallback)
        served.append(out)
        assert time.monotonic() - recovered < RECOVERY_BOUND_S, "not back on the primary"
        time.sleep(0.05)
    back_after = time.monotonic() - recovered
    assert back_after < RECOVERY_BOUND_S, f"back on the primary after {back_after:.2f}s"
    for _ in range(5):  # and it stays there
        call(st.url, stream=False).assert_complete(st.primary)
    return served


def test_local_outage_then_recovery(e2e_bedrock: SimServer, tmp_path: Path) -> None:
    with SimServer(lambda: ollama_app(OllamaSimConfig(parallel=4))) as ollama:
        policy = fast_policy(ollama.url, e2e_bedrock.url,
                             circuit={"failure_threshold": 3, "open_for_s": 1.0,
                                      "local_open_for_s": 0.5})
        st = start_stack(policy, {"local": ollama, "bedrock": e2e_bedrock}, tmp_path)
        try:
            st.settle()
            ollama.stop()
            private: list[Outcome] = []

            def restore() -> None:
                private.append(call(st.url, stream=False, headers={"x-privacy": "private"}))
                ollama.start()

            served = _drive_outage(st, restore, "bedrock")
            # A dead local host costs no latency once its breaker is open: the planner skips it.
            skipped = [o for o in served if o.reason == "local_unhealthy"]
            assert len(skipped) >= len(served) // 2, [o.reason for o in served]
            assert sorted(o.elapsed for o in skipped)[len(skipped) // 2] < 0.25
            # Private requests are refused meanwhile, never sent to Bedrock.
            private[0].assert_clean_error(503, code="no_local_capacity")
            assert private[0].headers.get("retry-after")
            assert st.requests("bedrock") == len(served)
            assert st.private_on_cloud() == 0
            st.settle()
        finally:
            st.router.stop()


@pytest.mark.parametrize("stack", ["bedrock"], indirect=True)
def test_cloud_outage_then_recovery(stack: Stack) -> None:
    stack.fault("bedrock", "status", status=503, times=-1)

    def recover() -> None:
        HTTP.delete(stack.sims["bedrock"].url + "/_sim/faults")

    served = _drive_outage(stack, recover, "sagemaker")
    assert len(served) >= 10
    # Once the breaker opened, Bedrock was skipped: far fewer Bedrock calls than 3 per request.
    assert stack.requests("bedrock") < len(served), (stack.requests("bedrock"), len(served))


# -- failover accounting -----------------------------------------------------------------------

def _metric(url: str, name: str, **labels: str) -> float:
    text = HTTP.get(url + "/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = ",".join(sorted(line[len(name) + 1:line.index("}")].split(",")))
            if got == want:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _audit_record(st: Stack, request_id: str) -> dict[str, Any]:
    """The request's audit line (a stream's is written just after its last byte: poll)."""
    deadline = time.monotonic() + 3
    while True:
        for line in st.audit_path.read_bytes().splitlines():
            rec = orjson.loads(line)
            if rec["request_id"] == request_id:
                return rec  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"no audit record for {request_id}"
        time.sleep(0.02)


@pytest.mark.parametrize("stack", ["local"], indirect=True)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_failover_accounting(stack: Stack, stream: bool) -> None:
    """The answer names the model and the backend that served it; metrics and audit agree."""
    failovers = _metric(stack.url, "router_failovers_total", from_backend="local",
                        reason="backend_unavailable")
    retries = _metric(stack.url, "router_retries_total", backend="local")
    stack.fault("local", "status", status=503, times=-1)
    rid = f"acct-{int(stream)}-{time.monotonic_ns()}"
    out = call(stack.url, stream=stream, headers={"x-request-id": rid})
    out.assert_complete("bedrock")
    assert out.model == "gpt-oss-20b" and out.headers["x-request-id"] == rid
    assert out.reason == "failover_after=backend_unavailable"
    assert _metric(stack.url, "router_failovers_total", from_backend="local",
                   reason="backend_unavailable") == failovers + 1
    assert _metric(stack.url, "router_retries_total", backend="local") == retries + ATTEMPTS - 1
    rec = _audit_record(stack, rid)
    assert rec["backend"] == "bedrock" and rec["model"] == "gpt-oss-20b" and rec["status"] == 200
    assert [(a["backend"], a["outcome"]) for a in rec["attempts"]] == [
        ("local", "backend_unavailable"), ("bedrock", "ok")]


# -- invariant: private requests never reach a cloud backend -----------------------------------

PRIVATE_MARKERS: list[tuple[dict[str, str], dict[str, Any], str]] = [
    ({"x-privacy": "private"}, {}, PROMPT),
    ({}, {"metadata": {"privacy": "private"}}, PROMPT),
    ({}, {}, "Write to alice@example.com about the hybrid router"),  # detector
    ({PIN: "bedrock", "x-privacy": "private"}, {}, PROMPT),  # even on a route to the cloud
]


@pytest.mark.parametrize("stack", ["local"], indirect=True)
@pytest.mark.parametrize("fault", [
    {"kind": "status", "status": 503, "times": -1},
    {"kind": "status", "status": 429, "times": -1},
    {"kind": "reset", "times": -1},
    {"kind": "cut", "after_tokens": 0, "times": -1},
    {"kind": "malformed", "after_tokens": 0, "times": -1},
], ids=["503", "429", "reset", "cut-first", "malformed-first"])
def test_private_requests_never_reach_the_cloud(stack: Stack, fault: dict[str, Any]) -> None:
    stack.fault("local", **fault)
    for headers, extra, text in PRIVATE_MARKERS:
        for stream in (False, True):
            out = call(stack.url, stream=stream, text=text, headers=headers, **extra)
            out.assert_clean_error(503, code="no_local_capacity")
            assert "never sent to the cloud" in out.error["message"]
            assert out.headers.get("retry-after"), out.describe()
            within(out, 0.5)
    assert stack.requests("bedrock") == 0 and stack.requests("sagemaker") == 0
    assert stack.private_on_cloud() == 0


@pytest.mark.parametrize("stack", ["local"], indirect=True)
def test_private_requests_stay_local_through_transient_and_stream_faults(stack: Stack) -> None:
    priv = {"x-privacy": "private"}
    stack.fault("local", "status", status=500)
    call(stack.url, stream=False, headers=priv).assert_complete("local")
    stack.fault("local", "cut", after_tokens=16)
    call(stack.url, stream=True, headers=priv).assert_broken_stream("local", tokens=16)
    too_big = call(stack.url, stream=False, text=BIG_PROMPT, headers=priv)
    too_big.assert_clean_error(400, code="context_length_exceeded")
    assert stack.requests("bedrock") == 0
    assert stack.private_on_cloud() == 0


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


# -- invariant: no unbounded memory growth over 10,000 requests with faults --------------------

def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _load(st: Stack, first: int, count: int, tally: dict[str, int]) -> None:
    """`count` requests, 32 at a time: 1 in 5 streamed; faults on the local simulator: a 500
    before every 10th, a cut after 5 tokens before every 25th, a 429 (Retry-After 0.1) every 40th.
    """
    ollama = st.sims["local"].url
    sem = asyncio.Semaphore(32)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def fault(kind: str, **fields: Any) -> None:
            async with session.post(ollama + "/_sim/faults",
                                    json={"faults": [{"kind": kind, **fields}]}) as r:
                assert r.status == 200

        async def one(i: int) -> None:
            async with sem:
                if i % 10 == 0:
                    await fault("status", status=500)
                if i % 25 == 0:
                    await fault("cut", after_tokens=5)
                    tally["cuts"] += 1
                if i % 40 == 0:
                    await fault("status", status=429, retry_after=0.1)
                stream = i % 5 == 0
                body = {"model": "gpt-oss-20b", "stream": stream,
                        "messages": [{"role": "user", "content": f"question {i % 97}"}]}
                async with session.post(st.url + "/v1/chat/completions", json=body) as r:
                    raw = await r.read()
                assert r.status == 200, raw[:300]
                complete = b'"finish_reason":"stop"' in raw
                if stream:
                    done, broken = b"data: [DONE]" in raw, b'data: {"error"' in raw
                    assert done != broken and done == complete, raw[-300:]
                    tally["broken"] += broken
                else:
                    assert complete, raw[:300]
                tally["ok"] += complete

        await asyncio.gather(*(one(i) for i in range(first, first + count)))


@pytest.mark.slow
def test_memory_flat_over_10000_requests_with_faults(e2e_bedrock: SimServer,
                                                     tmp_path: Path) -> None:
    # 32 slots on both sides: a retry holds its local slot through its backoff, and with 4
    # slots the backoffs alone would serialise the run.
    with SimServer(lambda: ollama_app(OllamaSimConfig(parallel=32))) as ollama:
        policy = fast_policy(ollama.url, e2e_bedrock.url)
        policy["backends"]["local"]["parallel"] = 32
        st = start_stack(policy, {"local": ollama, "bedrock": e2e_bedrock}, tmp_path)
        try:
            st.settle()
            tally = {"ok": 0, "broken": 0, "cuts": 0}
            started = time.monotonic()
            asyncio.run(_load(st, 0, 2000, tally))  # warm-up: caches, pools, allocator arenas
            st.wait_idle()
            warm = _rss_mib(st.router.proc.pid)
            asyncio.run(_load(st, 2000, 8000, tally))
            st.wait_idle()
            grown = _rss_mib(st.router.proc.pid) - warm
            assert grown < 20, f"router RSS grew {grown:.1f} MiB over 8,000 requests after warm-up"
            assert tally["ok"] + tally["broken"] == 10_000, tally
            assert tally["broken"] <= tally["cuts"], tally  # only a scripted cut breaks a stream
            assert time.monotonic() - started < 60
            st.settle()
        finally:
            st.router.stop()


# -- lifecycle: SIGTERM drains, reloads never drop a request -----------------------------------

@pytest.fixture(scope="module")
def slow_ollama() -> Iterator[SimServer]:
    """An Ollama whose streams take 24 x 0.15 s = 3.6 s."""
    with SimServer(lambda: ollama_app(OllamaSimConfig(parallel=4, token_delay_s=0.15))) as s:
        yield s


@pytest.fixture
def slow_stack(slow_ollama: SimServer, e2e_bedrock: SimServer, tmp_path: Path,
               request: pytest.FixtureRequest) -> Iterator[Stack]:
    env = getattr(request, "param", {})
    st = start_stack(fast_policy(slow_ollama.url, e2e_bedrock.url),
                     {"local": slow_ollama, "bedrock": e2e_bedrock}, tmp_path, env=env)
    st.reset_sims()
    yield st
    st.router.stop()


def _stream_in_background(st: Stack) -> tuple[threading.Thread, list[Outcome]]:
    """Start a slow stream and return once it holds its local slot."""
    result: list[Outcome] = []
    thread = threading.Thread(target=lambda: result.append(call(st.url, stream=True)),
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + 3
    while st.slots_in_use() == 0:
        assert time.monotonic() < deadline, "the stream never started"
        time.sleep(0.02)
    return thread, result


def _finish(thread: threading.Thread, result: list[Outcome], st: Stack) -> None:
    thread.join(15)
    assert result, "the stream in flight did not end"
    result[0].assert_complete("local")
    st.wait_idle()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("slow_stack", [{"ROUTER_GRACE_S": "10"}], indirect=True)
def test_sigterm_drains_in_flight_and_refuses_new_connections(slow_stack: Stack) -> None:
    st = slow_stack
    thread, result = _stream_in_background(st)
    sent = time.monotonic()
    st.router.proc.send_signal(signal.SIGTERM)
    while not _refused(st.router.port):
        assert time.monotonic() - sent < 2, "still accepting connections after SIGTERM"
        time.sleep(0.02)
    assert thread.is_alive(), "the stream should still be in flight"
    thread.join(15)
    assert result, "the stream in flight did not end"
    result[0].assert_complete("local")
    st.router.proc.wait(10 + 2)
    assert time.monotonic() - sent < 10, "did not exit within ROUTER_GRACE_S"


@pytest.mark.parametrize("slow_stack", [{"ROUTER_GRACE_S": "10"}], indirect=True)
def test_sigterm_exit_status_is_zero(slow_stack: Stack) -> None:
    slow_stack.router.proc.send_signal(signal.SIGTERM)
    assert slow_stack.router.proc.wait(12) == 0


def _sigterm_with_stream(st: Stack) -> tuple[Outcome, float]:
    """SIGTERM while a 3.6 s stream is in flight: (what the client saw, seconds to exit)."""
    thread, result = _stream_in_background(st)
    sent = time.monotonic()
    st.router.proc.send_signal(signal.SIGTERM)
    st.router.proc.wait(15)
    exited = time.monotonic() - sent
    thread.join(15)
    assert result, "the stream did not end"
    return result[0], exited


@pytest.mark.parametrize("slow_stack", [{"ROUTER_GRACE_S": "1"}], indirect=True)
def test_sigterm_stream_outliving_the_grace_is_not_presented_as_complete(
        slow_stack: Stack) -> None:
    out, exited = _sigterm_with_stream(slow_stack)
    assert exited < 1 + 1.5, f"exited {exited:.2f}s after SIGTERM with ROUTER_GRACE_S=1"
    assert out.status == 200 and 0 < out.tokens < 24, out.describe()
    assert not out.done and out.finish_reason is None, out.describe()


@pytest.mark.parametrize("slow_stack", [{"ROUTER_GRACE_S": "1"}], indirect=True)
def test_sigterm_stream_outliving_the_grace_ends_with_in_band_error(slow_stack: Stack) -> None:
    out, _ = _sigterm_with_stream(slow_stack)
    assert out.transport_error is None, out.describe()
    assert out.stream_error is not None, out.describe()


@pytest.mark.parametrize("slow_stack", [{"ROUTER_GRACE_S": "0.5"}], indirect=True)
def test_sigterm_grace_below_one_second_is_honoured(slow_stack: Stack) -> None:
    _, exited = _sigterm_with_stream(slow_stack)
    assert exited < 0.5 + 1.5, f"exited {exited:.2f}s after SIGTERM with ROUTER_GRACE_S=0.5"


def _write_policy(path: Path, policy: dict[str, Any] | str) -> None:
    """Replace the policy file atomically (as config management does)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(policy if isinstance(policy, str) else yaml.safe_dump(policy))
    os.replace(tmp, path)


def _cloud_first(st: Stack) -> dict[str, Any]:
    """A different valid policy: standard traffic to Bedrock, on a route named 'cloud-only'."""
    policy = fast_policy(st.sims["local"].url, st.sims["bedrock"].url)
    policy["routes"][-1] = {"name": "cloud-only", "targets": ["bedrock"]}
    return policy


def _reloads(st: Stack) -> dict[str, int]:
    return st.status()["policy_reloads"]  # type: ignore[no-any-return]


def _wait_reloads(st: Stack, key: str, count: int, timeout: float = 4.0) -> None:
    deadline = time.monotonic() + timeout
    while _reloads(st)[key] < count:
        assert time.monotonic() < deadline, f"no {key} reload: {st.status()}"
        time.sleep(0.05)


def _route(st: Stack) -> str:
    """The route the policy in force picks for a standard request (explain sends nothing)."""
    r = HTTP.post(st.url + "/v1/router/explain", json={
        "model": "gpt-oss-20b", "messages": [{"role": "user", "content": PROMPT}]})
    assert r.status_code == 200, r.text
    return str(r.json()["route"])


def _on_new_policy(st: Stack) -> None:
    """New requests follow the new policy: route 'cloud-only', served by Bedrock."""
    assert _route(st) == "cloud-only"
    out = call(st.url, stream=True)
    out.assert_complete("bedrock")
    assert out.headers["x-router-route"] == "cloud-only"


def test_reload_on_file_change_keeps_the_stream_in_flight(slow_stack: Stack) -> None:
    st = slow_stack
    thread, result = _stream_in_background(st)
    _write_policy(st.router.policy_path, _cloud_first(st))
    _wait_reloads(st, "ok", 1)
    assert st.slots_in_use() == 1 and thread.is_alive(), "reloaded after the stream ended"
    _on_new_policy(st)
    _finish(thread, result, st)
    assert _reloads(st) == {"ok": 1, "failed": 0}


def test_invalid_policy_is_refused_and_the_old_one_stays(slow_stack: Stack) -> None:
    st = slow_stack
    thread, result = _stream_in_background(st)
    bad = fast_policy(st.sims["local"].url, st.sims["bedrock"].url)
    bad["routes"][0]["targets"] = ["bedrock"]  # private requests to the cloud: must be refused
    _write_policy(st.router.policy_path, bad)
    _wait_reloads(st, "failed", 1)
    status = st.status()
    assert status["policy_reloads"] == {"ok": 0, "failed": 1}
    assert "not local" in (status["last_reload_error"] or ""), status
    assert _route(st) == "default"
    _finish(thread, result, st)
    _write_policy(st.router.policy_path, "routes: [\n")  # broken YAML: refused as well
    _wait_reloads(st, "failed", 2)
    _write_policy(st.router.policy_path, _cloud_first(st))  # a good one clears the error
    _wait_reloads(st, "ok", 1)
    assert st.status()["last_reload_error"] is None
    _on_new_policy(st)


@pytest.mark.parametrize("slow_stack", [{"ROUTER_WATCH_POLICY": "false"}], indirect=True)
def test_sighup_reloads(slow_stack: Stack) -> None:
    st = slow_stack
    _write_policy(st.router.policy_path, _cloud_first(st))
    time.sleep(1.3)  # longer than the watcher's interval: nothing watches the file here
    assert _reloads(st) == {"ok": 0, "failed": 0} and _route(st) == "default"
    st.router.proc.send_signal(signal.SIGHUP)
    _wait_reloads(st, "ok", 1)
    _on_new_policy(st)


@pytest.mark.parametrize("slow_stack", [{"ROUTER_WATCH_POLICY": "false",
                                         "ROUTER_ADMIN_KEY": "s3cret-admin"}], indirect=True)
def test_admin_reload_needs_the_admin_key(slow_stack: Stack) -> None:
    st = slow_stack
    _write_policy(st.router.policy_path, _cloud_first(st))
    for headers in ({}, {"authorization": "Bearer wrong"}, {"x-api-key": "wrong"}):
        r = HTTP.post(st.url + "/admin/reload", headers=headers)
        assert r.status_code == 401, r.text
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert _reloads(st) == {"ok": 0, "failed": 0} and _route(st) == "default"
    r = HTTP.post(st.url + "/admin/reload", headers={"authorization": "Bearer s3cret-admin"})
    assert r.status_code == 200 and r.json()["reloaded"] is True, r.text
    assert _reloads(st)["ok"] == 1
    _on_new_policy(st)
    _write_policy(st.router.policy_path, "routes: [\n")
    r = HTTP.post(st.url + "/admin/reload", headers={"authorization": "Bearer s3cret-admin"})
    assert r.status_code == 400 and r.json()["reloaded"] is False, r.text
    assert _reloads(st) == {"ok": 1, "failed": 1} and _route(st) == "cloud-only"


# -- the suite's invariants (runs last in this module) -----------------------------------------

def test_suite_invariants(stacks: Stacks) -> None:
    """Zero truncated answers presented as complete, zero private requests on a cloud backend
    (by every audit log this suite's routers wrote), zero local slots held or queued."""
    assert TRUNCATED_SUCCESSES == []
    assert AUDIT_LOGS
    for path in AUDIT_LOGS:
        assert private_on_cloud(path) == 0, path
    for st in stacks.made.values():
        st.reset_sims()
        st.wait_idle()
        for entry in st.status()["backends"].values():
            for queue in (entry.get("queues") or {}).values():
                assert queue["in_flight"] == 0 and queue["queued"] == 0, entry
