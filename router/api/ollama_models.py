"""The model side of Ollama's API: `/api/tags`, `/api/show` and `/api/ps` bodies.

The router lists its logical models (those some backend serves) under their Ollama names
(`gpt-oss:20b`: the first spelling with a tag among the names the router accepts), whatever
backend serves them. Sizes are the policy's VRAM estimate, the digest a stable hash of the
name; `/api/show` gives `details`, `model_info` (`general.architecture`,
`gptoss.context_length` from the policy) and `capabilities`. `/api/ps` shows what the local
backends reported loaded at their last probe (no `expires_at`: a probe does not say).
"""

from __future__ import annotations

import hashlib
from typing import Any

from router.service import RouterService

GIB = 1024**3
MODIFIED_AT = "2025-08-05T00:00:00Z"  # gpt-oss's release
CAPABILITIES = ["completion", "tools", "thinking"]
_PARAMETER_SIZES = {"gpt-oss-20b": "20.9B", "gpt-oss-120b": "116.8B"}


def ollama_names(service: RouterService) -> dict[str, str]:
    """Logical model -> its Ollama name, in policy order."""
    names: dict[str, str] = {}
    accepted = service.model_names()
    for logical in service.served_models():
        tagged = [n for n, lg in accepted.items() if lg == logical and ":" in n and "/" not in n
                  and "." not in n.split(":", 1)[0]]
        names[logical] = tagged[0] if tagged else logical
    return names


def details(logical: str) -> dict[str, Any]:
    size = _PARAMETER_SIZES.get(logical.lower(), logical.rpartition("-")[2].upper())
    return {"parent_model": "", "format": "gguf", "family": "gptoss", "families": ["gptoss"],
            "parameter_size": size, "quantization_level": "MXFP4"}


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _size(service: RouterService, logical: str) -> int:
    return int(service.policy.models[logical].vram_gb * GIB)


def tags(service: RouterService) -> dict[str, Any]:
    return {"models": [
        {"name": name, "model": name, "modified_at": MODIFIED_AT,
         "size": _size(service, logical), "digest": _digest(name), "details": details(logical)}
        for logical, name in ollama_names(service).items()]}


def show(service: RouterService, logical: str) -> dict[str, Any]:
    name = ollama_names(service).get(logical, logical)
    spec = service.policy.models[logical]
    return {
        "modelfile": f"# served by hybrid-router\nFROM {name}\n",
        "parameters": "",
        "template": "{{ .Prompt }}",
        "details": details(logical),
        "model_info": {"general.architecture": "gptoss", "general.basename": logical,
                       "gptoss.context_length": spec.context_length},
        "capabilities": list(CAPABILITIES),
        "modified_at": MODIFIED_AT,
    }


def ps(service: RouterService) -> dict[str, Any]:
    names = ollama_names(service)
    models: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _backend, logical, loaded in service.loaded_models():
        name = names.get(logical, logical)
        if name in seen:
            continue
        seen.add(name)
        entry: dict[str, Any] = {"name": name, "model": name, "size": loaded.size,
                                 "digest": _digest(name), "details": details(logical),
                                 "size_vram": loaded.size_vram}
        if loaded.context_length:
            entry["context_length"] = loaded.context_length
        models.append(entry)
    return {"models": models}
