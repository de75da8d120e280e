"""System info without importing heavy libraries, peak RSS, CPU sampling."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from effdl.benchmark import system


def test_system_info_fields() -> None:
    info = system.system_info(gpus=False)
    for key in ("hostname", "cpu_model", "cores", "isa", "memory_gb", "os", "python", "packages"):
        assert key in info
    assert info["cores"] == len(os.sched_getaffinity(0))
    assert info["packages"]["numpy"] == np.__version__
    assert info["packages"]["tensorrt"] is None or isinstance(info["packages"]["tensorrt"], str)


def test_system_info_imports_no_backend() -> None:
    code = (
        "import sys; from effdl.benchmark.system import system_info; i = system_info(gpus=False); "
        "heavy = [m for m in ('torch', 'onnxruntime', 'openvino', 'nncf', 'numpy') if m in sys.modules]; "
        "assert not heavy, heavy; assert i['packages']['onnxruntime']"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def _peak_in_child(mib: int) -> int:
    code = (
        f"from effdl.benchmark.system import peak_rss_bytes; b = bytearray({mib} * 2**20); "
        "b[::4096] = b'x' * len(b[::4096]); print(peak_rss_bytes())"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60, capture_output=True, text=True)
    return int(out.stdout)


def test_peak_rss_counts_a_touched_allocation() -> None:
    small, big = _peak_in_child(0), _peak_in_child(256)
    assert big - small >= 240 * 2**20
    now = system.current_rss_bytes()
    assert now is not None and system.peak_rss_bytes() >= now


def test_peak_rss_of_a_child_excludes_the_parent() -> None:
    # ru_maxrss survives execve on Linux, so a child started by a big parent would report the parent's size
    block = bytearray(300 * 2**20)
    block[:: 2**12] = b"x" * len(block[:: 2**12])
    assert system.peak_rss_bytes() >= 300 * 2**20
    assert _peak_in_child(0) < 200 * 2**20


def test_cpu_sampler_measures_a_busy_loop() -> None:
    s = system.CpuSampler(cores=1)
    s.start()
    t = time.process_time()
    while time.process_time() - t < 0.15:
        pass
    sample = s.stop()
    # a loaded machine may give this process less than the whole core: check the arithmetic, not a lower bound;
    # /proc CPU times tick at 10 ms, so 0.15 s of process time may read as 0.14 (minus float rounding)
    assert sample.cpu_s >= 0.13 and sample.utilisation == min(1.0, sample.cpu_s / sample.wall_s)
    assert system.CpuSample(cpu_s=1.0, wall_s=1.0, cores=4).utilisation == 0.25
    assert system.CpuSample(cpu_s=1.0, wall_s=0.0, cores=4).utilisation == 0.0
