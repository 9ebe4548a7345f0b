"""Simulated service time like a GPU's, shared by every simulator (issue 14 item 1).

- Answer length (`AnswerLengths`): `fixed` (the script's own short answer, the default),
  `lognormal:MEDIAN:SIGMA[:MAX]` or `pareto:MIN:ALPHA[:MAX]` content tokens, optionally per model
  (`MODEL=SPEC`; the flag `--answer-tokens` is repeatable). The draw is deterministic from the
  seed and the prompt text (`--seed`, default 0), so a replay is reproducible and a continuation
  (prefill) gets the same length as the original request. `max_tokens` / `num_predict` still
  caps the answer (`script.build_script`).
- Timing (`ServiceTime`): prefill takes `prompt_tokens / prefill_tps` seconds (`--prefill-tps`,
  0 = free); each token takes `token_delay_s * (1 + batch_slowdown * (busy_slots - 1))`
  (`--batch-slowdown`, default 0), as batched decoding slows each stream as more slots decode.

`add_flags` puts the four flags on a simulator's argparser; `from_args` reads them back. No
sleeps here: the simulators sleep what this module computes.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum


class LengthKind(Enum):
    FIXED = "fixed"
    LOGNORMAL = "lognormal"
    PARETO = "pareto"


@dataclass(frozen=True)
class LengthSpec:
    """One answer-length distribution (`fixed`, `lognormal:MEDIAN:SIGMA[:MAX]`,
    `pareto:MIN:ALPHA[:MAX]`)."""

    kind: LengthKind = LengthKind.FIXED
    a: float = 0.0  # lognormal median / pareto minimum
    b: float = 0.0  # lognormal sigma / pareto alpha
    cap: int | None = None

    @classmethod
    def parse(cls, spec: str) -> LengthSpec:
        name, *nums = spec.strip().split(":")
        try:
            kind = LengthKind(name)
        except ValueError:
            raise ValueError(f"unknown answer-length spec {spec!r} (fixed, "
                             "lognormal:MEDIAN:SIGMA[:MAX], pareto:MIN:ALPHA[:MAX])") from None
        if kind is LengthKind.FIXED:
            if nums:
                raise ValueError(f"'fixed' takes no parameters: {spec!r}")
            return cls()
        if len(nums) not in (2, 3):
            raise ValueError(f"{name} needs two parameters and an optional MAX: {spec!r}")
        a, b = float(nums[0]), float(nums[1])
        if a <= 0 or b <= 0:
            raise ValueError(f"{name} parameters must be positive: {spec!r}")
        cap = int(nums[2]) if len(nums) == 3 else None
        return cls(kind, a, b, cap)

    def draw(self, rng: random.Random) -> int | None:
        """Content tokens for one answer, or None for the script's own (fixed) length."""
        if self.kind is LengthKind.FIXED:
            return None
        if self.kind is LengthKind.LOGNORMAL:
            value = rng.lognormvariate(math.log(self.a), self.b)
        else:
            value = self.a * rng.paretovariate(self.b)
        n = max(1, round(value))
        return min(n, self.cap) if self.cap is not None else n


@dataclass
class AnswerLengths:
    """Per-model answer-length specs and the seed they are drawn with."""

    default: LengthSpec = field(default_factory=LengthSpec)
    per_model: dict[str, LengthSpec] = field(default_factory=dict)
    seed: int = 0

    @classmethod
    def parse(cls, specs: Sequence[str] = (), seed: int = 0) -> AnswerLengths:
        """From `--answer-tokens` values: `SPEC` (every model) or `MODEL=SPEC`."""
        out = cls(seed=seed)
        for item in specs:
            model, sep, spec = item.rpartition("=")
            if sep:
                out.per_model[model] = LengthSpec.parse(spec)
            else:
                out.default = LengthSpec.parse(spec)
        return out

    def tokens(self, model: str, prompt: str) -> int | None:
        """The answer's content tokens for `prompt` to `model` (None: the fixed script)."""
        spec = self.per_model.get(model, self.default)
        if spec.kind is LengthKind.FIXED:
            return None
        digest = hashlib.sha256(f"{self.seed}\0{prompt}".encode()).digest()
        return spec.draw(random.Random(int.from_bytes(digest[:8], "big")))


@dataclass
class ServiceTime:
    """Prefill and per-token decode time."""

    token_delay_s: float = 0.0
    prefill_tps: float = 0.0
    batch_slowdown: float = 0.0

    def prefill_s(self, prompt_tokens: int) -> float:
        return prompt_tokens / self.prefill_tps if self.prefill_tps > 0 else 0.0

    def token_s(self, busy_slots: int) -> float:
        return self.token_delay_s * (1.0 + self.batch_slowdown * (max(1, busy_slots) - 1))


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answer-tokens", action="append", default=[], metavar="[MODEL=]SPEC",
                   help="answer length: fixed (default), lognormal:MEDIAN:SIGMA[:MAX] or "
                        "pareto:MIN:ALPHA[:MAX]; MODEL= for one model; repeatable")
    p.add_argument("--seed", type=int, default=0, help="seed of the answer-length draws")
    p.add_argument("--prefill-tps", type=float, default=0.0,
                   help="prompt tokens per second of prefill (0: free)")
    p.add_argument("--batch-slowdown", type=float, default=0.0,
                   help="per-token delay times 1 + F*(busy_slots-1)")


def from_args(a: argparse.Namespace) -> tuple[AnswerLengths, float, float]:
    """(answer lengths, prefill_tps, batch_slowdown) from `add_flags`' flags."""
    return AnswerLengths.parse(a.answer_tokens, a.seed), a.prefill_tps, a.batch_slowdown
