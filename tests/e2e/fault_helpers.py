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

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.policy.schema import RetryConfig, Route, StreamConfig
from router_simulators.script import FAULT_KINDS
from tests.e2e.client import SERVED_MODEL, TRUNCATED_SUCCESSES, Outcome, call, expected_answer
from tests.e2e.conftest import Stack

TTFT_S, IDLE_S, READ_S, DEADLINE_S = 1.0, 0.5, 1.0, 10.0
ATTEMPTS = 3
OUTAGE_S, RECOVERY_BOUND_S = 3.0, 1.5

BIG_PROMPT = "Summarise this log line please. " * 1300  # ~10K tokens > local 8192 window


# -- which of issue 12's features are in this checkout (new contract vs the one before it) ------
# Each is read from the code, so a test states the new contract as soon as its feature lands and
# the contract before it until then (a case the new contract needs is xfail, strict, meanwhile).

_ROUTER = Path(__file__).resolve().parents[2] / "router"
# executor: silence and timeouts not retried on the same backend, first tokens hedged
HEDGE = any("hedge_after_s" in m.model_fields for m in (Route, StreamConfig, RetryConfig))
# mid-stream continuation of a cut, stalled, malformed or errored stream on another backend
CONTINUATION = "max_continuations" in StreamConfig.model_fields
# simulators: a fallback that rejects or echoes prefill, a primary that flaps
SIM_PREFILL = {"reject_prefill", "echo_prefill"} <= set(FAULT_KINDS)
SIM_FLAP = "flap" in FAULT_KINDS
# backends: Ollama's context-window refusal mapped to context_length_exceeded (moves to a
# larger window instead of a plain 400)
OLLAMA_CONTEXT = any("BackendContextExceeded" in (_ROUTER / "backends" / f).read_text()
                     for f in ("ollama.py", "ollama_wire.py"))

FEATURE_REASON = {
    "hedge": "issue 12 executor: silence not retried on the same backend, hedged first token",
    "continuation": "issue 12 stream continuation (stream.max_continuations) not landed",
    "sim_prefill": "issue 12 simulators: reject_prefill/echo_prefill fault kinds not landed",
    "sim_flap": "issue 12 simulators: flap fault kind not landed",
    "ollama_context": "issue 12 backends: Ollama context-length mapping not landed",
}
FEATURES = {"hedge": HEDGE, "continuation": CONTINUATION, "sim_prefill": SIM_PREFILL,
            "sim_flap": SIM_FLAP, "ollama_context": OLLAMA_CONTEXT}


def needs(*features: str) -> list[pytest.MarkDecorator]:
    """xfail (strict) while a feature the new contract needs is not in this checkout."""
    missing = [f for f in features if not FEATURES[f]]
    if not missing:
        return []
    reason = "; ".join(FEATURE_REASON[f] for f in missing)
    return [pytest.mark.xfail(strict=True, reason=reason)]


def assert_whole_answer(out: Outcome, backends: tuple[str, ...]) -> None:
    """The complete answer (as one of `backends` scripts it: a continued stream ends as its
    continuing backend writes it), served under one of them, naming the model that served it
    (`x-router-backend` and `model` agree); a stream ends in [DONE] with no in-band error."""
    assert out.status == 200, out.describe()
    assert out.backend in backends, out.describe()
    assert out.model == SERVED_MODEL[out.backend or ""], out.describe()
    assert out.finish_reason == "stop", out.describe()
    assert out.content in {expected_answer(b) for b in backends}, out.describe()
    assert out.transport_error is None, out.describe()
    if out.stream:
        assert out.done and out.stream_error is None, out.describe()


# Continued streams whose whole answer `client.py`'s truncation check mistook for a truncated
# one (it compares with the first backend's script only; see `call_plan`).
CONTINUED_ELSEWHERE: list[str] = []


def call_plan(st: Stack, *, stream: bool, **kw: Any) -> Outcome:
    """`call`, for a request whose stream may be continued on the plan's other backend: its
    answer then ends as the continuing backend scripts it (the SageMaker simulator's ends
    with a suffix the others lack) while `x-router-backend` names the first one, which
    `client.py`'s check reports as truncated. Such an answer, whole by `assert_whole_answer`'s
    criteria, is taken off `TRUNCATED_SUCCESSES` (and kept in `CONTINUED_ELSEWHERE`); any
    other stays there for the suite's invariants."""
    before = len(TRUNCATED_SUCCESSES)
    out = call(st.url, stream=stream, **kw)
    others = [b for b in (st.primary, st.fallback) if b != out.backend]
    if (len(TRUNCATED_SUCCESSES) == before + 1 and out.stream and out.status == 200
            and out.done and out.finish_reason == "stop" and out.stream_error is None
            and out.transport_error is None and "text" not in kw
            and out.content in {expected_answer(b) for b in others}):
        CONTINUED_ELSEWHERE.append(TRUNCATED_SUCCESSES.pop())
    return out


