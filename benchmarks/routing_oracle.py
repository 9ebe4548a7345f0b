"""The oracle: an offline replay of a routing trace that knows every request's service time.

A discrete-event simulation of the local backend, in process (no servers): `slots` slots, one
FIFO queue. A request's service is its prefill (`prompt_tokens / prefill_tps`, 0 when free)
then its answer tokens at `token_delay_s` each, slowed while the backend is busy:
`token_delay_s * (1 + batch_slowdown * (busy - 1))`, the simulators' model. Private requests
always run locally. A standard request runs locally only if its exact wait (its start time in
the FIFO queue, which no later arrival can change) is within the bound; otherwise it goes to
the cloud at once, with no wait. That is the most local work a wait-bounded router could admit
without preempting, so it is the utilisation and local share the live policies are held to.

Slot utilisation is measured like the live benchmark: the mean of `min(busy, slots) / slots`
from the first request to the last arrival.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.routing_traces import TraceRequest

EPS = 1e-9


@dataclass(frozen=True)
class Service:
    slots: int = 2
    token_delay_s: float = 0.015
    prefill_tps: float = 0.0  # prompt tokens per second; 0: prefill is free
    batch_slowdown: float = 0.0

    def prefill_s(self, prompt_tokens: int) -> float:
        return prompt_tokens / self.prefill_tps if self.prefill_tps > 0 else 0.0


@dataclass
class _Job:
    idx: int
    prefill_left: float
    tokens_left: float


@dataclass
class _Backend:
    svc: Service
    horizon: float
    now: float = 0.0
    active: list[_Job] = field(default_factory=list)
    queue: deque[tuple[int, float, int]] = field(default_factory=deque)  # idx, prefill, tokens
    private_queue: deque[tuple[int, float, int]] = field(default_factory=deque)  # served first
    busy_integral: float = 0.0
    starts: dict[int, float] = field(default_factory=dict)

    def _per_token(self) -> float:
        k = max(1, len(self.active))
        return self.svc.token_delay_s * (1 + self.svc.batch_slowdown * (k - 1))

    def _fill(self) -> None:
        while (self.private_queue or self.queue) and len(self.active) < self.svc.slots:
            idx, prefill, tokens = (self.private_queue or self.queue).popleft()
            self.starts[idx] = self.now
            self.active.append(_Job(idx, prefill, float(tokens)))

    def advance(self, until: float, stop_at_start: int | None = None) -> None:
        """Run to `until` (or until request `stop_at_start` has started)."""
        self._fill()
        while self.now < until - EPS:
            if stop_at_start is not None and stop_at_start in self.starts:
                return
            if not self.active:
                self.now = until
                return
            d = self._per_token()
            dt = min(until - self.now, min(j.prefill_left + j.tokens_left * d
                                           for j in self.active))
            lo, hi = self.now, min(self.now + dt, self.horizon)
            if hi > lo:
                self.busy_integral += min(len(self.active), self.svc.slots) * (hi - lo)
            for j in self.active:
                step = dt
                used = min(j.prefill_left, step)
                j.prefill_left -= used
                step -= used
                j.tokens_left -= step / d if d > 0 else j.tokens_left
            self.now += dt
            self.active = [j for j in self.active
                           if j.prefill_left > EPS or j.tokens_left > EPS]
            self._fill()

    def start_time_if_queued(self, idx: int, prefill: float, tokens: int,
                             later_private: Sequence[tuple[float, int, float, int]] = ()
                             ) -> float:
        """When request `idx` would start if queued now (FIFO behind everything queued, and
        behind `later_private`: (arrival, idx, prefill, tokens) of private requests arriving
        after it, which a private-first queue serves first)."""
        probe = copy.deepcopy(self)
        probe.queue.append((idx, prefill, tokens))
        for at, j, pre, tok in later_private:
            probe.advance(at, stop_at_start=idx)
            if idx in probe.starts:
                return probe.starts[idx]
            probe.private_queue.append((j, pre, tok))
            probe._fill()
        probe.advance(float("inf"), stop_at_start=idx)
        return probe.starts[idx]


@dataclass
class OracleResult:
    local: list[bool]
    waits: list[float]  # local requests: exact wait; cloud: 0
    utilisation: float
    horizon_s: float


def replay(trace: list[TraceRequest], svc: Service, bound_s: float,
           private_first: bool = False) -> OracleResult:
    """`private_first`: private requests queue ahead of standard ones (the router's queue),
    and a standard request's exact wait counts the private requests that will arrive while
    it waits (the oracle knows the whole trace)."""
    horizon = trace[-1].at_s if trace else 0.0
    be = _Backend(svc, horizon)
    local: list[bool] = []
    waits: list[float] = []
    privates = [(r.at_s, i, svc.prefill_s(r.prompt_tokens), r.answer_tokens)
                for i, r in enumerate(trace) if r.private]
    nxt = 0  # first entry of `privates` arriving after the current request
    for i, r in enumerate(trace):
        be.advance(r.at_s)
        while nxt < len(privates) and privates[nxt][1] <= i:
            nxt += 1
        prefill = svc.prefill_s(r.prompt_tokens)
        if not r.private:
            later = privates[nxt:] if private_first else []
            start = be.start_time_if_queued(i, prefill, r.answer_tokens, later)
            if start - r.at_s > bound_s + EPS:
                local.append(False)
                waits.append(0.0)
                continue
        queue = be.private_queue if r.private and private_first else be.queue
        queue.append((i, prefill, r.answer_tokens))
        be._fill()
        local.append(True)
        waits.append(-1.0)
    be.advance(horizon)
    be.advance(float("inf"))
    for i, is_local in enumerate(local):
        if is_local:
            waits[i] = be.starts[i] - trace[i].at_s
    util = be.busy_integral / (svc.slots * horizon) if horizon > 0 else 0.0
    return OracleResult(local, waits, util, horizon)
