"""Seeded request traces for the routing benchmark: steady Poisson and bursty arrivals.

A trace is a list of `TraceRequest` in arrival order. Each carries whether it is private
(`X-Privacy: private`), its prompt size (a few long prompts), its answer length drawn from a
heavy-tailed `LengthSpec` (lognormal or Pareto, capped), and for a minority of requests the
`max_tokens` a client set (most real clients set none; the answer is then capped by it).

- `poisson_trace`: steady Poisson arrivals at one rate;
- `bursty_trace`: a two-state Markov-modulated Poisson process, calm at `calm_rate` and
  bursting at `burst_rate`, exponential sojourns whose means give the burst fraction that makes
  the long-run average `mean_rate` (`mmpp_sojourns`).

Everything is drawn from one `random.Random(seed)`, so a seed gives the same trace on every
machine. The benchmark passes the same `LengthSpec` and seed to simulators that can draw
answer lengths themselves (`--answer-tokens`); the oracle replays the trace's own lengths.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from enum import StrEnum

LONG_PROMPT_TEXT = "Context paragraph about local inference, queueing and GPUs. "  # ~12 tokens


class Dist(StrEnum):
    FIXED = "fixed"
    LOGNORMAL = "lognormal"
    PARETO = "pareto"


@dataclass(frozen=True)
class LengthSpec:
    """`fixed[:N]`, `lognormal:MEDIAN:SIGMA[:MAX]` or `pareto:MIN:ALPHA[:MAX]` (tokens)."""

    dist: Dist
    a: float = 0.0  # fixed: N; lognormal: median; pareto: minimum
    b: float = 0.0  # lognormal: sigma; pareto: alpha
    cap: int | None = None

    @classmethod
    def parse(cls, text: str) -> LengthSpec:
        parts = text.split(":")
        dist = Dist(parts[0])
        nums = [float(x) for x in parts[1:]]
        if dist is Dist.FIXED:
            return cls(dist, nums[0] if nums else 0.0)
        if len(nums) not in (2, 3) or nums[0] <= 0 or nums[1] <= 0:
            raise ValueError(f"bad length spec {text!r}")
        return cls(dist, nums[0], nums[1], int(nums[2]) if len(nums) == 3 else None)

    def render(self) -> str:
        if self.dist is Dist.FIXED:
            return "fixed" if not self.a else f"fixed:{self.a:g}"
        tail = f":{self.cap}" if self.cap is not None else ""
        return f"{self.dist.value}:{self.a:g}:{self.b:g}{tail}"

    def draw(self, rng: random.Random) -> int:
        if self.dist is Dist.FIXED:
            return max(1, int(self.a))
        if self.dist is Dist.LOGNORMAL:
            x = rng.lognormvariate(math.log(self.a), self.b)
        else:
            x = self.a * rng.paretovariate(self.b)
        n = max(1, int(round(x)))
        return min(n, self.cap) if self.cap is not None else n

    def mean(self, samples: int = 20000, seed: int = 1) -> float:
        rng = random.Random(seed)
        return sum(self.draw(rng) for _ in range(samples)) / samples


@dataclass(frozen=True)
class Mix:
    """What each request looks like, apart from when it arrives."""

    answer: LengthSpec
    private_share: float = 0.24
    long_prompt_share: float = 0.03
    long_prompt_tokens: int = 3000
    max_tokens_share: float = 0.1  # requests whose client sets max_tokens
    max_tokens_choices: tuple[int, ...] = (64, 256, 1024)


@dataclass(frozen=True)
class TraceRequest:
    at_s: float
    private: bool
    prompt: str
    answer_tokens: int  # the length this request's answer has (after max_tokens)
    max_tokens: int | None = None
    long_prompt: bool = False
    prompt_tokens: int = 16  # approximate, for the oracle's prefill time

    def with_answer(self, tokens: int) -> TraceRequest:
        return replace(self, answer_tokens=tokens)


_PROMPTS = ("Summarise why local inference matters for {i}.",
            "Give one tip about GPU scheduling, case {i}.",
            "What is queueing delay? Example {i}.")


def _request(rng: random.Random, at: float, i: int, mix: Mix) -> TraceRequest:
    private = rng.random() < mix.private_share
    long_prompt = rng.random() < mix.long_prompt_share
    answer = mix.answer.draw(rng)
    max_tokens = None
    if rng.random() < mix.max_tokens_share:
        max_tokens = rng.choice(mix.max_tokens_choices)
        answer = min(answer, max_tokens)
    prompt = _PROMPTS[i % len(_PROMPTS)].format(i=i)
    tokens = 16
    if long_prompt:
        reps = max(1, mix.long_prompt_tokens // 12)
        prompt = LONG_PROMPT_TEXT * reps + prompt
        tokens = reps * 12 + 16
    return TraceRequest(at, private, prompt, answer, max_tokens, long_prompt, tokens)


def poisson_trace(rate_per_s: float, duration_s: float, mix: Mix,
                  seed: int) -> list[TraceRequest]:
    rng = random.Random(seed)
    out: list[TraceRequest] = []
    t = rng.expovariate(rate_per_s)
    while t < duration_s:
        out.append(_request(rng, t, len(out), mix))
        t += rng.expovariate(rate_per_s)
    return out


def mmpp_sojourns(calm_rate: float, burst_rate: float, mean_rate: float,
                  mean_burst_s: float) -> tuple[float, float]:
    """Mean calm and burst sojourns (s) whose burst fraction makes the average `mean_rate`."""
    if not calm_rate < mean_rate < burst_rate:
        raise ValueError("need calm_rate < mean_rate < burst_rate")
    frac = (mean_rate - calm_rate) / (burst_rate - calm_rate)
    return mean_burst_s * (1 - frac) / frac, mean_burst_s


def bursty_trace(calm_rate: float, burst_rate: float, mean_rate: float, duration_s: float,
                 mix: Mix, seed: int, mean_burst_s: float = 2.0) -> list[TraceRequest]:
    """Markov-modulated Poisson: exponential calm/burst sojourns, Poisson within each."""
    rng = random.Random(seed)
    mean_calm_s, _ = mmpp_sojourns(calm_rate, burst_rate, mean_rate, mean_burst_s)
    out: list[TraceRequest] = []
    t, bursting = 0.0, False
    state_end = rng.expovariate(1 / mean_calm_s)
    while t < duration_s:
        rate = burst_rate if bursting else calm_rate
        nxt = t + rng.expovariate(rate)
        if nxt >= state_end:  # memoryless: restart the draw in the next state
            t, bursting = state_end, not bursting
            state_end = t + rng.expovariate(1 / (mean_burst_s if bursting else mean_calm_s))
            continue
        t = nxt
        if t < duration_s:
            out.append(_request(rng, t, len(out), mix))
    return out


def trace_summary(trace: list[TraceRequest], duration_s: float) -> dict[str, object]:
    answers = sorted(r.answer_tokens for r in trace)
    n = len(trace)
    return {
        "requests": n, "rate_per_s": round(n / duration_s, 2) if duration_s else None,
        "private": sum(r.private for r in trace),
        "long_prompts": sum(r.long_prompt for r in trace),
        "with_max_tokens": sum(r.max_tokens is not None for r in trace),
        "answer_tokens_mean": round(sum(answers) / n, 1) if n else None,
        "answer_tokens_p50": answers[n // 2] if n else None,
        "answer_tokens_p99": answers[min(n - 1, int(0.99 * n))] if n else None,
        "answer_tokens_max": answers[-1] if n else None,
    }
