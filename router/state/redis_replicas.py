"""The replica registry in Redis (used by `redis_store.RedisStore`).

Keys (prefix P): `Preplica:<id>` holds the replica's JSON record with an expiry (PX), and
`Preplicas` is a sorted set id -> expiry (the writer's clock seconds), so listing the live
replicas is one range query plus one read per live id, and a dead replica leaves the listing
once its expiry passes, whatever Redis's own key expiry has done yet.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from router.state.base import ReplicaInfo

log = logging.getLogger("router.state")


def record_key(prefix: str, replica_id: str) -> str:
    return f"{prefix}replica:{replica_id}"


def index_key(prefix: str) -> str:
    return f"{prefix}replicas"


def heartbeat_pipeline(redis: Redis, prefix: str, info: ReplicaInfo, ttl_s: float,
                       now: float) -> Pipeline:
    """Write the record and its index entry, and drop expired index entries."""
    pipe = redis.pipeline(transaction=False)
    pipe.set(record_key(prefix, info.id), json.dumps(info.as_dict()),
             px=max(1, int(ttl_s * 1000)))
    pipe.zadd(index_key(prefix), {info.id: now + ttl_s})
    pipe.zremrangebyscore(index_key(prefix), "-inf", now)
    return pipe


def records_pipeline(redis: Redis, prefix: str, ids: Sequence[str]) -> Pipeline:
    pipe = redis.pipeline(transaction=False)
    for replica_id in ids:
        pipe.get(record_key(prefix, replica_id))
    return pipe


def parse_records(values: Sequence[Any]) -> list[ReplicaInfo]:
    """Records that are present and well formed, by id (a malformed one is skipped)."""
    out = []
    for raw in values:
        if raw is None:
            continue
        try:
            out.append(ReplicaInfo.from_dict(json.loads(raw)))
        except (ValueError, TypeError, KeyError, AttributeError):
            log.debug("skipping a malformed replica record")
    return sorted(out, key=lambda r: r.id)
