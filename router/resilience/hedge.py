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

The clock is the caller's; nothing here sleeps.
"""

from __future__ import annotations

from collections import deque

from router.policy.schema import HedgeConfig


def percentile(samples: list[float], q: float) -> float:
    """The q-quantile (0 < q < 1) by nearest rank of a non-empty list."""
    ordered = sorted(samples)
    rank = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))
    return ordered[rank]


class LatencyTracker:
    """Recent first-event latencies per (backend, kind), and cold-load latencies per backend."""

    def __init__(self, window: int = 200) -> None:
        self.window = window
        self._samples: dict[tuple[str, str], deque[float]] = {}
        self._cold: dict[str, float] = {}

    def observe(self, backend: str, kind: str, latency_s: float, *, cold: bool = False) -> None:
        if cold:
            self._cold[backend] = max(self._cold.get(backend, 0.0), latency_s)
            return
        q = self._samples.get((backend, kind))
        if q is None:
            q = self._samples[(backend, kind)] = deque(maxlen=self.window)
        q.append(latency_s)

    def samples(self, backend: str, kind: str) -> list[float]:
        return list(self._samples.get((backend, kind), ()))

    def cold_load_s(self, backend: str) -> float | None:
        return self._cold.get(backend)


def hedge_delay(cfg: HedgeConfig, tracker: LatencyTracker, backend: str, kind: str, *,
                route_after_s: float | None, cold: bool) -> float:
    """Seconds to wait for the first event of `backend` before hedging (see the module)."""
    if route_after_s is not None:
        delay = route_after_s
    else:
        samples = tracker.samples(backend, kind)
        if len(samples) >= cfg.min_samples:
            delay = percentile(samples, cfg.percentile) * cfg.factor
        else:
            delay = cfg.default_s
        delay = max(delay, cfg.floor_s)
        if kind == "stream":  # a whole answer's time grows with its length: not capped
            delay = min(delay, cfg.max_s)
    if cold:
        load = tracker.cold_load_s(backend)
        delay = max(delay, load if load is not None else cfg.cold_load_s)
    return delay
