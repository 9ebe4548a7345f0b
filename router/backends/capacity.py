"""Local capacity: what the router needs to know about a backend that runs on our own hardware.

A backend config whose `local_capacity()` returns a `LocalCapacity` is planned as a local host
(slots in the capacity ledger, a context window, VRAM fit, periodic probes); one that returns
None is planned as a cloud backend. The planner, the runtime (probe intervals), the service
(queue gauges) and the status view read this, never a backend's config class.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1 << 30  # policy sizes are GiB, as GPU vendors and Ollama mean them


@dataclass(frozen=True, slots=True)
class LocalCapacity:
    slots: int  # requests the host serves in parallel (per model)
    probe_interval_s: float  # how often the prober asks for residency and health
    num_ctx: int | None = None  # context the host loads models with, if the policy sets it
    context_window: int | None = None  # the backend's own limit, if the policy sets it
    gpu_memory_bytes: float | None = None  # card size when the probe cannot say (no NVML)
    use_nvml: bool = False  # free VRAM read from NVML (router on the GPU host)
    nvml_device: int = 0

    @property
    def configured_window(self) -> int | None:
        """The window to plan with when the host has not reported one for a loaded model."""
        return self.num_ctx or self.context_window
