"""Redis connection setup for the Redis state store: the connection pool (bounded size, no
redis-py retries or socket timeouts, maintenance notifications off) and URL redaction for
status output and logs; `StoreUnavailable`, what every failed round trip raises.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


class StoreUnavailable(Exception):
    """Redis did not answer within the bound, refused the connection, or failed the command."""


def pool_extras() -> dict[str, Any]:
    """redis-py >= 7 defaults maintenance notifications to 'auto', which makes the pool skip
    its closed-connection check: connections left idle across a Redis restart would be
    handed out again and fail the first busy moment after recovery. Turn them off."""
    try:
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:  # redis-py < 7: no such feature, nothing to turn off
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


def connect(url: str, *, max_connections: int, op_timeout_s: float) -> Redis:
    """A client on a blocking pool of at most `max_connections` connections (decoded replies)."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=None, decode_responses=True,
        retry=Retry(NoBackoff(), 0), socket_connect_timeout=max(1.0, op_timeout_s),
        # No socket timeout: every round trip is bounded by `_rt` (asyncio.timeout), and
        # redis-py's socket timeout goes through 3.11's wait_for, which can swallow a
        # cancellation that arrives as the write completes.
        socket_timeout=None, socket_keepalive=True, **pool_extras(),
    )
    return Redis.from_pool(pool)


def redact_url(url: str) -> str:
    """The URL with any password (in the userinfo or a `password=` query) replaced by ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if "password" in query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs])
    return urlunsplit(parts._replace(netloc=netloc, query=query))
