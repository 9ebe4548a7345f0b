"""Config models of the built-in backend types (pure pydantic, no vendor imports).

Every backend config derives from `BackendConfigBase` (the fields every backend has: model ids,
timeouts, context window, price, budget) and names its `type` with a `Literal` default. Two
capabilities replace checks of the config's class: `local_capacity()` (slots, context, GPU
memory, probe interval; None for a cloud backend), `remote_model_reason()` (why a model id
on this backend leaves the premises although the backend is local; None when it does not) and
`prefill_default` (whether the type continues a trailing assistant message unless the config's
`prefill` says otherwise: Ollama yes, Bedrock and SageMaker no).
`registry.py` maps each type name to its config model and factory.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from router.backends.base import ProbeResult
from router.backends.capacity import GB, LocalCapacity
from router.backends.ollama_cloud import cloud_reason


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_per_mtok: float = Field(ge=0, description="USD per million input tokens")
    output_per_mtok: float = Field(ge=0, description="USD per million output tokens")


class Timeouts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    connect_s: float = Field(default=3.0, gt=0)
    read_s: float = Field(default=300.0, gt=0)


class BackendConfigBase(BaseModel):
    """What every backend config has. A subclass overrides `type` with a `Literal` default."""

    model_config = ConfigDict(extra="forbid")
    type: str
    local: bool = False
    models: dict[str, str] = Field(
        description="logical model -> this backend's own id (Ollama tag, Bedrock id, ...)"
    )
    timeouts: Timeouts = Field(default_factory=Timeouts)
    context_window: int | None = Field(
        default=None, gt=0, description="largest prompt+completion tokens this backend accepts"
    )
    price: Price | None = None
    daily_budget_usd: float | None = Field(default=None, ge=0)
    prefill: bool | None = Field(
        default=None, description="continues a trailing assistant message (prefill); None: "
        "the type's default (`prefill_default`)")

    @property
    def prefill_default(self) -> bool:
        """Whether this type continues a trailing assistant message unless told otherwise."""
        return False

    @property
    def supports_prefill(self) -> bool:
        return self.prefill_default if self.prefill is None else self.prefill

    @model_validator(mode="after")
    def _local_has_capacity(self) -> BackendConfigBase:
        if self.local and self.local_capacity() is None:
            raise ValueError(f"backend type '{self.type}' is local but has no local_capacity()")
        return self

    def local_capacity(self) -> LocalCapacity | None:
        """Slots, context and GPU facts of a local host; None: planned as a cloud backend."""
        return None

    def remote_model_reason(self, model_id: str, probe: ProbeResult | None) -> str | None:
        """Why `model_id` here is served off the premises, in words; None when it is not."""
        return None


class OllamaConfig(BackendConfigBase):
    type: Literal["ollama"] = "ollama"
    base_url: str = "http://127.0.0.1:11434"
    local: Literal[True] = True
    parallel: int = Field(default=1, ge=1, description="OLLAMA_NUM_PARALLEL on that host")
    gpu_memory_gb: float | None = Field(
        default=None, gt=0, description="card size when NVML is not available on this host"
    )
    use_nvml: bool = Field(default=False, description="free VRAM from NVML (router on GPU host)")
    nvml_device: int = 0
    keep_alive: str | int | None = "5m"
    num_ctx: int | None = Field(default=None, gt=0, description="context to load models with")
    probe_interval_s: float = Field(default=5.0, gt=0)

    @property
    def prefill_default(self) -> bool:
        """True: Ollama's `/api/chat` continues a trailing assistant message (for gpt-oss its
        harmony parser resumes in the final channel after one with content, in the analysis
        channel after one with only thinking: harmony/harmonyparser.go
        `AddImplicitStartOrPrefill`, called with the last message from server/routes.go)."""
        return True

    def local_capacity(self) -> LocalCapacity:
        return LocalCapacity(
            slots=self.parallel, probe_interval_s=self.probe_interval_s, num_ctx=self.num_ctx,
            context_window=self.context_window,
            gpu_memory_bytes=self.gpu_memory_gb * GB if self.gpu_memory_gb else None,
            use_nvml=self.use_nvml, nvml_device=self.nvml_device)

    def remote_model_reason(self, model_id: str, probe: ProbeResult | None) -> str | None:
        """One of Ollama's cloud models (by its tag, or as `/api/tags` lists it)."""
        return cloud_reason(model_id, probe)


class BedrockConfig(BackendConfigBase):
    type: Literal["bedrock"] = "bedrock"
    local: Literal[False] = False
    region: str = "us-west-2"
    endpoint_url: str | None = None
    profile: str | None = None

    @property
    def prefill_default(self) -> bool:
        """False: that Converse continues a trailing assistant turn for gpt-oss (rather than
        answering after it) is not confirmed; the safe default regenerates. `prefill: true`
        opts in (the turn is sent as an `assistant` message, its text unchanged)."""
        return False


class SageMakerConfig(BackendConfigBase):
    type: Literal["sagemaker"] = "sagemaker"
    local: Literal[False] = False
    region: str = "us-west-2"
    endpoint_name: str
    inference_component: str | None = None
    target_variant: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None

    @property
    def prefill_default(self) -> bool:
        """False: whether a trailing assistant message is continued is the container's choice
        (vLLM needs `continue_final_message`, which this backend does not send); set
        `prefill: true` for a container known to continue one."""
        return False
