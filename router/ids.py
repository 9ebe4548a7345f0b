"""Request and completion ids: a random per-process prefix plus a counter (cheaper than uuid4
on the hot path, unique across replicas and restarts)."""

from __future__ import annotations

import itertools
import secrets

_PREFIX = secrets.token_hex(6)
_COUNTER = itertools.count(1)


def new_id(kind: str) -> str:
    return f"{kind}_{_PREFIX}{next(_COUNTER):x}"
