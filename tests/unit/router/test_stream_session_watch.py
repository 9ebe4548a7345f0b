"""The stream session's idle-gap limit is one lazily re-armed timer (`_ReadWatch`): it cuts a
read that is past its deadline as `stream_stalled`, as the `asyncio.timeout` per read did,
re-arms instead of cutting while the deadline has not passed, never cuts between reads, and
leaves every other cancellation (a consumer's, an interrupt) as it was."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from router.errors import BackendError, BackendStreamError, BackendTimeout
from router.stream_session import StreamSession, _ReadWatch
from router.types import StreamEvent


class Upstream:
    """An upstream stream: each read takes the next step, a StreamEvent returned at once or a
    future awaited (its result returned)."""

    def __init__(self, steps: list[StreamEvent | asyncio.Future[StreamEvent]]) -> None:
        self.steps = steps
        self.closed = False

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self

    async def __anext__(self) -> StreamEvent:
        if not self.steps:
            raise StopAsyncIteration
        step = self.steps.pop(0)
        if isinstance(step, asyncio.Future):
            return await step
        return step

    async def aclose(self) -> None:
        self.closed = True


def _session(upstream: Upstream, *, idle: float = 5.0, remaining: float = 60.0,
             ) -> tuple[StreamSession, list[BackendError]]:
    failures: list[BackendError] = []

    async def record_failure(backend: str, exc: BackendError) -> None:
        failures.append(exc)

    async def release(lease: Any) -> None:
        return None

    executor = SimpleNamespace(
        policy=SimpleNamespace(stream=SimpleNamespace(idle_timeout_s=idle,
                                                      max_malformed_in_a_row=3)),
        hooks=SimpleNamespace(on_stream_error=None, on_chunk_skipped=None),
        breakers=SimpleNamespace(record_failure=record_failure),
        clock=lambda: 0.0, _release=release, _remaining=lambda ctx: remaining)
    ctx = SimpleNamespace(request_id="r1", admitted_at=0.0, started=0.0)
    cand = SimpleNamespace(backend="local")
    session = StreamSession(executor, ctx, cand, upstream,  # type: ignore[arg-type]
                            StreamEvent(content="a"), None)
    return session, failures


async def _drain(session: StreamSession) -> list[str]:
    return [e.content or "" async for e in session.events()]


async def test_a_read_past_the_deadline_is_cut_as_stalled() -> None:
    pending: asyncio.Future[StreamEvent] = asyncio.get_running_loop().create_future()
    upstream = Upstream([StreamEvent(content="b"), pending])
    session, failures = _session(upstream, remaining=0.0)  # the limit is 0: already past
    with pytest.raises(BackendTimeout) as err:
        await _drain(session)
    assert err.value.code == "stream_stalled"
    assert "deadline passed mid-stream" in err.value.message
    assert failures == [err.value] and session.error is err.value and upstream.closed
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the cut's cancellation withdrawn


async def test_a_read_that_returns_at_once_is_not_cut() -> None:
    # As with asyncio.timeout(0): the cut lands only if the read waits.
    upstream = Upstream([StreamEvent(content="b"), StreamEvent(content="c", finish_reason="stop")])
    session, failures = _session(upstream, remaining=0.0)
    assert await _drain(session) == ["a", "b", "c"]
    assert failures == [] and session.finished
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_timeout_error_from_the_upstream_is_a_stall_as_before() -> None:
    class Raises(Upstream):
        async def __anext__(self) -> StreamEvent:
            raise TimeoutError

    session, _ = _session(Raises([]), idle=2.0)
    with pytest.raises(BackendTimeout) as err:
        await _drain(session)
    assert err.value.code == "stream_stalled" and "no token for 2s" in err.value.message


async def test_a_consumer_cancel_stays_a_cancel() -> None:
    pending: asyncio.Future[StreamEvent] = asyncio.get_running_loop().create_future()
    session, failures = _session(Upstream([pending]))
    task = asyncio.ensure_future(_drain(session))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert failures == []


async def test_an_interrupt_stays_an_interrupt() -> None:
    pending: asyncio.Future[StreamEvent] = asyncio.get_running_loop().create_future()
    session, _ = _session(Upstream([pending]))
    task = asyncio.ensure_future(_drain(session))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    session.interrupt("shutting down")
    with pytest.raises(BackendStreamError) as err:
        await task
    assert err.value.code == "stream_interrupted"


async def test_one_timer_serves_every_read_and_re_arms_only_when_it_fires() -> None:
    loop = asyncio.get_running_loop()
    watch = _ReadWatch()
    watch.arm(100.0)
    handle = watch._handle
    assert isinstance(handle, asyncio.TimerHandle)
    for _ in range(5):  # later deadlines: the pending timer stays
        watch.disarm()
        watch.arm(100.0)
        assert watch._handle is handle
    watch.deadline = loop.time() + 50.0  # fired early: re-armed at the deadline, no cut
    watch._check()
    rearmed = watch._handle
    assert isinstance(rearmed, asyncio.TimerHandle) and rearmed is not handle
    assert not watch.fired and rearmed.when() == watch.deadline
    watch.disarm()
    watch._check()  # fired between reads: stops, cuts nothing
    assert watch._handle is None and not watch.fired
    watch.close()


async def test_an_earlier_deadline_replaces_the_pending_timer() -> None:
    watch = _ReadWatch()
    watch.arm(100.0)
    first = watch._handle
    assert first is not None
    watch.disarm()
    watch.arm(10.0)
    assert watch._handle is not first and first.cancelled()
    watch.close()


async def test_a_cut_the_read_did_not_see_is_withdrawn() -> None:
    seen: list[int] = []

    async def reader() -> None:
        watch = _ReadWatch()
        watch.arm(0.0)  # past at once: the timer cuts the read's first wait
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with contextlib.suppress(asyncio.CancelledError):
            await fut  # a read that swallowed the cut and returned anyway
        task = asyncio.current_task()
        assert task is not None
        seen.append(task.cancelling())
        watch.disarm()  # the cancellation is taken back
        seen.append(task.cancelling())
        assert not watch.fired
        watch.close()

    await asyncio.ensure_future(reader())
    assert seen == [1, 0]
