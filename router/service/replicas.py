"""This process in the replica registry: its id, and the heartbeat that keeps it listed.

`ReplicaBeat` writes a `ReplicaInfo` (id, start time, now, whether the state store is
degraded, requests in flight) to the state store every `interval_s` with a TTL of
`TTL_FACTOR` intervals, from a small task the service starts and stops. The id is
`hostname:pid` unless one is given. A failed beat is logged at debug and retried at the next
interval: the registry is for operators to look at, never on a request's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

from router.state.base import ReplicaInfo, StateStore

__all__ = ["HEARTBEAT_S", "TTL_FACTOR", "ReplicaBeat", "default_replica_id"]

log = logging.getLogger("router.service")
HEARTBEAT_S = 2.0
TTL_FACTOR = 3


def default_replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ReplicaBeat:
    def __init__(self, store: StateStore, in_flight: Callable[[], int], *,
                 replica_id: str | None = None, interval_s: float = HEARTBEAT_S,
                 wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.id = replica_id or default_replica_id()
        self.interval_s = interval_s
        self.ttl_s = interval_s * TTL_FACTOR
        self._in_flight = in_flight
        self._wall = wall
        self.started = wall()
        self._task: asyncio.Task[None] | None = None

    def info(self) -> ReplicaInfo:
        """This replica now, as the registry would list it."""
        return ReplicaInfo(self.id, self.started, self._wall(),
                           bool(self.store.status().get("degraded")), self._in_flight())

    async def beat(self) -> bool:
        """One heartbeat; False when the store did not take it."""
        try:
            await self.store.heartbeat(self.info(), self.ttl_s)
        except Exception as exc:  # noqa: BLE001 - never let the registry break the process
            log.debug("replica heartbeat failed: %r", exc)
            return False
        return True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.beat()

    async def start(self) -> None:
        """Beat once (so this replica is listed from the start), then every `interval_s`."""
        if self._task is None or self._task.done():
            await self.beat()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
