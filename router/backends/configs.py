"""Config models for each backend type (pure pydantic, no vendor imports).

The policy schema builds its discriminated union from `BACKEND_CONFIGS`; a new backend adds
its config model here and its factory in `registry.py`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_per_mtok: float = Field(ge=0, description="USD per million input tokens")
    output_per_mtok: float = Field(ge=0, description="USD per million output tokens")


class Timeouts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    connect_s: float = Field(default=3.0, gt=0)
    read_s: float = Field(default=300.0, gt=0)


class _BackendBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: dict[str, str] = Field(
        description="logical model -> this backend's own id (Ollama tag, Bedrock id, ...)"
    )
    timeouts: Timeouts = Field(default_factory=Timeouts)
    context_window: int | None = Field(
        default=None, gt=0, description="largest prompt+completion tokens this backend accepts"
    )
    price: Price | None = None
    daily_budget_usd: float | None = Field(default=None, ge=0)


class OllamaConfig(_BackendBase):
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


class BedrockConfig(_BackendBase):
    type: Literal["bedrock"] = "bedrock"
    local: Literal[False] = False
    region: str = "us-west-2"
    endpoint_url: str | None = None
    profile: str | None = None


class SageMakerConfig(_BackendBase):
    type: Literal["sagemaker"] = "sagemaker"
    local: Literal[False] = False
    region: str = "us-west-2"
    endpoint_name: str
    inference_component: str | None = None
    target_variant: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None


BackendConfig = Annotated[
    OllamaConfig | BedrockConfig | SageMakerConfig, Field(discriminator="type")
]
BACKEND_TYPES = ("ollama", "bedrock", "sagemaker")
