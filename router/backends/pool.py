"""A thread pool for backends whose SDK blocks (boto3), owned by whoever creates it.

The composition root (`router/compose.py`) makes one `BlockingPool` and shuts it down when
the router closes; the runtime hands it to every backend that asks for one (`PoolUser`). A
backend built on its own (tests, scripts) creates a private pool on first use and shuts it
down in its `aclose`. The pool's threads start only when work arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")

DEFAULT_WORKERS = 256  # sized for many concurrent cloud streams, one thread each
_DONE = object()


class BlockingPool:
    """A lazily started `ThreadPoolExecutor` with the async helpers backends need."""

    def __init__(self, max_workers: int = DEFAULT_WORKERS, name: str = "aws") -> None:
        self.max_workers = max_workers
        self.name = name
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.closed = False

    @property
    def started(self) -> bool:
        return self._executor is not None

    def executor(self) -> ThreadPoolExecutor:
        if self.closed:
            raise RuntimeError(f"the {self.name} thread pool is shut down")
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.max_workers,
                                                    thread_name_prefix=self.name)
            return self._executor

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        return self.executor().submit(fn)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor(), lambda: fn(*args, **kwargs))

    async def iterate(
        self, iterable: Iterable[T], close: Callable[[], None] | None = None
    ) -> AsyncIterator[T]:
        """Iterate a blocking iterator from async code, one `next()` per pool hop.

        If the consumer stops early (client gone, timeout), `close` is called so the
        underlying HTTP response is released.
        """
        it = iter(iterable)
        loop = asyncio.get_running_loop()
        pool = self.executor()
        finished = False
        try:
            while True:
                item = await loop.run_in_executor(pool, _next, it)
                if item is _DONE:
                    finished = True
                    return
                yield item  # type: ignore[misc]
        finally:
            if not finished and close is not None:
                with contextlib.suppress(Exception):
                    await loop.run_in_executor(pool, close)

    def shutdown(self) -> None:
        """Stop taking work; threads still blocked in a call end when it returns."""
        self.closed = True
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def _next(it: Iterator[T]) -> T | object:
    try:
        return next(it)
    except StopIteration:
        return _DONE


@runtime_checkable
class PoolUser(Protocol):
    """A backend that runs blocking calls on a `BlockingPool` it is given."""

    def use_pool(self, pool: BlockingPool) -> None: ...
