"""Backend type -> implementation. Vendor modules are imported only when used."""

from __future__ import annotations

from router.backends.base import Backend
from router.backends.configs import BedrockConfig, OllamaConfig, SageMakerConfig


def build_backend(name: str, config: OllamaConfig | BedrockConfig | SageMakerConfig) -> Backend:
    if isinstance(config, OllamaConfig):
        from router.backends.ollama import OllamaBackend

        return OllamaBackend(name, config)
    if isinstance(config, BedrockConfig):
        from router.backends.bedrock import BedrockBackend

        return BedrockBackend(name, config)
    from router.backends.sagemaker import SageMakerBackend

    return SageMakerBackend(name, config)
