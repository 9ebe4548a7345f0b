"""The stream session skips malformed chunks: one is logged (never its text) and counted and
the stream goes on; `stream.max_malformed_in_a_row` in a row end it as a broken stream."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from router.backends.base import BackendCall
from router.errors import BackendStreamError
from router.types import StreamEvent, Usage
from tests.fakes import FakeBackend
from tests.unit.router.test_executor import ctx, plan_of, setup

ANSWER = ["SECRET-", "answer ", "text ", "here", "!"]


@dataclass
class MalformedBackend(FakeBackend):
    """Streams ANSWER; a malformed marker comes before each token index in `bad_before`
    (an index equal to len(ANSWER) puts it before the final event)."""

    bad_before: list[int] = field(default_factory=list)

    async def stream(self, call: BackendCall) -> AsyncIterator[StreamEvent]:
        self.calls.append(call)
        for i in range(len(ANSWER) + 1):
            for _ in range(self.bad_before.count(i)):
                yield StreamEvent(malformed=True)
            if i < len(ANSWER):
                yield StreamEvent(content=ANSWER[i])
        yield StreamEvent(finish_reason="stop", usage=Usage(10, 5))


async def _run(bad_before: list[int], limit: int | None = None
               ) -> tuple[list[StreamEvent], BackendStreamError | None, list[str], int]:
    local = MalformedBackend("local", local=True, bad_before=bad_before)
    ex, store, clock, _slept, backends = setup(local=local)
    if limit is not None:
        ex.policy = ex.policy.model_copy(update={"stream": ex.policy.stream.model_copy(
            update={"max_malformed_in_a_row": limit})})
    skipped: list[str] = []
    ex.hooks.on_chunk_skipped = skipped.append
    session = await ex.open_stream(ctx(clock, stream=True), plan_of("local", "bedrock"))
    got: list[StreamEvent] = []
    err: BackendStreamError | None = None
    try:
        async for ev in session.events():
            got.append(ev)
    except BackendStreamError as exc:
        err = exc
    assert backends["bedrock"].calls == []
    return got, err, skipped, store.held()


def _text(events: list[StreamEvent]) -> str:
    return "".join(e.content or "" for e in events)


async def test_one_malformed_chunk_is_skipped_logged_and_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="router.executor")
    got, err, skipped, held = await _run([2])
    assert err is None and held == 0
    assert _text(got) == "".join(ANSWER) and got[-1].finish_reason == "stop"
    assert not any(e.malformed for e in got)  # the marker never reaches a surface
    assert skipped == ["local"]
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "malformed" in logged and "r1" in logged
    assert not any(word.strip() in logged for word in ANSWER)  # no answer text in the log


async def test_a_malformed_first_chunk_is_skipped_too() -> None:
    got, err, skipped, _ = await _run([0])
    assert err is None and _text(got) == "".join(ANSWER) and skipped == ["local"]


async def test_malformed_chunks_apart_never_add_up() -> None:
    got, err, skipped, _ = await _run([1, 1, 2, 2, 3, 3, 5, 5])
    assert err is None and _text(got) == "".join(ANSWER) and len(skipped) == 8


async def test_three_in_a_row_is_a_broken_stream() -> None:
    got, err, skipped, held = await _run([2, 2, 2])
    assert err is not None and err.code == "stream_malformed" and err.backend == "local"
    assert _text(got) == "".join(ANSWER[:2]) and not any(e.finish_reason for e in got)
    assert len(skipped) == 3 and held == 0


async def test_the_limit_comes_from_the_policy() -> None:
    _, err, _, _ = await _run([2, 2, 2], limit=4)
    assert err is None
    _, err, skipped, _ = await _run([2], limit=1)
    assert err is not None and err.code == "stream_malformed" and skipped == ["local"]