def assert_continued_or_broken(st: Stack, out: Outcome, *, tokens: int,
                               code: str = "stream_error") -> None:
    """A stream broken after `tokens` tokens reached the client. With continuation: the whole
    answer, the primary tried once and the fallback once (continuing it). Without: one in-band
    error, no finish, no [DONE], the primary tried once."""
    if CONTINUATION:
        assert_whole_answer(out, (st.primary, st.fallback))
        assert attempts(st) == (1, 1), out.describe()
    else:
        out.assert_broken_stream(st.primary, tokens=tokens, code=code)
        assert attempts(st) == (1, 0), out.describe()


def outcome_label(out: Outcome, backends: tuple[str, ...] = ()) -> str:
    """What the client got, in a word or three (the fault table's `outcome`)."""
    if out.transport_error:
        return "connection broken"
    if out.status != 200:
        code = (out.body or {}).get("error", {}).get("code") if out.body else None
        return f"error {out.status} {code}"
    if out.stream_error is not None:
        return f"broken stream ({out.stream_error['error'].get('code')})"
    if out.finish_reason == "content_filter":
        return "finish_reason content_filter"
    whole = out.finish_reason == "stop" and (out.done or not out.stream)
    if whole and out.content in {expected_answer(b) for b in backends or (out.backend or "",)}:
        via = out.backend if out.content == expected_answer(out.backend or "") else next(
            b for b in backends if out.content == expected_answer(b))
        return f"complete from {out.backend}" + (f" (ends as {via}'s)" if via != out.backend
                                                 else "")
    return f"other (finish={out.finish_reason}, done={out.done})"


# -- the fault table: one row per case, written at session end when HR_FAULT_TABLE is set --

DIRECTION = {"local": "Ollama -> Bedrock", "bedrock": "Bedrock -> SageMaker",
             "sagemaker": "SageMaker -> Bedrock"}
SCALE = 10.0  # per-request timings run at 1/10 of real time
OUTAGE_SCALE = 20.0  # outages and flaps at 1/20


@dataclass(frozen=True)
class Row:
    direction: str
    mode: str  # stream | whole | both
    fault: str
    outcome: str
    attempts: str  # "primary/fallback" requests the simulators received
    seconds: float  # real time, as run here
    unscaled_s: float  # what it stands for at production timings

    @property
    def cells(self) -> list[str]:
        return [self.direction, self.mode, self.fault, self.outcome, self.attempts,
                f"{self.seconds:.2f}", f"{self.unscaled_s:.1f}"]


TABLE: list[Row] = []


def record(st: Stack, stream: bool | None, fault: str, out: Outcome | str,
           seconds: float | None = None, *, scale: float = SCALE, fixed_s: float = 0.0,
           backends: tuple[str, ...] = ()) -> None:
    """Add a row to the session's fault table. `fixed_s`: the part of the time that is not
    scaled (a Retry-After hint kept at its real value)."""
    label = out if isinstance(out, str) else outcome_label(out, backends or (
        st.primary, st.fallback))
    secs = seconds if seconds is not None else (out.elapsed if isinstance(out, Outcome) else 0)
    p, f = attempts(st)
    mode = "both" if stream is None else ("stream" if stream else "whole")
    fixed = min(fixed_s, secs)
    TABLE.append(Row(DIRECTION[st.primary], mode, fault, label, f"{p}/{f}", secs,
                     (secs - fixed) * scale + fixed))


def write_table(path: str) -> None:
    head = ["direction", "mode", "fault", "outcome", "attempts (primary/fallback)",
            "seconds (real)", "seconds (unscaled)"]
    lines = [
        "# Fault suite table",
        "",
        f"Per-request timings run at 1/{SCALE:g} of production time, outages and flaps at "
        f"1/{OUTAGE_SCALE:g}; `seconds (unscaled)` multiplies back (a Retry-After hint is kept "
        "at its real 2 s and not multiplied). Features in this checkout: "
        + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in FEATURES.items()) + ".",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r.cells) + " |" for r in TABLE),
        "",
    ]
    Path(path).write_text("\n".join(lines))


def table_path() -> str | None:
    return os.environ.get("HR_FAULT_TABLE") or None


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
