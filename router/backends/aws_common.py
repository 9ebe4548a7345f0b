"""What the Bedrock and SageMaker backends share: boto3 clients and the thread offload.

boto3 is synchronous. Every call and every `next()` on an event stream runs on a dedicated
thread pool (`backends/pool.py`: one `BlockingPool`, sized for many concurrent streams, made
and shut down by the composition root), never on the event loop and never on asyncio's small
default executor (which aiohttp also uses for DNS): 50 stalled cloud streams must not delay a
local request. `PooledBackend` is the part of a backend that holds its pool: the one it is
given (`use_pool`), or a private one made on first use and shut down in `aclose`. botocore's
own retries are off (the router retries).
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from router.backends.pool import DEFAULT_WORKERS, BlockingPool


def make_client(
    service: str,
    *,
    region: str,
    endpoint_url: str | None,
    profile: str | None,
    connect_timeout_s: float,
    read_timeout_s: float,
) -> Any:
    """A boto3 client with retries off, our timeouts, and a pool big enough for our threads.

    Credentials follow the standard chain (env, profile, role); for Bedrock, botocore also
    picks up a Bedrock API key from `AWS_BEARER_TOKEN_BEDROCK`.
    """
    session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
    config = Config(
        region_name=region,
        retries={"mode": "standard", "total_max_attempts": 1},  # the router retries
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        max_pool_connections=DEFAULT_WORKERS,
        tcp_keepalive=True,
    )
    return session.client(service, endpoint_url=endpoint_url, config=config)  # type: ignore[call-overload]


class PooledBackend:
    """Mixin: the blocking pool of an AWS backend (given by the runtime, or its own)."""

    _pool: BlockingPool | None = None
    _owns_pool: bool = False

    def use_pool(self, pool: BlockingPool) -> None:
        self._pool, self._owns_pool = pool, False

    @property
    def pool(self) -> BlockingPool:
        if self._pool is None:
            self._pool, self._owns_pool = BlockingPool(), True
        return self._pool

    def close_own_pool(self) -> None:
        """Shut the pool down if this backend made it (a shared one belongs to the root)."""
        if self._owns_pool and self._pool is not None:
            self._pool.shutdown()
            self._pool, self._owns_pool = None, False
