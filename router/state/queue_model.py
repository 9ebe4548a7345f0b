"""The stores' re-evaluation of a slot queue: which spillable waiters can no longer make it.

Pure and shared by the memory store; the Redis store runs the same rule in Lua
(`redis_scripts.py`, `SPILL_LUA`). The rule, on point predictions (docs/design.md, Routing
signals): list-schedule the queue onto the slots — each slot frees when the request in it is
predicted to end (`start + predicted`, at least `MIN_REMAINING_FRACTION` of its prediction
from now once it overruns), a free slot frees now — and a spillable waiter whose predicted
start is after its deadline leaves (it is then not scheduled, so waiters behind it gain).
Waiters and holders without a prediction count `default_s`. O((slots + queue) log slots).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MIN_REMAINING_FRACTION = 0.2


@dataclass(frozen=True, slots=True)
class QueuedEntry:
    token: str
    predicted_s: float | None
    deadline: float  # store clock: when its bound ends
    spillable: bool


def spill_tokens(now: float, slots: int, held: Iterable[tuple[float, float | None]],
                 queue: Sequence[QueuedEntry], default_s: float) -> list[str]:
    """Tokens of the waiters (in queue order) that should leave now. `held` holds
    (start, predicted) of the requests in service."""
    if slots <= 0 or not any(e.spillable for e in queue):
        return []
    frees = []
    for start, pred in held:
        p = default_s if pred is None else pred
        frees.append(max(start + p, now + MIN_REMAINING_FRACTION * p))
    frees.sort()
    frees = frees[:slots]
    frees += [now] * (slots - len(frees))
    heapq.heapify(frees)
    out: list[str] = []
    for e in queue:
        t = frees[0]
        if e.spillable and e.predicted_s is not None and t > e.deadline:
            out.append(e.token)
            continue
        heapq.heapreplace(frees, t + (default_s if e.predicted_s is None else e.predicted_s))
    return out
