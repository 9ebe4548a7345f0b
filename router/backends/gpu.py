"""Free and total GPU memory from NVML (`pynvml`, package nvidia-ml-py; docs/protocols.md, GPU
memory).

Used by the Ollama backend's probe when the router runs on the GPU host (`use_nvml`).
NVML is optional: the package comes with the `nvml` extra (`pip install 'hybrid-router[nvml]'`).
NVML is initialised once per process and device handles are cached. Without the package, a
driver or a GPU (`NVMLError_LibraryNotFound`, ...) the reader returns None and stops trying,
`unavailable_reason()` says why in one line (the probe reports it), and the caller falls back
to `/api/ps` and the policy's declared card size. Calls are blocking but fast; run them off the
event loop (`asyncio.to_thread`) since the first one loads the library.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()
# init: None untried, True ok, False no; why: one line saying why NVML cannot tell
_state: dict[str, Any] = {"init": None, "handles": {}, "why": None}

NVML_NOT_INSTALLED = "NVML unavailable: install 'hybrid-router[nvml]'"


def unavailable_reason() -> str | None:
    """Why NVML gives no GPU memory (one line), or None when it works or was not tried."""
    why: str | None = _state["why"]
    return why


def _nvml() -> Any | None:
    """The initialised pynvml module, or None when NVML is unavailable (cached)."""
    try:
        import pynvml
    except ImportError:
        _state["init"], _state["why"] = False, NVML_NOT_INSTALLED
        log.warning("%s; GPU memory comes from /api/ps and the policy", NVML_NOT_INSTALLED)
        return None
    if _state["init"] is None:
        try:
            pynvml.nvmlInit()
            _state["init"] = True
        except pynvml.NVMLError as exc:
            log.info("NVML unavailable (%s); GPU memory comes from /api/ps and the policy", exc)
            _state["init"], _state["why"] = False, f"NVML unavailable: {exc}"
    return pynvml if _state["init"] else None


def read_gpu_memory(device: int = 0) -> tuple[int, int] | None:
    """(free, total) bytes of GPU `device`, or None when NVML cannot tell."""
    with _lock:
        if _state["init"] is False:
            return None
        nvml = _nvml()
        if nvml is None:
            return None
        try:
            handles: dict[int, Any] = _state["handles"]
            handle = handles.get(device)
            if handle is None:
                handle = handles[device] = nvml.nvmlDeviceGetHandleByIndex(device)
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            _state["why"] = None
            return int(mem.free), int(mem.total)
        except nvml.NVMLError as exc:
            log.warning("NVML read of device %d failed: %s", device, exc)
            _state["why"] = f"NVML read of device {device} failed: {exc}"
            _state["handles"].pop(device, None)
            return None


def shutdown() -> None:
    """Release NVML (optional, at process exit) and forget the cached state."""
    with _lock:
        if _state["init"]:
            try:
                import pynvml

                pynvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
        _state["init"] = None
        _state["handles"] = {}
        _state["why"] = None
