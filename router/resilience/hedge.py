"""Hedged first tokens: the observed first-event latencies and the hedge delay rule.

The executor (`executor.py`) starts the next eligible candidate in parallel when the one in
flight has delivered nothing after `hedge_delay(...)`: the first event of a stream (a reasoning
token counts), or the whole answer of a non-streamed call. This module owns only the numbers:

- `LatencyTracker` keeps, per (backend, kind) with kind "stream" or "chat", the most recent
  `hedge.window` latencies of a successful attempt (from its start, after any local slot wait,
  to its first event or whole answer), and separately the latencies of cold-model attempts
  (the model's load time as observed).
- `hedge_delay` is the rule: the route's `hedge_after_s` when set; else
  `factor` x the `percentile` latency once `min_samples` were seen (`default_s` before),
  never under `floor_s`, and for streams never over `max_s` (a whole answer's latency grows
  with its length, so a backend with long answers learns a long delay); for a cold local
  model never shorter than its load time (the longest observed cold latency, `cold_load_s`
  until one is observed).

The tracker keeps each window sorted as well (one insertion and at most one removal per
sample), so the delay's percentile is an index, not a sort of the window per request.

The clock is the caller's; nothing here sleeps.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque

from router.policy.schema import HedgeConfig


def _rank(n: int, q: float) -> int:
    return min(n - 1, max(0, int(q * n + 0.999999) - 1))


def percentile(samples: list[float], q: float) -> float:
    """The q-quantile (0 < q < 1) by nearest rank of a non-empty list."""
    ordered = sorted(samples)
    return ordered[_rank(len(ordered), q)]


class LatencyTracker:
    """Recent first-event latencies per (backend, kind), and cold-load latencies per backend."""

    def __init__(self, window: int = 200) -> None:
        self.window = window
        self._samples: dict[tuple[str, str], deque[float]] = {}
        self._sorted: dict[tuple[str, str], list[float]] = {}  # the same windows, in order
        self._cold: dict[str, float] = {}

    def observe(self, backend: str, kind: str, latency_s: float, *, cold: bool = False) -> None:
        if cold:
            self._cold[backend] = max(self._cold.get(backend, 0.0), latency_s)
            return
        key = (backend, kind)
        q = self._samples.get(key)
        if q is None:
            q = self._samples[key] = deque(maxlen=self.window)
            self._sorted[key] = []
        ordered = self._sorted[key]
        if len(q) == q.maxlen:  # the oldest sample leaves the window
            del ordered[bisect_left(ordered, q[0])]
        q.append(latency_s)
        insort(ordered, latency_s)

    def samples(self, backend: str, kind: str) -> list[float]:
        return list(self._samples.get((backend, kind), ()))

    def count(self, backend: str, kind: str) -> int:
        q = self._samples.get((backend, kind))
        return len(q) if q is not None else 0

    def quantile(self, backend: str, kind: str, q: float) -> float:
        """`percentile(samples(backend, kind), q)` without sorting (a non-empty window)."""
        ordered = self._sorted[(backend, kind)]
        return ordered[_rank(len(ordered), q)]

    def cold_load_s(self, backend: str) -> float | None:
        return self._cold.get(backend)


def hedge_delay(cfg: HedgeConfig, tracker: LatencyTracker, backend: str, kind: str, *,
                route_after_s: float | None, cold: bool) -> float:
    """Seconds to wait for the first event of `backend` before hedging (see the module)."""
    if route_after_s is not None:
        delay = route_after_s
    else:
        if tracker.count(backend, kind) >= cfg.min_samples:
            delay = tracker.quantile(backend, kind, cfg.percentile) * cfg.factor
        else:
            delay = cfg.default_s
        delay = max(delay, cfg.floor_s)
        if kind == "stream":  # a whole answer's time grows with its length: not capped
            delay = min(delay, cfg.max_s)
    if cold:
        load = tracker.cold_load_s(backend)
        delay = max(delay, load if load is not None else cfg.cold_load_s)
    return delay
