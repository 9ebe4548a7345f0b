"""Backend types: type name -> (config model, factory). Vendor modules are imported only when used.

A backend is one module plus its config model (a `BackendConfigBase` subclass whose `type` is a
`Literal` default) and one call:

    register_backend("ollama", OllamaConfig, lazy_factory("router.backends.ollama",
                                                          "OllamaBackend"))

The policy schema validates each `backends.<name>` entry through `validate_backend_config`,
which dispatches on its `type` to the registered config model, so a type registered later (a
plugin, a test) is accepted by the next policy parsed; `build_backend` makes the backend from
its config. The built-in types (ollama, bedrock, sagemaker) are registered below, lazily.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import PlainValidator, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from router.backends.base import Backend
from router.backends.configs import (
    BackendConfigBase,
    BedrockConfig,
    OllamaConfig,
    SageMakerConfig,
)
from router.errors import UnknownBackendType as UnknownBackendType

C = TypeVar("C", bound=BackendConfigBase)
Factory = Callable[[str, Any], Backend]


@dataclass(frozen=True, slots=True)
class BackendType:
    name: str
    config_model: type[BackendConfigBase]
    factory: Factory


_TYPES: dict[str, BackendType] = {}


def register_backend(type_name: str, config_model: type[C],
                     factory: Callable[[str, C], Backend]) -> None:
    """Make `type_name` a backend type. Its config model's `type` must default to it."""
    field = config_model.model_fields.get("type")
    if field is None or field.default != type_name:
        raise ValueError(f"{config_model.__name__}.type must default to '{type_name}'")
    if type_name in _TYPES:
        raise ValueError(f"backend type '{type_name}' is already registered")
    _TYPES[type_name] = BackendType(type_name, config_model, factory)


def unregister_backend(type_name: str) -> None:
    """Forget a registered type (tests that register their own)."""
    _TYPES.pop(type_name, None)


def backend_types() -> tuple[str, ...]:
    """Registered type names, in registration order."""
    return tuple(_TYPES)


def known_types() -> str:
    return ", ".join(f"'{t}'" for t in _TYPES)


def backend_type(type_name: str) -> BackendType:
    try:
        return _TYPES[type_name]
    except KeyError:
        raise UnknownBackendType(
            f"unknown backend type '{type_name}' (known: {known_types()})") from None


def config_model_for(type_name: Any) -> type[BackendConfigBase] | None:
    """The registered config model for a `type` value (None when unknown); for messages."""
    bt = _TYPES.get(type_name) if isinstance(type_name, str) else None
    return bt.config_model if bt else None


def _type_error(kind: str, template: str, value: Any) -> ValidationError:
    """An error at `<entry>.type`, listing the registered types."""
    context = {"tag": str(value), "known": known_types()}
    error = InitErrorDetails(type=PydanticCustomError(kind, template, context), loc=("type",),
                             input=value)
    return ValidationError.from_exception_data("BackendConfig", [error])


def validate_backend_config(value: Any) -> BackendConfigBase:
    """A `backends.<name>` entry -> the registered config model its `type` names."""
    if isinstance(value, BackendConfigBase) and value.type in _TYPES:
        return value
    if not isinstance(value, Mapping):
        raise PydanticCustomError("backend_config_type",
                                  "must be a mapping with a backend type (known: {known})",
                                  {"known": known_types()})
    tag = value.get("type")
    if tag is None:
        raise _type_error("backend_type_missing", "missing backend type (known: {known})", None)
    model = config_model_for(tag)
    if model is None:
        raise _type_error("backend_type_unknown", "unknown backend type '{tag}' (known: {known})",
                          tag)
    return model.model_validate(value)


# The type of `Policy.backends` values: validated through the registry at parse time.
BackendConfig = Annotated[BackendConfigBase, PlainValidator(validate_backend_config)]


def build_backend(name: str, config: BackendConfigBase) -> Backend:
    """The backend for one policy entry, made by its type's factory."""
    return backend_type(config.type).factory(name, config)


def lazy_factory(module: str, attr: str) -> Factory:
    """A factory that imports `module` (and its vendor SDK) on first use."""

    def build(name: str, config: Any) -> Backend:
        cls: Factory = getattr(importlib.import_module(module), attr)
        return cls(name, config)

    return build


register_backend("ollama", OllamaConfig, lazy_factory("router.backends.ollama", "OllamaBackend"))
register_backend("bedrock", BedrockConfig,
                 lazy_factory("router.backends.bedrock", "BedrockBackend"))
register_backend("sagemaker", SageMakerConfig,
                 lazy_factory("router.backends.sagemaker", "SageMakerBackend"))
