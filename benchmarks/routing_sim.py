"""An offline replay of the hybrid policy with the router's own planner, estimator and queue rule.

No servers and no clock: a discrete-event simulation of one local backend (`slots` slots, the
memory store's private-first queue, its re-evaluation on every arrival and release, its
timeouts) in front of a cloud that answers at once. Each arrival is planned by
`router.planner.plan` on a snapshot built like `MemoryStore._load` (requests in service with
their elapsed time and prediction, waiters in queue order, the recent samples newest first);
a local candidate queues with the planner's prediction and the store's rule
(`router.state.queue_model.spill_tokens`) tells late standard waiters to leave. A request's
service time is known only to the simulation: prefill + (reasoning + answer tokens) x token
delay + a fixed overhead, as the simulators serve it.

It measures what the live benchmark measures, without the noise of a shared machine, in a
second: local share, slot utilisation, standard p95 wait, waited-then-spilled share (by cause:
left at the bound, told to leave on arrival, told to leave later), private p50/p95 wait and
the estimator's predicted against experienced wait. `python -m benchmarks.routing_sim`
replays the benchmark's traces (same seeds and options as `benchmarks.routing`); tuning the
admission settings against it is then checked live.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import sys
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import percentile
from benchmarks.routing_live import policy as live_policy
from benchmarks.routing_oracle import Service
from benchmarks.routing_traces import TraceRequest
from router.planner import PlannerState, RequestFacts, plan
from router.policy.loader import parse_policy
from router.policy.schema import Policy
from router.state.base import SAMPLE_WINDOW, Priority, ServiceSample, SlotLoad, slot_key
from router.state.queue_model import QueuedEntry, spill_tokens
from router_simulators.prefill import scripted_answer
from router_simulators.service_time import AnswerLengths

OVERHEAD_S = 0.01  # per request, besides prefill and tokens
EWMA_ALPHA = 0.2
MODEL_ID = "gpt-oss:20b"
KEY = slot_key("local", MODEL_ID)


@dataclass
class _Waiter:
    idx: int
    order: tuple[int, int]
    deadline: float
    predicted: float | None
    spillable: bool


@dataclass
class SimResult:
    local: list[bool] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)  # until start (local) or until it left
    exits: list[str] = field(default_factory=list)  # local, cloud, timeout, spilled_at_once,
    # spilled_later
    predicted: list[float | None] = field(default_factory=list)  # planner's local estimate
    utilisation: float = 0.0


def service_s(r: TraceRequest, svc: Service) -> float:
    return svc.prefill_s(r.prompt_tokens) + r.answer_tokens * svc.token_delay_s + OVERHEAD_S


def served(trace: list[TraceRequest], spec: str, seed: int) -> list[TraceRequest]:
    """The trace with each answer as long as the simulators serve it (drawn from the seed and
    the prompt, reasoning tokens included, capped by max_tokens) and their prompt count."""
    lengths = AnswerLengths.parse([spec], seed)
    out = []
    for r in trace:
        s = scripted_answer([{"role": "user", "content": r.prompt}], None, None, r.max_tokens,
                            lengths=lengths, model=MODEL_ID)
        out.append(replace(r, answer_tokens=s.completion_tokens, prompt_tokens=s.prompt_tokens))
    return out


def hybrid_policy(svc: Service, bound_s: float, admission: dict[str, Any] | None = None
                  ) -> Policy:
    raw = live_policy("hybrid", "http://127.0.0.1:1", "http://127.0.0.1:2", svc.slots, bound_s,
                      (0.15, 0.6))
    if admission:
        raw["admission"] = admission
    return parse_policy(raw)


class _Sim:
    def __init__(self, trace: list[TraceRequest], svc: Service, pol: Policy) -> None:
        self.trace, self.svc, self.pol = trace, svc, pol
        n = len(trace)
        self.res = SimResult([False] * n, [0.0] * n, ["cloud"] * n, [None] * n)
        self.events: list[tuple[float, int, str, int]] = []
        self.seq = 0
        self.held: dict[int, tuple[float, float | None]] = {}  # idx -> start, predicted
        self.waiters: list[_Waiter] = []
        self.samples: deque[ServiceSample] = deque(maxlen=SAMPLE_WINDOW)
        self.ewma: float | None = None
        self.busy_integral = 0.0
        self.last_t = 0.0
        self.horizon = trace[-1].at_s if trace else 0.0

    def push(self, t: float, kind: str, idx: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, idx))

    def advance(self, t: float) -> None:
        hi = min(t, self.horizon)
        if hi > self.last_t:
            self.busy_integral += len(self.held) * (hi - self.last_t)
        self.last_t = max(self.last_t, t)

    def load(self, now: float) -> SlotLoad:
        return SlotLoad(len(self.held), len(self.waiters), self.ewma,
                        running=tuple((now - s, p) for s, p in self.held.values()),
                        waiting=tuple((w.order[0], w.predicted) for w in self.waiters),
                        samples=tuple(self.samples))

    def start(self, idx: int, now: float, predicted: float | None) -> None:
        self.held[idx] = (now, predicted)
        self.res.local[idx] = True
        self.res.waits[idx] = now - self.trace[idx].at_s
        self.res.exits[idx] = "local"
        self.push(now + service_s(self.trace[idx], self.svc), "done", idx)

    def reevaluate(self, now: float, arriving: int | None = None) -> None:
        if not self.waiters:
            return
        queue = [QueuedEntry(str(w.idx), w.predicted, w.deadline, w.spillable)
                 for w in self.waiters]
        out = {int(t) for t in spill_tokens(now, self.svc.slots, self.held.values(), queue,
                                            self.ewma or 2.0)}
        if not out:
            return
        self.waiters = [w for w in self.waiters if w.idx not in out]
        for i in out:
            self.res.exits[i] = "spilled_at_once" if i == arriving else "spilled_later"
            self.res.waits[i] = now - self.trace[i].at_s

    def arrive(self, idx: int, now: float) -> None:
        r = self.trace[idx]
        private = r.private
        facts = RequestFacts("gpt-oss-20b", "private" if private else "standard",
                             r.prompt_tokens, r.max_tokens)
        p = plan(facts, self.pol, PlannerState(now=now, slots={KEY: self.load(now)}))
        first = p.candidates[0]
        loc = next((c for c in p.candidates if c.local), None)
        self.res.predicted[idx] = loc.est_wait_s if loc else None
        if not first.local:
            return  # straight to the cloud: exits "cloud", wait 0
        if len(self.held) < self.svc.slots and not self.waiters:
            self.start(idx, now, first.pred_service_s)
            return
        prio = Priority.PRIVATE if private and first.private_first else Priority.STANDARD
        w = _Waiter(idx, (int(prio), idx), now + first.max_wait_s, first.pred_service_s,
                    not private and first.early_spill)
        bisect.insort(self.waiters, w, key=lambda x: x.order)
        self.reevaluate(now, arriving=idx)
        if any(x.idx == idx for x in self.waiters):
            self.push(w.deadline, "timeout", idx)

    def done(self, idx: int, now: float) -> None:
        start, _ = self.held.pop(idx)
        r = self.trace[idx]
        took = now - start
        self.ewma = took if self.ewma is None else self.ewma + EWMA_ALPHA * (took - self.ewma)
        self.samples.appendleft(ServiceSample(
            took, r.prompt_tokens, r.answer_tokens,
            self.svc.prefill_s(r.prompt_tokens) + self.svc.token_delay_s))
        if self.waiters:
            w = self.waiters.pop(0)
            self.start(w.idx, now, w.predicted)
        self.reevaluate(now)

    def timeout(self, idx: int, now: float) -> None:
        for i, w in enumerate(self.waiters):
            if w.idx == idx:
                del self.waiters[i]
                self.res.exits[idx] = "timeout"
                self.res.waits[idx] = now - self.trace[idx].at_s
                return

    def run(self) -> SimResult:
        for i, r in enumerate(self.trace):
            self.push(r.at_s, "arrive", i)
        while self.events:
            t, _, kind, idx = heapq.heappop(self.events)
            self.advance(t)
            # Releases before arrivals at the same instant, as a slot frees before a retry.
            getattr(self, kind)(idx, t)
        self.res.utilisation = (self.busy_integral / (self.svc.slots * self.horizon)
                                if self.horizon > 0 else 0.0)
        return self.res


def replay(trace: list[TraceRequest], svc: Service, pol: Policy) -> SimResult:
    return _Sim(trace, svc, pol).run()


def summary(trace: list[TraceRequest], res: SimResult, bound_s: float) -> dict[str, Any]:
    std = [i for i, r in enumerate(trace) if not r.private]
    prv = [i for i, r in enumerate(trace) if r.private]
    left = [i for i in std if res.exits[i] in ("timeout", "spilled_at_once", "spilled_later")]
    std_w = sorted(res.waits[i] for i in std)
    prv_w = sorted(res.waits[i] for i in prv)
    pairs = [(res.predicted[i], res.waits[i]) for i in range(len(trace))
             if res.local[i] and res.predicted[i] is not None]
    err = [p - w for p, w in pairs if p is not None]
    n_std = len(std) or 1
    return {
        "requests": len(trace), "local_share": round(sum(res.local) / max(1, len(trace)), 4),
        "utilisation": round(res.utilisation, 4),
        "std_wait_p95_s": _r(percentile(std_w, 95)),
        "waited_then_spilled_share": round(len(left) / n_std, 4),
        "by_cause": {c: sum(1 for i in std if res.exits[i] == c)
                     for c in ("timeout", "spilled_at_once", "spilled_later")},
        "private_wait_p50_s": _r(percentile(prv_w, 50)),
        "private_wait_p95_s": _r(percentile(prv_w, 95)),
        "private_on_cloud": sum(1 for i in prv if not res.local[i]),
        "estimator_bias_s": _r(sum(err) / len(err)) if err else None,
        "estimator_coverage": (round(sum(1 for e in err if e >= 0) / len(err), 3)
                               if err else None),
        "over_bound_share": round(sum(1 for w in std_w if w > bound_s) / n_std, 4),
    }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.routing import build_trace, parse_args
    from benchmarks.routing_oracle import replay as oracle_replay
    from benchmarks.routing_report import oracle_row
    from benchmarks.routing_traces import LengthSpec

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--quantile", type=float, default=None, help="admission.wait_quantile")
    p.add_argument("--max-waiting-ahead", default=None,
                   help="admission.max_waiting_ahead (a number or 'none')")
    p.add_argument("--seeds", type=int, default=1, help="replay this many seeds per trace")
    own, rest = p.parse_known_args(argv)
    args = parse_args(rest)
    svc = Service(args.parallel, args.token_delay, args.prefill_tps, args.batch_slowdown)
    spec = LengthSpec.parse(args.answer_tokens)
    # As the live benchmark sizes its traces (answer tokens only, not the reasoning ones).
    mean_service = (spec.mean() * args.token_delay
                    + args.long_prompt_share * svc.prefill_s(args.long_prompt_tokens))
    capacity = args.parallel / mean_service
    adm: dict[str, Any] = {}
    if own.quantile is not None:
        adm["wait_quantile"] = own.quantile
    if own.max_waiting_ahead is not None:
        adm["max_waiting_ahead"] = (None if own.max_waiting_ahead == "none"
                                    else int(own.max_waiting_ahead))
    pol = hybrid_policy(svc, args.bound, adm)
    base_seed = args.seed
    rows: dict[str, list[dict[str, Any]]] = {}
    for name in args.traces:
        for k in range(own.seeds):
            args.seed = base_seed + 100 * k
            trace = served(build_trace(name, args, capacity, spec, None), args.answer_tokens,
                           args.seed)
            res = replay(trace, svc, pol)
            orc = oracle_replay(trace, svc, args.bound)
            pf = oracle_row(trace, oracle_replay(trace, svc, args.bound, private_first=True),
                            (0.15, 0.6))
            s = summary(trace, res, args.bound)
            s["gap"] = s["utilisation"] - orc.utilisation
            s["pf_private_p95"] = pf["private_wait_p95_s"]
            rows.setdefault(name, []).append(s)
            print(f"{name:<7} seed {args.seed}: n {s['requests']} local "
                  f"{100 * s['local_share']:.1f}% util {100 * s['utilisation']:.1f}% (oracle "
                  f"{100 * orc.utilisation:.1f}%) std p95 {s['std_wait_p95_s']} s, spilled "
                  f"{100 * s['waited_then_spilled_share']:.1f}% {s['by_cause']}, private "
                  f"p50/p95 {s['private_wait_p50_s']}/{s['private_wait_p95_s']} s "
                  f"(private-first oracle p95 {pf['private_wait_p95_s']}), estimator "
                  f"bias {s['estimator_bias_s']} coverage {s['estimator_coverage']}")
    for name, got in rows.items():
        def mean(k: str, got: list[dict[str, Any]] = got) -> float:
            return sum(float(g[k] or 0.0) for g in got) / len(got)
        spilled = 100 * mean("waited_then_spilled_share")
        print(f"{name:<7} mean of {len(got)}: spilled {spilled:.1f}%, utilisation "
              f"{100 * mean('gap'):+.1f} pts against the oracle, standard p95 "
              f"{mean('std_wait_p95_s'):.2f} s, private p95 {mean('private_wait_p95_s'):.2f} s "
              f"(private-first oracle {mean('pf_private_p95'):.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
