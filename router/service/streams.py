"""Open streams: what a surface iterates, and the registry that drains them on shutdown.

`OpenedStream` is returned by `RouterService.stream` once the first event has arrived (so the
surface may send its status line and headers). Iterating it yields `StreamEvent`s; a break
after the first event is continued on the plan's next candidate where it can be
(`continuation.py`: one stream, one finish, usage summed); one that cannot raises the break's
`BackendError` (with `meta`), which the surface ends in-band.
`aclose()` — always called, however the response ends — closes the upstream stream, releases
the local slot, leaves the runtime and records the outcome once. A stream is `ok` once the
surface has sent the event that finishes the answer, even if the client hangs up while the
upstream is still being closed. A surface whose client stops
reading calls `client_stalled()` first, so the outcome says `client_stalled`.

An event's `ready_next` hint (the next one is already decoded) passes to the surface, which
may then write both at once; after a continuation it is dropped, since a continuing attempt
may hold text back and read on.

Usage is never reported as zeros: when the upstream sent none (or only zeros), the final event
carries the router's estimate (`Usage.estimated`): the prompt as `tokens.py` estimates it, the
completion from the length of the streamed text; the surfaces mark it as an estimate.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator

from router.continuation import ContinuedStream
from router.errors import BackendError
from router.route_meta import RouteMeta
from router.service.admission import Prepared
from router.service.client import CLIENT_CLOSED_STATUS, StreamOutcome
from router.service.recorder import Recorder
from router.stream_session import StreamSession
from router.tokens import CHARS_PER_TOKEN
from router.types import StreamEvent, Usage

SHUTDOWN_MESSAGE = "the router is shutting down; the answer above is incomplete"


class StreamRegistry:
    """The streams being read right now, for the drain on SIGTERM."""

    def __init__(self) -> None:
        self.active: set[ContinuedStream] = set()
        self._drain_task: asyncio.Task[None] | None = None

    def begin_drain(self, grace_s: float) -> None:
        """Streams still running shortly before the grace ends get an in-band error instead
        of being cut at the socket (streams never lie)."""
        if self._drain_task is not None:
            return

        async def drain() -> None:
            await asyncio.sleep(max(0.0, grace_s - min(0.5, grace_s / 4)))
            self.interrupt_all()

        self._drain_task = asyncio.get_running_loop().create_task(drain())

    def interrupt_all(self) -> None:
        for session in list(self.active):
            session.interrupt(SHUTDOWN_MESSAGE)


class OpenedStream:
    def __init__(self, prep: Prepared, session: StreamSession, meta: RouteMeta,
                 recorder: Recorder, registry: StreamRegistry) -> None:
        self.meta = meta
        self.model = prep.ctx.facts.model  # the logical model
        # The model as the serving backend names it: the `model` of the surface's chunks.
        self.served_model = meta.served_model or self.model
        self.privacy = prep.ctx.facts.privacy  # the request's privacy class
        self.include_usage = prep.ctx.request.include_usage
        self.usage: Usage | None = None
        self.outcome: str = StreamOutcome.CLIENT_DISCONNECTED
        self.status = CLIENT_CLOSED_STATUS
        self._prep = prep
        self._session = ContinuedStream(session)
        self._recorder = recorder
        self._registry = registry
        self._events: AsyncGenerator[StreamEvent, None] | None = None
        self._closed = False
        self._chars = 0  # streamed text, for a completion estimate when the upstream sent none

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        if self._events is None:
            self._events = self._iterate()
        return self._events

    async def _iterate(self) -> AsyncGenerator[StreamEvent, None]:
        session = self._session
        self._registry.active.add(session)
        try:
            async for event in session.events():
                self._chars += _text_chars(event)
                if event.finish_reason is not None and _no_counts(event.usage):
                    event = dataclasses.replace(event, usage=self._estimate())
                if event.ready_next and session.continuations:
                    # A continuing attempt may hold events back (and read on): no promise.
                    event = dataclasses.replace(event, ready_next=False)
                if event.usage is not None:
                    self.usage = event.usage
                yield event
                if event.finish_reason is not None:
                    # The surface came back for more: the last event went out, so the answer
                    # is whole. Closing the upstream afterwards (a thread hop for Bedrock) may
                    # be cut short by a client that hangs up at the end, as SDKs do.
                    self.outcome, self.status = StreamOutcome.OK, 200
            self.outcome, self.status = StreamOutcome.OK, 200
        except BackendError as exc:
            self.outcome, self.status = exc.code or "stream_error", 502
            exc.meta = self.meta
            raise
        finally:
            self._registry.active.discard(session)

    def _estimate(self) -> Usage:
        completion = -(-self._chars // CHARS_PER_TOKEN)  # rounded up
        return Usage(self._prep.ctx.facts.prompt_tokens, completion, estimated=True)

    def client_stalled(self) -> None:
        """The surface gave up on a client that stopped reading."""
        if self.outcome == StreamOutcome.CLIENT_DISCONNECTED:
            self.outcome = StreamOutcome.CLIENT_STALLED

    async def aclose(self) -> None:
        """Release everything and record the outcome; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._events is not None:
                await self._events.aclose()
            self._registry.active.discard(self._session)
            await self._session.aclose()
        finally:
            self._prep.runtime.leave()
            await self._recorder.finish(self._prep, status=self.status, outcome=self.outcome,
                                        usage=self.usage, stream=True)


def _text_chars(event: StreamEvent) -> int:
    n = len(event.content or "") + len(event.reasoning or "")
    for tc in event.tool_calls or ():
        n += len(tc.function.name) + len(tc.function.arguments)
    return n


def _no_counts(usage: Usage | None) -> bool:
    """No usage, or only zeros: nothing the upstream counted."""
    return usage is None or (usage.prompt_tokens == 0 and usage.completion_tokens == 0)
