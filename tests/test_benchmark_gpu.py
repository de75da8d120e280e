"""GPU measurement helpers: NVML parts against a fake ``pynvml``; CUDA timing and memory on a GPU only."""

from __future__ import annotations

import sys
import time
import types
from types import SimpleNamespace

import pytest

from effdl.benchmark import gpu
from effdl.errors import BackendUnavailableError, InputError

try:
    import torch

    CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    CUDA = False


class _NVMLError(Exception):
    pass


def fake_nvml(power_w: float = 50.0, *, energy: bool = True, gpus: int = 1) -> types.ModuleType:
    """A ``pynvml`` stand-in: one GPU drawing a constant ``power_w``, its energy counter following the clock."""
    nv = types.ModuleType("pynvml")
    t0 = time.perf_counter()
    nv.NVMLError = _NVMLError
    nv.NVML_CLOCK_SM, nv.NVML_CLOCK_MEM, nv.NVML_CLOCK_GRAPHICS, nv.NVML_TEMPERATURE_GPU = 1, 2, 0, 0
    nv.calls = {"init": 0, "shutdown": 0}

    def not_supported(*_: object) -> None:
        raise _NVMLError("Not Supported")

    def total_energy(h: object) -> int:
        if not energy:
            raise _NVMLError("Not Supported")
        return int(1e6 + (time.perf_counter() - t0) * power_w * 1e3)  # millijoules

    nv.nvmlInit = lambda: nv.calls.__setitem__("init", nv.calls["init"] + 1)
    nv.nvmlShutdown = lambda: nv.calls.__setitem__("shutdown", nv.calls["shutdown"] + 1)
    nv.nvmlDeviceGetCount = lambda: gpus
    nv.nvmlDeviceGetHandleByIndex = lambda i: ("gpu", i)
    nv.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    nv.nvmlSystemGetDriverVersion = lambda: "560.35.03"
    nv.nvmlDeviceGetTemperature = lambda h, s: 41
    nv.nvmlDeviceGetUtilizationRates = lambda h: SimpleNamespace(gpu=97, memory=40)
    nv.nvmlDeviceGetClockInfo = lambda h, c: {1: 1980, 2: 2619, 0: 1980}[c]
    nv.nvmlDeviceGetMaxClockInfo = lambda h, c: {1: 1980, 2: 2619}[c]
    nv.nvmlDeviceGetPerformanceState = lambda h: 0
    nv.nvmlDeviceGetCurrentClocksEventReasons = not_supported
    nv.nvmlDeviceGetPowerUsage = lambda h: int(power_w * 1e3)
    nv.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    nv.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(used=2 << 30, total=80 << 30)
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: [
        SimpleNamespace(pid=1, usedGpuMemory=5),
        SimpleNamespace(pid=__import__("os").getpid(), usedGpuMemory=123 << 20),
    ]
    nv.nvmlDeviceGetTotalEnergyConsumption = total_energy
    return nv


def test_snapshot_reads_nvml_and_marks_unsupported_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    nv = fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    snap = gpu.gpu_snapshot(0)
    assert snap["name"] == "NVIDIA H100 80GB HBM3" and snap["driver"] == "560.35.03"
    assert snap["clocks_mhz"] == {"sm": 1980, "memory": 2619, "graphics": 1980}
    assert snap["temperature_c"] == 41 and snap["utilization_pct"] == {"gpu": 97, "memory": 40}
    assert snap["power_w"] == 50.0 and snap["power_limit_w"] == 700.0
    assert snap["clock_event_reasons"] is None  # not supported -> None, not an exception
    assert snap["memory_bytes"] == {"used": 2 << 30, "total": 80 << 30}
    assert nv.calls == {"init": 1, "shutdown": 1}
    with pytest.raises(InputError, match="GPU index 3 does not exist"):
        gpu.gpu_snapshot(3)
    assert gpu.process_gpu_memory(0) == 123 << 20
    assert gpu.process_gpu_memory(0, pid=999_999) is None


def test_energy_from_the_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(power_w=50.0))
    synced = []
    r = gpu.measure_energy(lambda: time.sleep(0.01), min_duration_s=0.2, sync=lambda: synced.append(1), idle_s=0.05)
    assert r["method"] == "nvml_total_energy_counter"
    assert r["duration_s"] >= 0.2 and r["calls"] >= 5
    assert r["mean_power_w"] == pytest.approx(50.0, rel=0.05)
    assert r["energy_j"] == pytest.approx(50.0 * r["duration_s"], rel=0.05)
    assert r["energy_per_call_j"] == pytest.approx(r["energy_j"] / r["calls"])
    assert r["idle_power_w"] == pytest.approx(50.0, rel=0.1)  # the fake draws the same power when idle
    assert r["energy_above_idle_j"] < 0.15 * r["energy_j"]
    assert len(synced) >= 3  # before idle, before and after the run
    r = gpu.measure_energy(lambda: None, min_duration_s=10.0, max_calls=3, sync=lambda: None)
    assert r["calls"] == 3 and r["idle_power_w"] is None and "energy_above_idle_j" not in r


def test_energy_refuses_without_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(energy=False))
    with pytest.raises(BackendUnavailableError, match="no total-energy counter.*Volta"):
        gpu.measure_energy(lambda: None, sync=lambda: None)
    with pytest.raises(InputError, match="min_duration_s > 0"):
        gpu.measure_energy(lambda: None, min_duration_s=0, sync=lambda: None)


def test_nvml_unavailable_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    ok, why = gpu.nvml_availability()
    assert not ok and "nvidia-ml-py is not installed" in why
    with pytest.raises(BackendUnavailableError) as e:
        gpu.gpu_snapshot()
    assert "effdl[energy]" in e.value.hint

    broken = fake_nvml()

    def fail() -> None:
        raise _NVMLError("NVML Shared Library Not Found")

    broken.nvmlInit = fail
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    with pytest.raises(BackendUnavailableError, match="NVML is unavailable: NVML Shared Library Not Found"):
        gpu.measure_energy(lambda: None)


@pytest.mark.skipif(CUDA, reason="checks the refusal without CUDA")
def test_cuda_timing_refuses_without_cuda() -> None:
    with pytest.raises(BackendUnavailableError, match="needs a CUDA GPU"):
        gpu.cuda_event_latencies(lambda: None)
    with pytest.raises(BackendUnavailableError, match="needs a CUDA GPU"):
        gpu.peak_memory(lambda: None)
    with pytest.raises(InputError, match="iters >= 1"):
        gpu.cuda_event_latencies(lambda: None, iters=0)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_event_latencies_and_peak_memory() -> None:
    a = torch.randn(2048, 2048, device="cuda")
    small = gpu.cuda_event_latencies(lambda: a @ a, iters=20, warmup=3)
    big_a = torch.randn(4096, 4096, device="cuda")
    big = gpu.cuda_event_latencies(lambda: big_a @ big_a, iters=20, warmup=3)
    assert len(small) == 20 and all(t > 0 for t in small)
    assert sorted(big)[10] > 2 * sorted(small)[10]  # 8x the FLOPs must take clearly longer
    _, peak = gpu.peak_memory(lambda: torch.empty(64 << 20, dtype=torch.uint8, device="cuda"))
    assert peak >= 64 << 20
