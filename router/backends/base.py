"""The one interface every backend implements, and the values it exchanges.

A backend owns one wire protocol: it translates a `ChatRequest` to its vendor format,
translates answers back to `ChatResult` / `StreamEvent`, and maps vendor errors (by type,
status or code, never by message text) into `router.errors.BackendError` subclasses.
It knows nothing about routing, retries or other backends.

Building the vendor request is an explicit first step of every attempt (`prepare`), run
through `build_request` before anything is sent: a BackendError it raises (a request the vendor
cannot take) passes unchanged, any other exception is the router's bug and becomes
`RequestBuildError`, which the executor returns as a 500 without retrying, failing over or
touching a breaker. `plain` turns whatever typed shapes `ChatRequest` carries (pydantic models,
dicts) into plain JSON values, so the builders stay total over them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from router.errors import RequestBuildError, RouterError
from router.types import ChatRequest, ChatResult, StreamEvent

T = TypeVar("T")


def build_request(backend: str, build: Callable[[], T]) -> T:
    """Run a request builder; an unexpected exception becomes RequestBuildError."""
    try:
        return build()
    except RouterError:
        raise
    except Exception as exc:  # noqa: BLE001 - a builder's bug, reported as such
        raise RequestBuildError.from_exception(exc, backend) from exc


def plain(value: Any) -> Any:
    """A JSON-shaped copy of a request field: models dumped (aliases, no None), containers
    copied, scalars as they are."""
    if isinstance(value, BaseModel):
        return plain(value.model_dump(mode="json", by_alias=True, exclude_none=True))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


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
    # Ollama's cloud: models it forwards to ollama.com (`/api/tags` entries with `remote_host`,
    # name -> remote host), and whether the host has its cloud features disabled (`/api/status`;
    # None: this Ollama cannot say, or the probe could not ask).
    remote_models: dict[str, str] = field(default_factory=dict)
    cloud_disabled: bool | None = None
    cloud_source: str | None = None  # Ollama's own word: none, env, config or both


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
