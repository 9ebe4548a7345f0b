"""The policy file's schema. Unknown keys are errors everywhere (`extra="forbid"`).

A policy names the logical models, the backends (with each one's id for each model), the
routes (first match wins), and the knobs of privacy, retries, breakers and streaming.
Cross-field checks (unknown backend names, private routes to the cloud) live in `loader.py`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from router.backends.registry import BackendConfig

PrivacyClass = Literal["private", "standard"]
DetectorKind = Literal["email", "phone", "card", "iban", "aws_key", "private_key"]
DETECTOR_KINDS: tuple[DetectorKind, ...] = ("email", "phone", "card", "iban", "aws_key",
                                            "private_key")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    aliases: list[str] = Field(default_factory=list)
    vram_gb: float = Field(gt=0, description="weights resident in VRAM")
    kv_bytes_per_token: int = Field(default=24576, ge=0, description="KV cache per context token")
    context_length: int = Field(default=131072, gt=0, description="the model's own maximum")
    default_max_tokens: int = Field(default=2048, gt=0)


class RouteMatch(_Strict):
    model: str | list[str] | None = None
    privacy: PrivacyClass | None = None
    api_key: str | list[str] | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class Route(_Strict):
    name: str = Field(min_length=1)
    match: RouteMatch = Field(default_factory=RouteMatch)
    targets: list[str] = Field(min_length=1)
    max_queue_wait_s: float = Field(default=1.0, ge=0)
    # Hedge the first event after this long (None: derived per backend, see HedgeConfig).
    hedge_after_s: float | None = Field(default=None, gt=0)


class DetectorConfig(_Strict):
    enabled: bool = True
    kinds: list[DetectorKind] = Field(default_factory=lambda: list(DETECTOR_KINDS))


class PrivacyConfig(_Strict):
    default_class: PrivacyClass = "standard"
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    private_aliases: dict[str, str] = Field(
        default_factory=dict, description="alias -> logical model; the alias makes it private"
    )
    private_max_queue_wait_s: float = Field(default=30.0, ge=0)
    load_timeout_s: float = Field(default=300.0, gt=0, description="private wait for a cold load")


class ApiKey(_Strict):
    name: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    default_privacy: PrivacyClass = "standard"
    models: list[str] | None = None
    max_queue_wait_s: float | None = Field(default=None, ge=0)
    daily_budget_usd: float | None = Field(default=None, ge=0, description="cloud spend cap")
    admin: bool = False
    ops: bool = Field(default=False, description="may read /v1/router/status and /metrics")


class RetryConfig(_Strict):
    attempts: int = Field(default=3, ge=1, le=10, description="attempts per backend")
    initial_s: float = Field(default=0.2, ge=0)
    max_s: float = Field(default=2.0, ge=0)
    jitter_s: float = Field(default=0.2, ge=0)
    retry_after_cap_s: float = Field(default=5.0, ge=0)
    budget_ratio: float = Field(
        default=0.2, ge=0, le=1, description="retries allowed per request seen, per backend"
    )
    min_retries_per_s: float = Field(
        default=10.0, ge=0, description="retries allowed per second per backend whatever the "
        "traffic (the budget's floor; 0: the ratio only)"
    )


class CircuitConfig(_Strict):
    failure_threshold: int = Field(default=5, ge=1)
    open_for_s: float = Field(default=30.0, gt=0)
    local_open_for_s: float = Field(default=2.0, gt=0)


class StreamConfig(_Strict):
    first_token_timeout_s: float = Field(default=30.0, gt=0)
    idle_timeout_s: float = Field(default=30.0, gt=0)
    # Undecodable chunks skipped in a row before the stream counts as broken.
    max_malformed_in_a_row: int = Field(default=3, ge=1)
    max_continuations: int = Field(default=1, ge=0)  # per request, after a break


class AdmissionConfig(_Strict):
    """Local admission and the wait estimate (docs/design.md, Routing signals)."""

    wait_quantile: float = Field(default=0.8, gt=0, lt=1)  # admit when this quantile fits
    # A standard request queues locally only behind fewer than this many waiters (None: any
    # number), or behind waiters whose predicted service drains within `drain_share` of its
    # bound (long bounds keep deep queues); else it goes to the next candidate at once.
    max_waiting_ahead: int | None = Field(default=1, ge=1)
    drain_share: float = Field(default=0.1, ge=0, le=1)
    private_first: bool = True  # private waiters ahead of standard ones
    early_spill: bool = True  # a standard waiter leaves once it cannot make its bound
    prefill_tps_default: float = Field(default=1000.0, gt=0)  # until measured per backend
    decode_tps_default: float = Field(default=40.0, gt=0)
    sample_window: int = Field(default=64, ge=1, le=64)  # recent requests per backend model


class HedgeConfig(_Strict):
    """Hedged first tokens (docs/design.md, Failure semantics): when a candidate has sent no
    first event (streams) or no answer (whole) after the delay, the next eligible candidate
    starts in parallel; the first to deliver wins. The delay is the route's `hedge_after_s`,
    else `factor` x the backend's observed `percentile` first-event latency (once it has
    `min_samples`; `default_s` before), at least `floor_s` and, for streams, at most
    `max_s`; for a cold local model never under its observed load time (`cold_load_s`
    until one is observed)."""

    enabled: bool = True
    percentile: float = Field(default=0.95, gt=0, lt=1)
    factor: float = Field(default=2.0, ge=1)
    floor_s: float = Field(default=1.0, gt=0)
    max_s: float = Field(default=10.0, gt=0)
    default_s: float = Field(default=5.0, gt=0)  # until min_samples were observed
    min_samples: int = Field(default=20, ge=1)
    window: int = Field(default=200, ge=1, le=10000)  # recent first-event latencies kept
    cold_load_s: float = Field(default=60.0, gt=0)  # a cold load, until one is observed


class Policy(_Strict):
    version: Literal[1] = 1
    models: dict[str, ModelSpec]
    backends: dict[str, BackendConfig]  # each validated as its registered `type`
    routes: list[Route] = Field(min_length=1)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    keys: list[ApiKey] = Field(default_factory=list)
    keys_file: str | None = None
    retry: RetryConfig = Field(default_factory=RetryConfig)
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)
    hedge: HedgeConfig = Field(default_factory=HedgeConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    deadline_s: float = Field(default=120.0, gt=0)

    def alias_table(self) -> dict[str, tuple[str, bool]]:
        """Every accepted spelling -> (logical model, makes-private)."""
        table: dict[str, tuple[str, bool]] = {}
        for logical, spec in self.models.items():
            for spelling in (logical, *spec.aliases):
                table[normalise_model_name(spelling)] = (logical, False)
                table[spelling.lower()] = (logical, False)
        for alias, logical in self.privacy.private_aliases.items():
            table[alias.lower()] = (logical, True)
        return table


_SUFFIX = re.compile(r"-\d+:\d+$")


def normalise_model_name(name: str) -> str:
    """`gpt-oss:20b`, `openai/gpt-oss-20b`, `openai.gpt-oss-20b-1:0` -> `gpt-oss-20b`."""
    n = name.strip().lower()
    for prefix in ("openai/", "openai.", "us.openai.", "eu.openai."):
        if n.startswith(prefix):
            n = n[len(prefix) :]
            break
    n = _SUFFIX.sub("", n)
    return n.replace(":", "-")
