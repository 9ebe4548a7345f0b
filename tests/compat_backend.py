"""A backend type defined outside the router package: `openai_compat`, a local host that speaks
OpenAI Chat Completions (here the Ollama simulator's `/v1` surface).

It is one module plus its config model plus one `register_backend` call (`registered()`), and
touches no router module: the policy loader accepts `type: openai_compat`, the runtime builds
it through the registry, the planner plans it as local from its `local_capacity()`, and the
backend contract suite runs over it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import httpx
import orjson
from pydantic import Field

from router.backends.base import BackendCall, ProbeResult, build_request, plain
from router.backends.capacity import LocalCapacity
from router.backends.configs import BackendConfigBase
from router.backends.openai_stream import ChunkAssembler, SSEDecoder, tool_call, usage_from
from router.backends.registry import register_backend, unregister_backend
from router.errors import (
    BackendError,
    BackendModelMissing,
    BackendRateLimited,
    BackendRejected,
    BackendStreamError,
    BackendTimeout,
    BackendUnavailable,
)
from router.types import ChatResult, StreamEvent, Usage

TYPE = "openai_compat"


class CompatConfig(BackendConfigBase):
    type: Literal["openai_compat"] = "openai_compat"
    local: Literal[True] = True
    base_url: str
    parallel: int = Field(default=1, ge=1)
    probe_interval_s: float = Field(default=5.0, gt=0)

    def local_capacity(self) -> LocalCapacity:
        return LocalCapacity(slots=self.parallel, probe_interval_s=self.probe_interval_s,
                             context_window=self.context_window)


def build_body(call: BackendCall, *, stream: bool) -> dict[str, Any]:
    req = call.request
    messages = []
    for m in req.messages:
        msg: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            msg["tool_calls"] = [plain(tc) for tc in m.tool_calls]
        if m.tool_call_id is not None:
            msg["tool_call_id"] = m.tool_call_id
        if m.reasoning and m.role == "assistant":
            msg["reasoning"] = m.reasoning
        messages.append(msg)
    body: dict[str, Any] = {"model": call.model_id, "messages": messages, "stream": stream}
    if req.tools:
        body["tools"] = plain(req.tools)
    if req.reasoning_effort is not None:
        body["reasoning_effort"] = req.reasoning_effort
    if req.max_tokens is not None:
        body["max_tokens"] = req.max_tokens
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _status_error(resp: httpx.Response, backend: str) -> BackendError:
    msg = f"{backend}: HTTP {resp.status_code}"
    if resp.status_code == 429:
        after = resp.headers.get("retry-after")
        return BackendRateLimited(msg, backend=backend,
                                  retry_after=float(after) if after else None)
    if resp.status_code == 404:
        return BackendModelMissing(msg, backend=backend)
    if resp.status_code >= 500:
        return BackendUnavailable(msg, backend=backend)
    return BackendRejected(msg, backend=backend)


class CompatBackend:
    def __init__(self, name: str, config: CompatConfig) -> None:
        self.name = name
        self.local = config.local
        self.config = config
        t = config.timeouts
        self._client = httpx.AsyncClient(base_url=config.base_url,
                                         timeout=httpx.Timeout(t.read_s, connect=t.connect_s))
        self._closed = False

    async def chat(self, call: BackendCall) -> ChatResult:
        body = build_request(self.name, lambda: build_body(call, stream=False))
        try:
            resp = await self._client.post("/v1/chat/completions", json=body)
        except httpx.TimeoutException:
            raise BackendTimeout(f"{self.name}: no answer in time", backend=self.name) from None
        except httpx.TransportError:
            raise BackendUnavailable(f"{self.name}: connection failed",
                                     backend=self.name) from None
        if resp.status_code >= 400:
            raise _status_error(resp, self.name)
        data = resp.json()
        choice = data["choices"][0]
        msg = choice["message"]
        calls = [tool_call(tc.get("id"), (tc.get("function") or {}).get("name"),
                           (tc.get("function") or {}).get("arguments"), self.name)
                 for tc in msg.get("tool_calls") or []]
        return ChatResult(content=msg.get("content") or None, reasoning=msg.get("reasoning"),
                          tool_calls=calls, finish_reason=choice.get("finish_reason") or "stop",
                          usage=usage_from(data.get("usage")) or Usage(0, 0))

    async def stream(self, call: BackendCall) -> AsyncIterator[StreamEvent]:
        body = build_request(self.name, lambda: build_body(call, stream=True))
        request = self._client.build_request("POST", "/v1/chat/completions", json=body)
        try:
            resp = await self._client.send(request, stream=True)
        except httpx.TimeoutException:
            raise BackendTimeout(f"{self.name}: no answer in time", backend=self.name) from None
        except httpx.TransportError:
            raise BackendUnavailable(f"{self.name}: connection failed",
                                     backend=self.name) from None
        try:
            if resp.status_code >= 400:
                await resp.aread()
                raise _status_error(resp, self.name)
            async for event in self._events(resp):
                yield event
        finally:
            await resp.aclose()

    async def _events(self, resp: httpx.Response) -> AsyncIterator[StreamEvent]:
        decoder, assembler = SSEDecoder(), ChunkAssembler(self.name)
        try:
            async for raw in resp.aiter_raw():
                for data in decoder.feed(raw):
                    if data.strip() == "[DONE]":
                        yield assembler.final()
                        return
                    try:
                        obj = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        raise BackendStreamError(f"{self.name}: bad JSON in the stream",
                                                 backend=self.name) from None
                    for event in assembler.chunk(obj):
                        yield event
        except httpx.TimeoutException:
            raise BackendTimeout(f"{self.name}: stream stalled", backend=self.name) from None
        except httpx.TransportError:
            raise BackendStreamError(f"{self.name}: stream cut", backend=self.name) from None
        yield assembler.final()

    async def probe(self) -> ProbeResult:
        try:
            resp = await self._client.get("/v1/models")
        except httpx.HTTPError as exc:
            return ProbeResult(ok=False, detail=type(exc).__name__)
        return ProbeResult(ok=resp.status_code == 200, detail=f"HTTP {resp.status_code}")

    async def warm(self, model_id: str) -> None:
        return None

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.aclose()


@contextmanager
def registered() -> Iterator[None]:
    """The `openai_compat` type, registered for the duration (other tests see the built-ins
    only)."""
    register_backend(TYPE, CompatConfig, CompatBackend)
    try:
        yield
    finally:
        unregister_backend(TYPE)
