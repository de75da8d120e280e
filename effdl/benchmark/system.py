"""What a benchmark ran on: host, CPU, ISA, memory, OS, Python and library versions; peak memory; CPU use.

Library versions are read with :mod:`importlib.metadata`, so nothing heavy (torch, OpenVINO) is imported.
"""

from __future__ import annotations

import os
import platform
import resource
import socket
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

# Distributions whose versions a report should carry (missing ones are reported as None).
PACKAGES: tuple[str, ...] = (
    "effdl",
    "torch",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "nncf",
    "numpy",
    "tensorrt",
    "nvidia-ml-py",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, or None, without importing it."""
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def system_info(*, gpus: bool = True) -> dict[str, Any]:
    """Host facts for a benchmark report: hostname, CPU model, cores, ISA flags, memory, OS, Python, versions.

    ``gpus=False`` skips the ``nvidia-smi`` query (which can take a second on a GPU host).
    """
    from effdl.devices import detect_host

    host = detect_host(gpus=gpus)
    return {
        "hostname": socket.gethostname(),
        "cpu_model": host["cpu_model"],
        "vendor": host["vendor"],
        "architecture": host["architecture"],
        "cores": host["cores"],
        "logical_cpus": host["logical_cpus"],
        "clock_ghz": host["clock_ghz"],
        "isa": host["isa"],
        "hypervisor": host["hypervisor"],
        "memory_gb": host["memory_gb"],
        "board": host["board"],
        "gpus": host["gpus"],
        "os": {"system": platform.system(), "release": platform.release(), "platform": platform.platform()},
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation()},
        "packages": package_versions(),
        "env": {
            k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES") if k in os.environ
        },
    }


def peak_rss_bytes(children: bool = False) -> int:
    """Peak resident set size of this process (or of its waited-for children) in bytes.

    On Linux this is ``VmHWM`` from ``/proc/self/status``, the high-water mark of this process's own memory.
    ``getrusage().ru_maxrss`` is not used there because Linux carries it across ``execve``: a benchmark worker
    started by a parent holding 500 MB reports at least 500 MB. Elsewhere (and for ``children``) it falls back
    to ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    if not children:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return int(usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024)


def current_rss_bytes() -> int | None:
    """Resident set size now (Linux ``/proc/self/statm``), or None where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def process_cpu_seconds(children: bool = True) -> float:
    """User + system CPU time of this process so far (plus waited-for children when ``children``)."""
    t = os.times()
    return t.user + t.system + ((t.children_user + t.children_system) if children else 0.0)


def usable_cores() -> int:
    """CPUs this process may run on (``os.sched_getaffinity``; a container's or VM slice's real count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class CpuSample:
    """CPU use of this process over an interval: seconds of CPU, wall seconds, and utilisation of ``cores``."""

    cpu_s: float
    wall_s: float
    cores: int

    @property
    def utilisation(self) -> float:
        """CPU seconds / (wall seconds x cores), clamped to [0, 1]; 1.0 means every usable core was busy."""
        if self.wall_s <= 0:
            return 0.0
        return min(1.0, max(0.0, self.cpu_s / (self.wall_s * self.cores)))


class CpuSampler:
    """Measures this process's CPU utilisation between :meth:`start` and :meth:`stop` from ``os.times()``."""

    def __init__(self, cores: int | None = None) -> None:
        self.cores = cores or usable_cores()
        self._t0: float | None = None
        self._c0 = 0.0

    def start(self) -> None:
        self._t0, self._c0 = time.perf_counter(), process_cpu_seconds()

    def stop(self) -> CpuSample:
        if self._t0 is None:
            raise RuntimeError("CpuSampler.stop() called before start()")
        wall, cpu = time.perf_counter() - self._t0, process_cpu_seconds() - self._c0
        self._t0 = None
        return CpuSample(cpu_s=cpu, wall_s=wall, cores=self.cores)


def report_system(info: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`system_info` in the report schema's shape (``cpu``, ``os`` and ``python`` as strings,
    installed ``libraries`` by name); the detailed fields stay alongside."""
    info = system_info() if info is None else info
    os_info, py = info.get("os") or {}, info.get("python") or {}
    return {
        **{k: v for k, v in info.items() if k not in ("os", "python", "packages")},
        "cpu": info.get("cpu_model"),
        "os": os_info.get("platform") if isinstance(os_info, dict) else str(os_info),
        "python": py.get("version") if isinstance(py, dict) else str(py),
        "libraries": {k: v for k, v in (info.get("packages") or {}).items() if v},
    }
