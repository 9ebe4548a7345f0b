"""What the Bedrock and SageMaker backends share: boto3 clients and the thread offload.

boto3 is synchronous. Every call and every `next()` on an event stream runs on one dedicated
thread pool (`AWS_EXECUTOR`, sized for many concurrent streams), never on the event loop and
never on asyncio's small default executor (which aiohttp also uses for DNS): 50 stalled cloud
streams must not delay a local request. botocore's own retries are off (the router retries).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
from botocore.config import Config

T = TypeVar("T")

AWS_EXECUTOR = ThreadPoolExecutor(max_workers=256, thread_name_prefix="aws")
_DONE = object()


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
        max_pool_connections=256,
        tcp_keepalive=True,
    )
    return session.client(service, endpoint_url=endpoint_url, config=config)  # type: ignore[call-overload]


async def run_sync(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(AWS_EXECUTOR, lambda: fn(*args, **kwargs))


def _next(it: Iterator[T]) -> T | object:
    try:
        return next(it)
    except StopIteration:
        return _DONE


async def iterate_sync(
    iterable: Iterable[T], close: Callable[[], None] | None = None
) -> AsyncIterator[T]:
    """Iterate a blocking iterator from async code, one `next()` per pool hop.

    If the consumer stops early (client gone, timeout), `close` is called so the underlying
    HTTP response is released.
    """
    it = iter(iterable)
    loop = asyncio.get_running_loop()
    finished = False
    try:
        while True:
            item = await loop.run_in_executor(AWS_EXECUTOR, _next, it)
            if item is _DONE:
                finished = True
                return
            yield item  # type: ignore[misc]
    finally:
        if not finished and close is not None:
            with contextlib.suppress(Exception):
                await loop.run_in_executor(AWS_EXECUTOR, close)
