"""Fixtures for the unit tests: a real Redis (the store tests FAIL, never skip, without one)
and a per-test key prefix. A conftest, so they win over same-named plugin fixtures."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

REDIS_URL = os.environ.get("HR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def raw() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await asyncio.wait_for(client.ping(), 2.0)
    except Exception as exc:  # noqa: BLE001 - any failure means "no Redis": fail loudly
        await client.aclose()
        pytest.fail(
            f"these tests need a real Redis at {REDIS_URL} ({exc!r}); start redis-server "
            "or set HR_TEST_REDIS_URL", pytrace=False,
        )
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(raw: Redis) -> AsyncIterator[str]:
    p = f"hrtest:{secrets.token_hex(6)}:"
    yield p
    keys = [k async for k in raw.scan_iter(match=p + "*")]
    if keys:
        await raw.delete(*keys)
