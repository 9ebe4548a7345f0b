"""Pass criteria, time scale and parametrisation shared by the fault suite (`test_faults.py`,
`test_fault_streams.py`, `test_outage.py`, `test_lifecycle.py`).

Each fault runs with local Ollama as primary and Bedrock as fallback, and, where it applies, with
a cloud backend as primary (Bedrock -> SageMaker, SageMaker -> Bedrock). Every test states its
pass criteria explicitly:
- the client call ended within a bound (3x the expected time, at least 1.5 s: slack for a
  loaded 2-core CI machine) and always inside the request deadline (`within`);
- a complete answer (the simulator's whole scripted answer, `finish_reason`, `[DONE]` for
  streams, the logical model in `model`, the serving backend in `x-router-backend`) or a clean
  OpenAI-shaped error (before output: status + `{"error": {...}}`; after output: one in-band
  `data: {"error": ...}` event and neither a `finish_reason` nor `[DONE]`);
- attempts counted on the simulators (`GET /_sim/stats` `requests`, primary and fallback:
  `attempts`);
- no truncated answer presented as complete (checked on every call, see `client.py`);
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
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from tests.e2e.client import Outcome
from tests.e2e.conftest import Stack

TTFT_S, IDLE_S, READ_S, DEADLINE_S = 1.0, 0.5, 1.0, 10.0
ATTEMPTS = 3
OUTAGE_S, RECOVERY_BOUND_S = 3.0, 1.5

BIG_PROMPT = "Summarise this log line please. " * 1300  # ~10K tokens > local 8192 window


def within(out: Outcome, expected_s: float) -> None:
    """Ended within 3x the expected time (at least 1.5 s), and before the deadline."""
    limit = min(max(1.5, 3 * expected_s), DEADLINE_S)
    assert out.elapsed < limit, f"took {out.elapsed:.2f}s > {limit:.2f}s: {out.describe()}"


def attempts(st: Stack) -> tuple[int, int]:
    """Requests the primary's and the fallback's simulators received."""
    return st.requests(st.primary), st.requests(st.fallback)


def modes(*spec: str) -> pytest.MarkDecorator:
    """Parametrize (stack, stream) from ids like 'local-stream', 'bedrock-whole'."""
    params = [pytest.param(s.split("-")[0], s.endswith("-stream"), id=s) for s in spec]
    return pytest.mark.parametrize(("stack", "stream"), params, indirect=["stack"])


ALL = ("local-whole", "local-stream", "bedrock-whole", "bedrock-stream", "sagemaker-whole",
       "sagemaker-stream")
STREAMS = ("local-stream", "bedrock-stream", "sagemaker-stream")


def audit_record(st: Stack, request_id: str) -> dict[str, Any]:
    """The request's audit line (a stream's is written just after its last byte: poll)."""
    deadline = time.monotonic() + 3
    while True:
        for line in st.audit_path.read_bytes().splitlines():
            rec = orjson.loads(line)
            if rec["request_id"] == request_id:
                return rec  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"no audit record for {request_id}"
        time.sleep(0.02)
