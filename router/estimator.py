"""The wait and service-time estimator for local admission: pure, no I/O, no clock.

Everything it knows arrives in a `SlotLoad` from the store's snapshot: the requests in service
(elapsed, predicted), the waiters in queue order (priority, predicted) and the recent samples
(service time, prompt and output tokens, time to first token, the route that served it).
docs/design.md, Routing signals:

- rates per backend model: prefill = median(prompt / first-token time), decode =
  median(output / (service - first-token time)), each from the samples that carry the fields,
  else the policy's defaults (`admission.prefill_tps_default`, `decode_tps_default`);
- a request's service time: with output-token samples, one draw per output length,
  `prompt / prefill + min(output, max_tokens) / decode`; else the recent service times; else the
  moving estimate; else `DEFAULT_SERVICE_TIME_S`. The output lengths are those of the
  request's own route on the key (`ServiceSample.route`, the policy route that served each
  sample) when the window holds at least `ROUTE_MIN_SAMPLES` of them, else the whole window's
  (routes differ in what they ask for: a summarising route answers longer than a classifying
  one on the same model); the rates are always the whole window's. Its prediction is the mean
  of the draws (`predict_service`: O(log window) from the sorted outputs and the rates,
  computed once per window of samples and route: until a sample arrives the snapshots carry
  an equal window);
- the wait: `DRAWS` Monte Carlo draws with a fixed seed (deterministic). Each request in service
  or queued ahead takes its prediction times a draw from the shape of the recent service times
  (sample / mean; in service: only draws beyond its elapsed time, the rest of it); the slots
  are list-scheduled and the wait is when the first slot frees after those ahead. The planner
  compares the `admission.wait_quantile` of the draws with the bound. O(DRAWS x (slots +
  queue) log slots) plus O(window) per request in service; with a slot free and nobody
  queued, no draws at all (0.0).
"""

from __future__ import annotations

import bisect
import heapq
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from router.policy.schema import AdmissionConfig
from router.state.base import Priority, ServiceSample, SlotLoad
from router.state.queue_model import MIN_REMAINING_FRACTION

DEFAULT_SERVICE_TIME_S = 2.0  # before the first measured request
DRAWS = 32
SEED = 20261201
# Output-length samples of a route on a key needed before they, not the whole key's window,
# predict that route's requests (fewer: the key's window, as for a route not seen yet).
ROUTE_MIN_SAMPLES = 8


@dataclass(frozen=True, slots=True)
class Rates:
    prefill_tps: float
    decode_tps: float
    measured: bool  # at least one of them came from samples


def measured_rates(samples: Sequence[ServiceSample], cfg: AdmissionConfig) -> Rates:
    prefill = [s.prompt_tokens / s.first_token_s for s in samples
               if s.prompt_tokens and s.first_token_s and s.first_token_s > 0]
    pre = statistics.median(prefill) if prefill else cfg.prefill_tps_default
    decode = []
    for s in samples:
        if not s.output_tokens:
            continue
        first = s.first_token_s
        if first is None and s.prompt_tokens is not None:
            first = s.prompt_tokens / pre
        if first is not None and s.service_s > first:
            decode.append(s.output_tokens / (s.service_s - first))
    dec = statistics.median(decode) if decode else cfg.decode_tps_default
    return Rates(pre, dec, bool(prefill or decode))


def output_lengths(window: Sequence[ServiceSample], route: str | None) -> list[int]:
    """The output lengths that predict a request on `route`: its own route's when the window
    holds at least `ROUTE_MIN_SAMPLES` of them, else all of the window's."""
    outs = [s.output_tokens for s in window if s.output_tokens is not None]
    if route is None or len(outs) < ROUTE_MIN_SAMPLES:
        return outs
    own = [s.output_tokens for s in window if s.output_tokens is not None and s.route == route]
    return own if len(own) >= ROUTE_MIN_SAMPLES else outs


def service_draws(load: SlotLoad, prompt_tokens: int | None, max_tokens: int | None,
                  cfg: AdmissionConfig, route: str | None = None) -> list[float]:
    """Sorted draws of one request's service time on this backend model (on `route`)."""
    window = load.samples[:cfg.sample_window]
    outs = output_lengths(window, route)
    if outs and prompt_tokens is not None:
        rates = measured_rates(window, cfg)
        pre = prompt_tokens / rates.prefill_tps
        cap = max_tokens if max_tokens else max(outs)
        return sorted(pre + min(o, cap) / rates.decode_tps for o in outs)
    if window:
        return sorted(s.service_s for s in window)
    return [load.service_time_s or DEFAULT_SERVICE_TIME_S]


@dataclass(frozen=True, slots=True)
class _Outputs:
    """Output-token samples of one window (or of one route in it), sorted, with prefix sums
    and the window's rates."""

    rates: Rates
    outs: tuple[int, ...]
    prefix: tuple[int, ...]  # prefix[k] = sum(outs[:k])


