"""The NVML reader, with a fake `pynvml` module (this machine has no GPU)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from router.backends import gpu


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801 - pynvml's name
    pass


@dataclass
class Memory:
    total: int
    free: int
    used: int


def fake_pynvml(*, init_fails: bool = False, read_fails: bool = False) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    calls: list[str] = []

    def nvmlInit() -> None:  # noqa: N802
        calls.append("init")
        if init_fails:
            raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")

    def nvmlDeviceGetHandleByIndex(i: int) -> str:  # noqa: N802
        calls.append(f"handle{i}")
        return f"h{i}"

    def nvmlDeviceGetMemoryInfo(h: str) -> Memory:  # noqa: N802
        calls.append(f"mem:{h}")
        if read_fails:
            raise NVMLError("GPU is lost")
        return Memory(total=24 << 30, free=10 << 30, used=14 << 30)

    def nvmlShutdown() -> None:  # noqa: N802
        calls.append("shutdown")

    mod.NVMLError = NVMLError  # type: ignore[attr-defined]
    mod.nvmlInit = nvmlInit  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = nvmlDeviceGetHandleByIndex  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = nvmlDeviceGetMemoryInfo  # type: ignore[attr-defined]
    mod.nvmlShutdown = nvmlShutdown  # type: ignore[attr-defined]
    mod.calls = calls  # type: ignore[attr-defined]
    return mod


@pytest.fixture(autouse=True)
def fresh_state() -> Iterator[None]:
    gpu.shutdown()
    yield
    gpu.shutdown()


def test_reads_free_and_total_and_caches_init(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert gpu.read_gpu_memory() == (10 << 30, 24 << 30)
    assert gpu.read_gpu_memory(0) == (10 << 30, 24 << 30)
    assert gpu.read_gpu_memory(1) == (10 << 30, 24 << 30)
    assert fake.calls == ["init", "handle0", "mem:h0", "mem:h0", "handle1", "mem:h1"]
    gpu.shutdown()
    assert fake.calls[-1] == "shutdown"


def test_library_not_found_means_none_and_is_not_retried(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    fake = fake_pynvml(init_fails=True)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert gpu.read_gpu_memory() is None
    assert gpu.read_gpu_memory() is None
    assert fake.calls == ["init"]


def test_read_error_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(read_fails=True))
    assert gpu.read_gpu_memory() is None


def test_missing_package_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    assert gpu.read_gpu_memory() is None


def test_missing_package_names_the_extra_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert gpu.unavailable_reason() is None  # not tried yet
    with caplog.at_level("WARNING", logger=gpu.__name__):
        assert gpu.read_gpu_memory() is None
        assert gpu.read_gpu_memory() is None
    assert gpu.unavailable_reason() == "NVML unavailable: install 'hybrid-router[nvml]'"
    [record] = caplog.records  # said once, not at every probe
    assert "hybrid-router[nvml]" in record.getMessage() and "\n" not in record.getMessage()


def test_reason_says_why_nvml_failed_and_clears_on_success(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(init_fails=True))
    assert gpu.read_gpu_memory() is None
    assert gpu.unavailable_reason() == "NVML unavailable: NVML Shared Library Not Found"
    gpu.shutdown()
    assert gpu.unavailable_reason() is None
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(read_fails=True))
    assert gpu.read_gpu_memory() is None
    assert gpu.unavailable_reason() == "NVML read of device 0 failed: GPU is lost"
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    assert gpu.read_gpu_memory() == (10 << 30, 24 << 30)
    assert gpu.unavailable_reason() is None


def test_real_pynvml_without_a_gpu() -> None:
    """On a machine without a driver the real library reports LibraryNotFound -> None."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        assert gpu.read_gpu_memory() is None
    else:  # a GPU host: the reader must agree with NVML's total
        pynvml.nvmlShutdown()
        mem = gpu.read_gpu_memory()
        assert mem is not None and 0 <= mem[0] <= mem[1]
