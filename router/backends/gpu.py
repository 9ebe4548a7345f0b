"""Free and total GPU memory from NVML (`pynvml`, package nvidia-ml-py; protocols.md §1.6).

Used by the Ollama backend's probe when the router runs on the GPU host (`use_nvml`).
NVML is initialised once per process and device handles are cached. Without a driver or GPU
(`NVMLError_LibraryNotFound`, ...) the reader returns None and stops trying: the caller falls
back to `/api/ps` and the policy's declared card size. Calls are blocking but fast; run them
off the event loop (`asyncio.to_thread`) since the first one loads the library.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()
_state: dict[str, Any] = {"init": None, "handles": {}}  # init: None untried, True ok, False no


def _nvml() -> Any | None:
    """The initialised pynvml module, or None when NVML is unavailable (cached)."""
    try:
        import pynvml
    except ImportError:
        _state["init"] = False
        return None
    if _state["init"] is None:
        try:
            pynvml.nvmlInit()
            _state["init"] = True
        except pynvml.NVMLError as exc:
            log.info("NVML unavailable (%s); GPU memory comes from /api/ps and the policy", exc)
            _state["init"] = False
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
            return int(mem.free), int(mem.total)
        except nvml.NVMLError as exc:
            log.warning("NVML read of device %d failed: %s", device, exc)
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
