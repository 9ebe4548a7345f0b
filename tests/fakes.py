"""Scriptable in-process backend for executor/service tests (no network)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from router.backends.base import BackendCall, ProbeResult
from router.errors import BackendError
from router.types import ChatResult, StreamEvent, Usage


@dataclass
class FakeBackend:
    name: str
    local: bool = False
    # Each entry is consumed per attempt: an exception to raise, or None for success.
    script: list[BackendError | None] = field(default_factory=list)
    # For streams: raise this error after N events (None: complete normally).
    stream_fail_after: int | None = None
    stream_error: BackendError | None = None
    stall_after: int | None = None
    calls: list[BackendCall] = field(default_factory=list)
    gate: asyncio.Event | None = None  # if set, chat()/stream() wait for it
    probe_result: ProbeResult = field(default_factory=lambda: ProbeResult(ok=True))
    closed: bool = False

    def _next(self) -> None:
        if self.script:
            err = self.script.pop(0)
            if err is not None:
                raise err

    async def chat(self, call: BackendCall) -> ChatResult:
        self.calls.append(call)
        if self.gate is not None:
            await self.gate.wait()
        self._next()
        return ChatResult(content=f"answer from {self.name}", reasoning="thought",
                          usage=Usage(10, 5))

    async def stream(self, call: BackendCall) -> AsyncIterator[StreamEvent]:
        self.calls.append(call)
        if self.gate is not None:
            await self.gate.wait()
        self._next()
        tokens = ["a", "b", "c", "d", "e"]
        for i, tok in enumerate(tokens):
            if self.stream_fail_after is not None and i == self.stream_fail_after:
                raise self.stream_error or BackendError("cut", backend=self.name)
            if self.stall_after is not None and i == self.stall_after:
                await asyncio.Event().wait()
            yield StreamEvent(reasoning=tok if i == 0 else None, content=tok if i else None)
        yield StreamEvent(finish_reason="stop", usage=Usage(10, 5))

    async def probe(self) -> ProbeResult:
        return self.probe_result

    async def warm(self, model_id: str) -> None:
        return None

    async def aclose(self) -> None:
        self.closed = True
