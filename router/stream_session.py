"""A stream whose first event has arrived (`Executor.open_stream` makes it): the idle-gap and
deadline limits between events, the end of a cut, stalled or malformed stream as a
BackendStreamError/BackendTimeout (never a truncated answer that looks complete), the local
slot held until the stream ends (then released in the background, with its samples: closing
never waits for the store), and an interrupt for the shutdown grace. A router bug while
reading the stream ends it in-band too (`internal_error`), without counting against the
backend's breaker.

A chunk the backend could not decode (`StreamEvent.malformed`) is skipped: logged (backend,
request id and count, never its text), counted (`Hooks.on_chunk_skipped`), and the stream
goes on; `stream.max_malformed_in_a_row` of them in a row end it as broken
(`stream_malformed`).

A session is one upstream stream. What a surface reads wraps it (`continuation.py`): a break
raised here may be continued on the plan's next candidate in a new session.

The idle-gap limit is one loop timer per session (`_ReadWatch`), re-armed lazily: each read
sets a deadline, and the timer, when it fires, re-arms at the deadline if it has not passed yet
and cancels the read only if it has; it behaves as an `asyncio.timeout` around each read (the
same limit, the same cancellation bookkeeping) without a timer handle per chunk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from router.context import RequestContext
from router.errors import BackendError, BackendStreamError, BackendTimeout, describe_exception
from router.state.base import Lease
from router.types import StreamEvent

if TYPE_CHECKING:
    from router.executor import Executor
    from router.planner import Candidate

log = logging.getLogger("router.executor")


async def aclose_quietly(agen: AsyncIterator[Any]) -> None:
    closer = getattr(agen, "aclose", None)
    if closer is not None:
        try:
            await closer()
        except Exception:  # noqa: BLE001 - closing a broken upstream must not mask the error
            log.debug("error closing upstream stream", exc_info=True)


class _ReadWatch:
    """The idle-gap limit of one session's reads: one loop timer, re-armed only when it fires.

    `arm(limit)` before a read sets its deadline (limit seconds from now, loop time), `disarm()`
    after it. When the timer fires it finds no read in progress (and stops), a read with time
    left (and re-arms at its deadline), or a read past its deadline: then it cancels the
    reading task, as `asyncio.timeout` would; `ours()` after the CancelledError tells whether
    the cancellation was this timer's (and withdraws it), as `asyncio.timeout`'s exit does.
    """

    __slots__ = ("_handle", "_loop", "_task", "_when", "base", "deadline", "fired")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.Handle | None = None
        self._when = 0.0  # when the pending timer runs (loop time), if one is pending
        self.deadline = 0.0  # the read in progress must end by then (0.0: none in progress)
        self.fired = False
        self.base = 0  # the task's cancel requests when the read began

    def arm(self, limit: float) -> None:
        task = asyncio.current_task()
        loop = self._loop
        self._task = task
        self.base = task.cancelling() if task is not None else 0
        now = loop.time()
        deadline = self.deadline = now + limit
        handle = self._handle
        if handle is not None:
            if deadline >= self._when:
                return  # the pending timer comes first and re-arms if need be
            handle.cancel()
        if deadline <= now:
            self._when = now
            self._handle = loop.call_soon(self._check)
        else:
            self._when = deadline
            self._handle = loop.call_at(deadline, self._check)

    def disarm(self) -> None:
        """After a read that returned: no read in progress; a cancellation this timer made
        that the read did not see is withdrawn (as `asyncio.timeout`'s exit does)."""
        self.deadline = 0.0
        if self.fired:
            self.fired = False
            if self._task is not None:
                self._task.uncancel()

    def ours(self) -> bool:
        """After a CancelledError in a read: was it this timer's (then withdrawn)?"""
        if not self.fired:
            return False
        self.fired = False
        task = self._task
        return task is not None and task.uncancel() <= self.base

    def _check(self) -> None:
        self._handle = None
        deadline = self.deadline
        if not deadline or self.fired:
            return
        now = self._loop.time()
        if now < deadline:
            self._when = deadline
            self._handle = self._loop.call_at(deadline, self._check)
            return
        task = self._task
        if task is not None and not task.done():
            self.fired = True
            task.cancel()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class StreamSession:
    """A stream whose first event has arrived; owns the local slot until it ends."""

    def __init__(
        self,
        executor: Executor,
        ctx: RequestContext,
        cand: Candidate,
        agen: AsyncIterator[StreamEvent],
        first: StreamEvent,
        lease: Lease | None,
    ) -> None:
        self.executor = executor
        self.ctx = ctx
        self.candidate = cand
        self._agen = agen
        self.first = first
        self._lease = lease
        self.error: BackendError | None = None
        self.finished = False
        self._closed = False
        self._task: asyncio.Task[Any] | None = None
        self._interrupted: str | None = None
        self._opened_at = executor.clock()  # the first event has just arrived
        self._output_tokens: int | None = None  # the upstream's count, once it finished

    def interrupt(self, reason: str) -> None:
        """End the stream at once with an error (shutdown grace running out)."""
        if self._interrupted is None and not self.finished:
            self._interrupted = reason
            if self._task is not None:
                self._task.cancel()

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Yield every event; raise BackendStreamError/BackendTimeout if the stream breaks."""
        ex = self.executor
        idle = ex.policy.stream.idle_timeout_s
        max_bad = ex.policy.stream.max_malformed_in_a_row
        backend = self.candidate.backend
        self._task = asyncio.current_task()
        bad_in_a_row = 0
        watch = _ReadWatch()
        try:
            event = self.first
            while True:
                if event.malformed:
                    bad_in_a_row += 1
                    self._skipped(bad_in_a_row, max_bad)
                else:
                    bad_in_a_row = 0
                    yield event
                    if event.finish_reason is not None:
                        self.finished = True
                        if event.usage is not None and event.usage.completion_tokens > 0:
                            self._output_tokens = event.usage.completion_tokens
                        return
                remaining = ex._remaining(self.ctx)
                watch.arm(min(idle, max(remaining, 0.0)))
                try:
                    event = await anext(self._agen)
                except StopAsyncIteration:
                    watch.disarm()
                    raise BackendStreamError(
                        f"'{backend}' ended the stream without finishing the answer",
                        backend=backend, code="stream_truncated") from None
                except TimeoutError:  # (the limit's own arrives as a CancelledError)
                    watch.disarm()
                    raise self._stalled(remaining, idle) from None
                except asyncio.CancelledError:
                    watch.deadline = 0.0
                    if watch.ours():
                        raise self._stalled(remaining, idle) from None
                    if self._interrupted is None or self._task is None:
                        raise
                    self._task.uncancel()
                    raise BackendStreamError(self._interrupted, backend=backend,
                                             code="stream_interrupted") from None
                except BaseException:
                    watch.disarm()
                    raise
                watch.disarm()
        except BackendError as exc:
            self.error = exc
            if ex.hooks.on_stream_error:
                ex.hooks.on_stream_error(backend, exc.code or "error")
            await ex.breakers.record_failure(backend, exc)
            raise
        except Exception as exc:  # a router bug mid-stream: end it in-band, no breaker failure
            log.error("internal error mid-stream from %s (req %s): %s", backend,
                      self.ctx.request_id, describe_exception(exc))
            self.error = BackendStreamError("the router hit an internal error mid-stream",
                                            backend=backend, code="internal_error",
                                            retryable=False)
            raise self.error from None
        finally:
            watch.close()
            await self.aclose()

    def _stalled(self, remaining: float, idle: float) -> BackendTimeout:
        backend = self.candidate.backend
        return BackendTimeout(
            f"'{backend}' stalled: no token for {idle:g}s" if remaining > idle
            else "the request's deadline passed mid-stream",
            backend=backend, code="stream_stalled")

    def _skipped(self, in_a_row: int, limit: int) -> None:
        """Count and log one skipped chunk; raise once `limit` came in a row."""
        backend = self.candidate.backend
        hooks = self.executor.hooks
        if hooks.on_chunk_skipped:
            hooks.on_chunk_skipped(backend)
        log.warning("skipped a malformed stream chunk from %s (req %s, %d in a row)", backend,
                    self.ctx.request_id, in_a_row)
        if in_a_row >= limit:
            raise BackendStreamError(
                f"'{backend}' sent {in_a_row} malformed chunks in a row",
                backend=backend, code="stream_malformed")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        lease, self._lease = self._lease, None
        ex = self.executor
        try:
            await aclose_quietly(self._agen)
        finally:
            # Even when closing the upstream is cancelled (a client hanging up while a
            # blocking SDK stream closes on its worker thread), the slot goes back.
            if lease is not None:
                if self.finished:
                    # The samples the wait estimator learns from (service time, time to the
                    # first event, answer tokens), recorded with the release.
                    granted = self.ctx.admitted_at or self.ctx.started
                    lease.service_time_s = ex.clock() - granted
                    lease.first_token_s = max(0.0, self._opened_at - granted)
                    lease.output_tokens = self._output_tokens
                await ex._release(lease)
