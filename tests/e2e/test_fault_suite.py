"""The fault suite's matrix (issue 12, item 8): every scripted fault for which a healthy
fallback exists, in both directions (Ollama -> Bedrock, Bedrock -> SageMaker), streamed and
whole, ends with the client holding the complete answer, within its time budget, naming the
model that served it; a content-filter rejection is a clean error; a private request is never
sent to a cloud backend, whatever the local fault.

Each case records a row of the session's fault table (`fault_helpers.record`; written as
markdown to `$HR_FAULT_TABLE` at session end). A case whose contract needs a feature of issue 12
that this checkout does not have yet is xfail (strict) until it lands (`fault_helpers.needs`,
read from the code). Timings are scaled as `fault_helpers.py` describes (1/10; the flap 1/20):
"a silent upstream answered in under 15 s" is under 1.5 s here.

The older per-fault modules (`test_faults.py`, `test_fault_streams.py`) keep the finer points
(metrics, audit records, the SDK's view, the sagemaker-primary stack); this one is the matrix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.client import PROMPT
from tests.e2e.conftest import DIR, Stack
from tests.e2e.fault_helpers import (
    DEADLINE_S,
    HEDGE,
    IDLE_S,
    OUTAGE_S,
    OUTAGE_SCALE,
    READ_S,
    RECOVERY_BOUND_S,
    SIM_PREFILL,
    assert_whole_answer,
    attempts,
    call_plan,
    needs,
    record,
    within,
)

SILENT_BOUND_S = 1.5  # "a silent upstream in under 15 s with the default hedge", at 1/10


@dataclass(frozen=True)
class Case:
    """One fault: what is scripted on the primary (and on the fallback), what it needs."""

    id: str
    label: str  # the fault, as the table names it
    primary: dict[str, Any]
    fallback: dict[str, Any] | None = None
    budget_s: float = 0.3  # expected time (scaled), checked with `within` (3x slack)
    attempts: tuple[int, int] | None = None  # (primary, fallback) when the contract fixes it
    needs: tuple[str, ...] = ()
    hard_bound_s: float | None = None  # an absolute bound from the issue (scaled)
    fixed_s: float = 0.0  # unscaled part of the time (a Retry-After hint)
    streams_only: bool = False
    skip: frozenset[tuple[str, bool]] = field(default_factory=frozenset)  # (primary, stream)


# Stream faults the Bedrock simulator does not script on a whole (non-stream) answer.
_NO_BEDROCK_WHOLE = frozenset({("bedrock", False)})
_CONT = ("continuation",)

CASES = [
    Case("429-hint", "429 with Retry-After: 2 (once)",
         {"kind": "status", "status": 429, "retry_after": 2}, budget_s=2.0, attempts=(2, 0),
         fixed_s=2.0),
    Case("429-nohint", "429 without a hint (persistent)",
         {"kind": "status", "status": 429, "times": -1}, budget_s=0.4, attempts=(3, 1)),
    Case("500-once", "500 once", {"kind": "status", "status": 500}, attempts=(2, 0)),
    Case("503-persistent", "503 persistent", {"kind": "status", "status": 503, "times": -1},
         budget_s=0.4, attempts=(3, 1)),
    Case("reset", "reset before headers (persistent)", {"kind": "reset", "times": -1},
         budget_s=0.4, attempts=(3, 1)),
    Case("silent", "no response at all (persistent)", {"kind": "hang", "times": -1},
         budget_s=READ_S, attempts=(1, 1), needs=("hedge",), hard_bound_s=SILENT_BOUND_S),
    Case("slow-first-token", "first token after 20 s (persistent)",
         {"kind": "slow_first_token", "delay_s": 2.0, "times": -1}, budget_s=READ_S,
         attempts=(1, 1), needs=("hedge",), hard_bound_s=SILENT_BOUND_S),
    Case("cut", "stream cut after 40 of 60 tokens", {"kind": "cut", "after_tokens": 16},
         needs=_CONT, skip=_NO_BEDROCK_WHOLE),
    Case("stall", "stream stall after 20 tokens", {"kind": "stall", "after_tokens": 8},
         budget_s=IDLE_S + 0.2, needs=_CONT, skip=_NO_BEDROCK_WHOLE),
    Case("malformed", "malformed chunk after 20 tokens",
         {"kind": "malformed", "after_tokens": 8}, needs=_CONT, skip=_NO_BEDROCK_WHOLE),
    Case("midstream-error", "in-band vendor error after 20 tokens",
         {"kind": "midstream_error", "after_tokens": 8}, needs=_CONT, streams_only=True),
    Case("no-terminator", "missing terminator", {"kind": "no_terminator"}, needs=_CONT,
         skip=_NO_BEDROCK_WHOLE),
    Case("context", "context length exceeded", {"kind": "context_exceeded"},
         attempts=(1, 1), needs=("ollama_context",)),
]

# On a router whose cloud backends declare prefill (`prefill_stack`): continued by prefill (the
# simulators continue a trailing assistant message once issue 12's simulators landed).
_PREFILL = ("continuation", "sim_prefill")
PREFILL_CASES = [
    Case("cut-prefill", "stream cut, continued by prefill", {"kind": "cut", "after_tokens": 16},
         needs=_PREFILL, streams_only=True),
    Case("reject-prefill", "stream cut, fallback rejects prefill",
         {"kind": "cut", "after_tokens": 16}, {"kind": "reject_prefill", "times": -1},
         needs=_PREFILL, streams_only=True),
    Case("echo-prefill", "stream cut, fallback echoes the prefill",
         {"kind": "cut", "after_tokens": 16}, {"kind": "echo_prefill", "times": -1},
         needs=_PREFILL, streams_only=True),
]


def _needs_here(case: Case, primary: str, stream: bool) -> tuple[str, ...]:
    """The features this (direction, mode) needs: a whole answer broken mid-body is retried
    today (nothing reached the client), and Ollama skips one malformed line on its own."""
    if case.needs == _CONT and (not stream or (case.id == "malformed" and primary == "local")):
        return ()
    if case.id == "context" and primary != "local":
        return ()
    return case.needs


def _params() -> list[Any]:
    params = []
    for primary in ("local", "bedrock"):
        for case in CASES:
            for stream in (False, True):
                if (case.streams_only and not stream) or (primary, stream) in case.skip:
                    continue
                mode = "stream" if stream else "whole"
                params.append(pytest.param(
                    primary, stream, case, id=f"{primary}-{mode}-{case.id}",
                    marks=needs(*_needs_here(case, primary, stream))))
    return params


@pytest.mark.parametrize(("stack", "stream", "case"), _params(), indirect=["stack"])
def test_fault_gets_the_complete_answer(stack: Stack, stream: bool, case: Case) -> None:
    stack.fault(stack.primary, **case.primary)
    if case.fallback:
        stack.fault(stack.fallback, **case.fallback)
    out = call_plan(stack, stream=stream)
    backends = (stack.primary, stack.fallback)
    if case.id == "context" and stack.primary == "bedrock":
        # Bedrock's 128K window -> SageMaker's 32K is no larger: no healthy fallback for it,
        # so the context error is final, once, and clean.
        record(stack, stream, case.label + " (no larger window)", out)
        if out.status == 400 and out.error.get("code") == "backend_rejected" and not stream:
            # exactly today's gap, nothing else: a small request's ValidationException
            pytest.xfail("issue 12 backends: Bedrock's whole-answer context error on a small "
                         "prompt maps to backend_rejected, not context_length_exceeded")
        out.assert_clean_error(400, code="context_length_exceeded")
        assert attempts(stack) == (1, 0)
        within(out, 0.3)
        return
    record(stack, stream, case.label, out, fixed_s=case.fixed_s, backends=backends)
    assert_whole_answer(out, backends)
    within(out, case.budget_s)
    if case.hard_bound_s is not None:
        assert out.elapsed < case.hard_bound_s, out.describe()
    expected = case.attempts
    if case.needs == _CONT:
        if case.id == "malformed" and stack.primary == "local" and stream:
            expected = (1, 0)  # the bad line is skipped on the same attempt
        elif stream:
            expected = (1, 1)  # broken once, continued on the fallback
        else:  # a whole answer broken mid-body is retried; a stalled one is silence
            expected = (1, 1) if case.id == "stall" and HEDGE else (2, 0)
    if case.id == "429-hint" and HEDGE and out.backend == stack.fallback:
        expected = (1, 1)  # hedged after its floor (1 s), before the 2 s hint ran out
    if expected is not None:
        assert attempts(stack) == expected, out.describe()


# Without the simulators' prefill support a declared-prefill fallback answers the prefilled
# request from scratch, which the router (trusting the declaration) appends: not a case to run.
_NO_SIM_PREFILL = [] if SIM_PREFILL else [pytest.mark.skip(
    reason="issue 12 simulators: prefill continuation, reject_prefill and echo_prefill")]


@pytest.mark.parametrize(("prefill_stack", "case"), [
    pytest.param(p, c, id=f"{p}-stream-{c.id}", marks=[*_NO_SIM_PREFILL, *needs(*c.needs)])
    for p in ("local", "bedrock") for c in PREFILL_CASES], indirect=["prefill_stack"])
def test_prefill_continuation_gets_the_complete_answer(prefill_stack: Stack, case: Case) -> None:
    """The fallback continues the delivered text (an echo of it skipped); one that refuses the
    prefill regenerates instead, its answer checked against what was delivered."""
    st = prefill_stack
    st.fault(st.primary, **case.primary)
    if case.fallback:
        st.fault(st.fallback, **case.fallback)
    out = call_plan(st, stream=True, headers={DIR: st.primary})
    record(st, True, case.label + " (prefill declared)", out)
    assert_whole_answer(out, (st.primary, st.fallback))
    within(out, case.budget_s)
    primary, fallback = attempts(st)
    assert primary == 1 and fallback in (1, 2), out.describe()  # a refused prefill: 2


# -- a primary that flaps for 60 s (3 s at 1/20) -----------------------------------------------

@pytest.mark.parametrize("stack", [
    pytest.param(p, id=p, marks=needs("sim_flap")) for p in ("local", "bedrock")],
    indirect=True)
def test_flapping_primary_keeps_answers_whole(stack: Stack) -> None:
    """503 on inference for the flap while probes answer: every request of the flap (streamed
    and whole, alternating) gets the complete answer; back on the primary soon after."""
    stack.fault(stack.primary, "flap", duration_s=OUTAGE_S)
    start = time.monotonic()
    worst = {False: 0.0, True: 0.0}
    n = 0
    while time.monotonic() - start < OUTAGE_S + 0.3:
        stream = n % 2 == 1
        out = call_plan(stack, stream=stream)
        assert_whole_answer(out, (stack.primary, stack.fallback))
        within(out, 0.6)
        worst[stream] = max(worst[stream], out.elapsed)
        n += 1
        time.sleep(0.05)
    deadline = time.monotonic() + RECOVERY_BOUND_S + 1.0
    while (out := call_plan(stack, stream=False)).backend != stack.primary:
        assert_whole_answer(out, (stack.primary, stack.fallback))
        assert time.monotonic() < deadline, "not back on the primary after the flap"
        time.sleep(0.05)
    for stream in (False, True):
        record(stack, stream, f"primary flaps for 60 s ({OUTAGE_S:g} s at 1/{OUTAGE_SCALE:g}; "
               f"{n} requests, the slowest one's time)",
               f"{n // 2 + (n % 2 if not stream else 0)} complete", worst[stream])


# -- a content-filter rejection is a clean error, not retried, not failed over ------------------

@pytest.mark.parametrize(("stack", "stream"), [
    pytest.param(p, s, id=f"{p}-{'stream' if s else 'whole'}")
    for p in ("local", "bedrock") for s in (False, True)], indirect=["stack"])
def test_content_filter_is_a_clean_error(stack: Stack, stream: bool) -> None:
    stack.fault(stack.primary, "content_filter", after_tokens=4)
    out = call_plan(stack, stream=stream)
    record(stack, stream, "content filter", out)
    assert attempts(stack) == (1, 0)
    within(out, 0.2)
    if out.status != 200:  # before any output: an OpenAI-shaped 400
        err = out.assert_clean_error(400)
        assert err["code"] == "content_filter" or "filter" in err["message"], out.describe()
    else:  # after some output: OpenAI's own way, finish_reason content_filter, never "stop"
        assert out.finish_reason == "content_filter" and out.stream_error is None, \
            out.describe()
        assert out.done or not stream, out.describe()


# -- private requests: whatever the local fault, never on a cloud backend -----------------------

PRIVATE_FAULTS = [
    ("silent", "no response at all", {"kind": "hang", "times": -1}),
    ("slow-first-token", "first token after 20 s",
     {"kind": "slow_first_token", "delay_s": 2.0, "times": -1}),
    ("cut", "stream cut after 40 of 60 tokens", {"kind": "cut", "after_tokens": 16}),
    ("stall", "stream stall after 20 tokens", {"kind": "stall", "after_tokens": 8}),
    ("no-terminator", "missing terminator", {"kind": "no_terminator"}),
]


@pytest.mark.parametrize("stack", ["local"], indirect=True)
@pytest.mark.parametrize(("fault", "stream"), [
    pytest.param(f, s, id=f"{'stream' if s else 'whole'}-{i}") for i, _, f in PRIVATE_FAULTS
    for s in (False, True) if s or i == "silent"])  # the rest only break streams
def test_private_request_never_hedged_or_continued_to_the_cloud(
        stack: Stack, fault: dict[str, Any], stream: bool) -> None:
    """Neither a hedge nor a continuation may take a private request off the local backend:
    it is answered there (whole), or ends as a clean error / a cleanly broken stream."""
    stack.fault("local", **fault)
    out = call_plan(stack, stream=stream, text=PROMPT, headers={"x-privacy": "private"})
    label = next(lbl for _, lbl, f in PRIVATE_FAULTS if f == fault)
    record(stack, stream, f"private request, {label}", out, backends=("local",))
    assert out.elapsed < DEADLINE_S, out.describe()
    if out.status == 200 and not out.stream_error:
        assert_whole_answer(out, ("local",))
    elif out.status == 200:
        out.assert_broken_stream("local", tokens=out.tokens, code=out.error["code"])
    else:
        out.assert_clean_error(out.status)
        assert out.status in (503, 504), out.describe()
    assert stack.requests("bedrock") == 0 and stack.requests("sagemaker") == 0
    assert stack.private_on_cloud() == 0
