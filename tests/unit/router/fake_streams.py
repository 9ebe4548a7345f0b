"""Scripted stream backends for the continuation tests: each call plays the next script, a list
of events, errors (an error before any event fails the attempt, after one breaks the stream)
and gates (the stream waits there until released)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from router.backends.base import BackendCall, ProbeResult
from router.errors import BackendError, BackendStreamError
from router.types import ChatResult, StreamEvent, ToolCall, Usage


@dataclass
class Gate:
    """A step that waits: `reached` is set when the stream gets there, `release` lets it on."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


Step = StreamEvent | BackendError | Gate


def cut(code: str = "stream_truncated") -> BackendStreamError:
    return BackendStreamError("cut", backend="x", code=code)


def text(*parts: str, usage: Usage | None = None, finish: bool = True) -> list[Step]:
    """Content events, then a finish carrying `usage` (none if `finish` is False)."""
    steps: list[Step] = [StreamEvent(content=p) for p in parts]
    if finish:
        steps.append(StreamEvent(finish_reason="stop", usage=usage))
    return steps


def tool_call() -> StreamEvent:
    return StreamEvent(tool_calls=[ToolCall.model_validate(
        {"id": "c1", "function": {"name": "f", "arguments": "{}"}})])


@dataclass
class ScriptBackend:
    name: str
    local: bool = False
    scripts: list[list[Step]] = field(default_factory=list)
    calls: list[BackendCall] = field(default_factory=list)
    probe_result: ProbeResult = field(default_factory=lambda: ProbeResult(ok=True))

    async def chat(self, call: BackendCall) -> ChatResult:
        raise AssertionError("streams only")

    async def stream(self, call: BackendCall) -> AsyncIterator[StreamEvent]:
        self.calls.append(call)
        script = self.scripts.pop(0) if self.scripts else text("fallback answer")
        for step in script:
            if isinstance(step, Gate):
                step.reached.set()
                await step.release.wait()
                continue
            if isinstance(step, BackendError):
                step.backend = self.name
                raise step
            yield step

    async def probe(self) -> ProbeResult:
        return self.probe_result

    async def warm(self, model_id: str) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def last_messages(self) -> list[dict[str, Any]]:
        return [m.model_dump(exclude_none=True) for m in self.calls[-1].request.messages]
