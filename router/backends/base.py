"""The one interface every backend implements, and the values it exchanges.

A backend owns one wire protocol: it translates a `ChatRequest` to its vendor format,
translates answers back to `ChatResult` / `StreamEvent`, and maps vendor errors (by type,
status or code, never by message text) into `router.errors.BackendError` subclasses.
It knows nothing about routing, retries or other backends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from router.types import ChatRequest, ChatResult, StreamEvent


@dataclass(slots=True)
class BackendCall:
    """One attempt: the request plus what the chosen backend needs to serve it."""

    request: ChatRequest
    model_id: str  # the backend's own id: Ollama tag, Bedrock model id, SageMaker endpoint model
    logical_model: str
    request_id: str = ""
    timeout_s: float | None = None  # whole-attempt bound (the executor also enforces the deadline)


@dataclass(slots=True)
class LoadedModel:
    """A model resident on a local host, as `/api/ps` reports it."""

    model_id: str
    size: int  # bytes
    size_vram: int  # bytes on the GPU
    context_length: int | None = None

    @property
    def fully_on_gpu(self) -> bool:
        return self.size > 0 and self.size_vram >= self.size


@dataclass(slots=True)
class ProbeResult:
    """Cheap health and residency facts. Cloud backends never run billable inference to probe."""

    ok: bool
    detail: str = ""
    version: str | None = None
    loaded: list[LoadedModel] = field(default_factory=list)
    gpu_free_bytes: int | None = None  # from NVML when the router runs on the GPU host
    gpu_total_bytes: int | None = None


@runtime_checkable
class Backend(Protocol):
    name: str
    local: bool

    async def chat(self, call: BackendCall) -> ChatResult: ...

    def stream(self, call: BackendCall) -> AsyncIterator[StreamEvent]: ...

    async def probe(self) -> ProbeResult: ...

    async def warm(self, model_id: str) -> None:
        """Ask a local backend to load a model (no-op for cloud backends)."""
        ...

    async def aclose(self) -> None: ...