def _sorted_outputs(rates: Rates, outs: Sequence[int]) -> _Outputs:
    ordered = sorted(outs)
    prefix = [0]
    for o in ordered:
        prefix.append(prefix[-1] + o)
    return _Outputs(rates, tuple(ordered), tuple(prefix))


@dataclass(slots=True)
class _Window:
    """One window's outputs: the whole window's, and each route's once asked for."""

    window: tuple[ServiceSample, ...]
    whole: _Outputs | None
    by_route: dict[str, _Outputs | None]


# The last window's `_Window`, kept while the store hands out the same samples (the same
# tuple, or an equal one: a tuple compares its items by identity first): (samples, cfg,
# window).
_last: tuple[tuple[ServiceSample, ...], AdmissionConfig, _Window] | None = None


def _outputs(load: SlotLoad, cfg: AdmissionConfig, route: str | None) -> _Outputs | None:
    global _last
    hit = _last
    if hit is not None and hit[1] is cfg and (hit[0] is load.samples
                                              or hit[0] == load.samples):
        got = hit[2]
    else:
        window = load.samples[:cfg.sample_window]
        outs = [s.output_tokens for s in window if s.output_tokens is not None]
        whole = _sorted_outputs(measured_rates(window, cfg), outs) if outs else None
        got = _Window(window, whole, {})
        _last = (load.samples, cfg, got)
    if route is None or got.whole is None or len(got.whole.outs) < ROUTE_MIN_SAMPLES:
        return got.whole
    if route not in got.by_route:
        own = output_lengths(got.window, route)
        got.by_route[route] = got.whole if len(own) == len(got.whole.outs) else \
            _sorted_outputs(got.whole.rates, own)
    return got.by_route[route]


def predict_service(load: SlotLoad, prompt_tokens: int | None, max_tokens: int | None,
                    cfg: AdmissionConfig, route: str | None = None) -> float:
    """The mean of `service_draws`, in O(log window) once the window's outputs are known."""
    out = _outputs(load, cfg, route) if prompt_tokens is not None else None
    if out is None or prompt_tokens is None:
        draws = service_draws(load, prompt_tokens, max_tokens, cfg, route)
        return sum(draws) / len(draws)
    n = len(out.outs)
    cap = max_tokens if max_tokens else out.outs[-1]
    k = bisect.bisect_right(out.outs, cap)
    mean_out = (out.prefix[k] + cap * (n - k)) / n
    return prompt_tokens / out.rates.prefill_tps + mean_out / out.rates.decode_tps


def _shape(load: SlotLoad, cfg: AdmissionConfig) -> list[float]:
    times = [s.service_s for s in load.samples[:cfg.sample_window] if s.service_s > 0]
    if not times:
        return [1.0]
    mean = sum(times) / len(times)
    return [t / mean for t in times]


def wait_draws(load: SlotLoad, slots: int, cfg: AdmissionConfig, private: bool = False
               ) -> list[float]:
    """Sorted draws of the wait a new request would have (0.0 alone when a slot is free)."""
    if slots <= 0:
        return [0.0]
    default = load.service_time_s or DEFAULT_SERVICE_TIME_S
    waiting = list(load.waiting)
    waiting += [(int(Priority.STANDARD), None)] * max(0, load.queued - len(waiting))
    if private and cfg.private_first:
        waiting = [w for w in waiting if w[0] == Priority.PRIVATE]
    running = list(load.running)[:max(load.in_flight, 0)]
    running += [(0.0, None)] * max(0, load.in_flight - len(running))
    if len(running) + len(waiting) < slots:
        return [0.0]
    shape = _shape(load, cfg)
    # The rest of each request in service: the draws beyond its elapsed time.
    rests: list[list[float]] = []
    for elapsed, pred in running:
        p = pred or default
        rests.append([p * r - elapsed for r in shape if p * r > elapsed]
                     or [MIN_REMAINING_FRACTION * p])
    ahead = [pred or default for _, pred in waiting]
    rng = random.Random(SEED)
    out = []
    for _ in range(DRAWS):
        frees = sorted(rng.choice(rest) for rest in rests)[:slots]
        frees += [0.0] * (slots - len(frees))
        heapq.heapify(frees)
        for p in ahead:
            heapq.heapreplace(frees, frees[0] + p * rng.choice(shape))
        out.append(frees[0])
    out.sort()
    return out


def quantile(draws: Sequence[float], q: float) -> float:
    return draws[min(len(draws) - 1, int(q * len(draws)))]


def wait_quantile(load: SlotLoad, slots: int, cfg: AdmissionConfig, private: bool = False
                  ) -> float:
    return quantile(wait_draws(load, slots, cfg, private), cfg.wait_quantile)
