"""Ollama's own cloud: which models an Ollama host forwards to ollama.com (pure, no I/O).

Ollama (0.12+) serves "cloud models" through the same local API: the request goes to the local
host, which forwards it (prompt included) to ollama.com. Such a model is not local, whatever the
backend's type says, so it never serves a private request. Two signals:

- static, from the model id: Ollama's `:cloud` source tag (`gpt-oss:120b:cloud`, `kimi-k2:cloud`)
  and the legacy `-cloud` tags (`gpt-oss:120b-cloud`); matched case-insensitively, and an id
  ending in `-cloud` without a tag counts too (erring on the private side);
- dynamic, from the host: `/api/tags` lists every model it forwards with `remote_host` (and
  `remote_model`), which also catches a local name made `FROM` a cloud model.

Since 0.16.2 the host can turn its cloud features off (`OLLAMA_NO_CLOUD=1`, or
`"disable_ollama_cloud": true` in `~/.ollama/server.json`) and reports it at `GET /api/status`
as `{"cloud": {"disabled": bool, "source": "none|env|config|both"}}`; older versions cannot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.backends.base import ProbeResult
from router.backends.ollama_names import model_key


def is_cloud_tag(model_id: str) -> bool:
    """True when the id itself names one of Ollama's cloud models."""
    name = model_id.strip().lower()
    if name.endswith("-cloud"):
        return True
    parts = name.split(":")
    return any(p == "cloud" or ("/" not in p and p.endswith("-cloud")) for p in parts[1:])


def remote_host(model_id: str, remote_models: Mapping[str, str]) -> str | None:
    """The remote host the probe saw for this id (`name` and `name:latest` alike), if any."""
    if not remote_models:
        return None
    hit = remote_models.get(model_id.strip())
    if hit is not None:
        return hit
    key = model_key(model_id)
    return next((host for name, host in remote_models.items() if model_key(name) == key), None)


def cloud_reason(model_id: str, probe: ProbeResult | None) -> str | None:
    """Why this id on an Ollama backend is not local, in words; None when it is local."""
    if is_cloud_tag(model_id):
        return (f"'{model_id}' is one of Ollama's cloud models (its tag says so): Ollama "
                "forwards it to ollama.com")
    host = remote_host(model_id, probe.remote_models if probe is not None else {})
    if host is not None:
        return (f"Ollama lists '{model_id}' with remote_host {host}: it forwards the model "
                "there")
    return None


def is_cloud_model(model_id: str, probe: ProbeResult | None) -> bool:
    return cloud_reason(model_id, probe) is not None


def cloud_features(probe: ProbeResult | None) -> dict[str, object]:
    """Whether the host has Ollama's cloud features disabled, for status and the start log."""
    if probe is None or not probe.ok:
        return {"disabled": None, "source": None, "warning": "not probed yet"}
    if probe.cloud_disabled is True:
        return {"disabled": True, "source": probe.cloud_source, "warning": None}
    if probe.cloud_disabled is False:
        return {"disabled": False, "source": probe.cloud_source, "warning":
                "Ollama's cloud features are on: cloud models on this host forward prompts to "
                "ollama.com (set OLLAMA_NO_CLOUD=1 on the Ollama host to turn them off)"}
    return {"disabled": None, "source": None, "warning":
            f"cannot tell whether Ollama's cloud features are disabled (Ollama "
            f"{probe.version or '?'} has no /api/status; 0.16.2+ reports it): set "
            "OLLAMA_NO_CLOUD=1 on the Ollama host"}


def remote_models(tags: Any) -> dict[str, str]:
    """`/api/tags` entries that Ollama forwards elsewhere: name (and model) -> remote_host."""
    out: dict[str, str] = {}
    entries = tags.get("models") if isinstance(tags, dict) else None
    for m in entries if isinstance(entries, list) else ():
        host = m.get("remote_host") if isinstance(m, dict) else None
        if not host:
            continue
        for key in ("name", "model"):
            if isinstance(m.get(key), str) and m[key]:
                out[m[key]] = str(host)
    return out


def cloud_status(status: Any) -> tuple[bool | None, str | None]:
    """(disabled, source) from a `/api/status` body; (None, None) when it says nothing."""
    cloud = status.get("cloud") if isinstance(status, dict) else None
    if not isinstance(cloud, dict) or not isinstance(cloud.get("disabled"), bool):
        return None, None
    source = cloud.get("source")
    return cloud["disabled"], source if isinstance(source, str) else None
