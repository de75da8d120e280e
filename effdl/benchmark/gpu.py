"""GPU measurement helpers: CUDA-event latency, NVML state snapshots and energy counter, peak device memory.

* :func:`cuda_event_latencies` times a callable with CUDA events recorded on the stream that does the
  work, after a warm-up; by default every query is synchronised before the next one is issued (single
  stream), so each number is one query's device-side span, launch gaps included.
* :func:`gpu_snapshot` reads clocks, temperature, utilisation, power limit and throttle reasons through
  NVML (``nvidia-ml-py``; imported lazily). Record one before and one after a run: a benchmark whose clocks
  dropped or that hit a thermal limit says so.
* :func:`measure_energy` reads NVML's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``,
  millijoules since the driver loaded) before and after a run that lasts at least ``min_duration_s``.
  Energy is never integrated from power samples: the counter is what the GPU itself accumulates.
* :func:`peak_memory` reports ``torch.cuda.max_memory_allocated`` over a call (reset before). It sees
  only torch's caching allocator; TensorRT allocates its engine and activations itself, so for TensorRT
  use :func:`process_gpu_memory` (NVML's per-process figure) and the runner's ``device_memory_bytes``.

Nothing here imports torch or NVML at module import.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from effdl.errors import BackendUnavailableError, InputError

NVML_HINT = "pip install 'effdl[energy]'  (nvidia-ml-py; needs an NVIDIA driver)"


def _cuda_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise BackendUnavailableError("GPU timing needs torch with CUDA; torch is not installed") from None
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"GPU timing needs a CUDA GPU; torch {torch.__version__} sees none",
            "run on a machine with an NVIDIA GPU and a CUDA build of torch",
        )
    return torch


def cuda_event_latencies(
    fn: Callable[[], Any],
    *,
    iters: int = 100,
    warmup: int = 10,
    stream: Any = None,
    sync_each: bool = True,
) -> list[float]:
    """Seconds per query of ``fn`` measured with CUDA events, after ``warmup`` untimed calls.

    ``stream`` is the CUDA stream ``fn`` enqueues its work on (default: torch's current stream; pass a
    TensorRT runner's ``runner.stream``). With ``sync_each`` the stream is synchronised after every query
    (single-stream latency); without it queries are queued back to back and each event pair measures
    the device time between its two events.
    """
    if iters < 1 or warmup < 0:
        raise InputError(f"cuda_event_latencies: need iters >= 1 and warmup >= 0, got {iters}, {warmup}")
    torch = _cuda_torch()
    stream = stream if stream is not None else torch.cuda.current_stream()
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    pairs = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        fn()
        end.record(stream)
        if sync_each:
            end.synchronize()
        pairs.append((start, end))
    torch.cuda.synchronize()
    return [start.elapsed_time(end) / 1e3 for start, end in pairs]  # elapsed_time is in milliseconds


def peak_memory(fn: Callable[[], Any], device: Any = None) -> tuple[Any, int]:
    """Run ``fn`` and return (its result, peak bytes allocated by torch on ``device`` during it)."""
    torch = _cuda_torch()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = fn()
    torch.cuda.synchronize(device)
    return result, int(torch.cuda.max_memory_allocated(device))


# --- NVML ----------------------------------------------------------------------------------------------


def _nvml() -> Any:
    """``pynvml``, initialised; raises :class:`BackendUnavailableError` saying why when it cannot be."""
    try:
        import pynvml
    except ImportError:
        raise BackendUnavailableError("NVML is unavailable: nvidia-ml-py is not installed", NVML_HINT) from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        raise BackendUnavailableError(f"NVML is unavailable: {e}", "NVML needs an NVIDIA GPU and its driver") from None
    return pynvml


def nvml_availability() -> tuple[bool, str]:
    """(True, "") when NVML can be initialised here, else (False, why)."""
    try:
        nv = _nvml()
    except BackendUnavailableError as e:
        return False, e.message
    nv.nvmlShutdown()
    return True, ""


def _handle(nv: Any, index: int) -> Any:
    count = nv.nvmlDeviceGetCount()
    if not 0 <= index < count:
        raise InputError(f"GPU index {index} does not exist (NVML sees {count} GPU(s))")
    return nv.nvmlDeviceGetHandleByIndex(index)


def _read(nv: Any, fn: Callable[[], Any]) -> Any:
    """One NVML query; ``None`` when this GPU or driver does not support it."""
    try:
        return fn()
    except nv.NVMLError:
        return None


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def gpu_snapshot(index: int = 0) -> dict[str, Any]:
    """Clocks (MHz), temperature (C), utilisation (%), power, memory and throttle reasons of GPU ``index``.

    ``power_w`` is NVML's instantaneous power reading, for context only; energy comes from
    :func:`measure_energy`. Fields the GPU does not report are ``None``.
    """
    nv = _nvml()
    try:
        h = _handle(nv, index)
        util = _read(nv, lambda: nv.nvmlDeviceGetUtilizationRates(h))
        mem = _read(nv, lambda: nv.nvmlDeviceGetMemoryInfo(h))
        power = _read(nv, lambda: nv.nvmlDeviceGetPowerUsage(h))
        limit = _read(nv, lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h))
        # renamed in newer NVML ("throttle" -> "event"); older nvidia-ml-py releases have only the old name
        reasons_fn = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
        reasons_fn = reasons_fn or nv.nvmlDeviceGetCurrentClocksThrottleReasons
        return {
            "index": index,
            "name": _text(_read(nv, lambda: nv.nvmlDeviceGetName(h))),
            "driver": _text(_read(nv, nv.nvmlSystemGetDriverVersion)),
            "temperature_c": _read(nv, lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
            "utilization_pct": None if util is None else {"gpu": util.gpu, "memory": util.memory},
            "clocks_mhz": {
                "sm": _read(nv, lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
                "memory": _read(nv, lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
                "graphics": _read(nv, lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_GRAPHICS)),
            },
            "max_clocks_mhz": {
                "sm": _read(nv, lambda: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM)),
                "memory": _read(nv, lambda: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_MEM)),
            },
            "pstate": _read(nv, lambda: nv.nvmlDeviceGetPerformanceState(h)),
            "clock_event_reasons": _read(nv, lambda: reasons_fn(h)),
            "power_w": None if power is None else power / 1e3,
            "power_limit_w": None if limit is None else limit / 1e3,
            "memory_bytes": None if mem is None else {"used": int(mem.used), "total": int(mem.total)},
        }
    finally:
        nv.nvmlShutdown()


def process_gpu_memory(index: int = 0, pid: int | None = None) -> int | None:
    """Bytes of GPU ``index`` memory that NVML attributes to process ``pid`` (default: this one), or None."""
    nv = _nvml()
    pid = os.getpid() if pid is None else pid
    try:
        procs = _read(nv, lambda: nv.nvmlDeviceGetComputeRunningProcesses(_handle(nv, index))) or []
        for p in procs:
            if p.pid == pid:
                return None if p.usedGpuMemory is None else int(p.usedGpuMemory)
        return None
    finally:
        nv.nvmlShutdown()


def measure_energy(
    fn: Callable[[], Any],
    *,
    index: int = 0,
    min_duration_s: float = 2.0,
    max_calls: int = 1_000_000,
    sync: Callable[[], Any] | None = None,
    idle_s: float = 0.0,
) -> dict[str, Any]:
    """Energy that GPU ``index`` used while ``fn`` was called repeatedly for at least ``min_duration_s``.

    Reads NVML's total-energy counter (millijoules) before the first and after the last call (after
    ``sync``, default ``torch.cuda.synchronize`` when torch has CUDA), so queued GPU work is included.
    The counter updates at a limited rate, so short runs are repeated until ``min_duration_s`` has
    passed. With ``idle_s > 0`` the counter is also read over an idle sleep first, and the energy above
    that idle power is reported too. The whole board's energy is counted, other processes included.
    """
    if min_duration_s <= 0 or max_calls < 1 or idle_s < 0:
        raise InputError("measure_energy: need min_duration_s > 0, max_calls >= 1 and idle_s >= 0")
    if sync is None:
        sync = _default_sync()
    nv = _nvml()
    try:
        h = _handle(nv, index)
        try:
            nv.nvmlDeviceGetTotalEnergyConsumption(h)
        except nv.NVMLError as e:
            raise BackendUnavailableError(
                f"NVML has no total-energy counter for GPU {index} ({e}); it exists on Volta and newer GPUs"
            ) from None
        idle_power_w = None
        if idle_s > 0:
            sync()
            e0, t0 = nv.nvmlDeviceGetTotalEnergyConsumption(h), time.perf_counter()
            time.sleep(idle_s)
            e1, t1 = nv.nvmlDeviceGetTotalEnergyConsumption(h), time.perf_counter()
            idle_power_w = (e1 - e0) / 1e3 / (t1 - t0)
        sync()
        e0, t0 = nv.nvmlDeviceGetTotalEnergyConsumption(h), time.perf_counter()
        calls = 0
        while True:
            fn()
            calls += 1
            if calls >= max_calls or time.perf_counter() - t0 >= min_duration_s:
                break
        sync()
        e1, t1 = nv.nvmlDeviceGetTotalEnergyConsumption(h), time.perf_counter()
    finally:
        nv.nvmlShutdown()
    if e1 < e0:
        raise RuntimeError(f"NVML's energy counter went backwards ({e0} -> {e1} mJ); was the driver reloaded?")
    energy_j, duration = (e1 - e0) / 1e3, t1 - t0
    result: dict[str, Any] = {
        "method": "nvml_total_energy_counter",
        "gpu_index": index,
        "energy_j": energy_j,
        "duration_s": duration,
        "calls": calls,
        "energy_per_call_j": energy_j / calls,
        "mean_power_w": energy_j / duration if duration > 0 else None,
        "idle_power_w": idle_power_w,
    }
    if idle_power_w is not None:
        above = max(0.0, energy_j - idle_power_w * duration)
        result["energy_above_idle_j"] = above
        result["energy_above_idle_per_call_j"] = above / calls
    return result


def _default_sync() -> Callable[[], Any]:
    try:
        import torch
    except ImportError:
        return lambda: None
    return torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
