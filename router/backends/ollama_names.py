"""Ollama model names: one spelling for comparing a configured id with what Ollama reports.

Ollama adds the default tag to a name without one: a model configured as `mymodel` is listed
by `/api/ps` and `/api/tags` (and named in its answers) as `mymodel:latest`, and it matches
names case-insensitively. Every comparison of a configured Ollama model id with an id Ollama
reported goes through `model_key` (pure, no I/O).
"""

from __future__ import annotations

DEFAULT_TAG = "latest"


def normalise_tag(model_id: str) -> str:
    """`mymodel` -> `mymodel:latest`; an id with a tag (`a:b`, `host:5000/ns/a:b`) or a digest
    (`a@sha256:...`) is returned as is (surrounding whitespace stripped)."""
    name = model_id.strip()
    if not name or "@" in name or ":" in name.rsplit("/", 1)[-1]:
        return name
    return f"{name}:{DEFAULT_TAG}"


def model_key(model_id: str) -> str:
    """The comparison key of an Ollama model id: the default tag added, case folded."""
    return normalise_tag(model_id).casefold()


def same_model(a: str, b: str) -> bool:
    """True when the two ids name the same Ollama model (`mymodel` and `MyModel:latest`)."""
    return model_key(a) == model_key(b)
