"""bench/gpu.py's variant plan and Markdown report, on fabricated rows (the measurements need a GPU)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

spec = importlib.util.spec_from_file_location("bench_gpu", Path(__file__).resolve().parent.parent / "bench" / "gpu.py")
assert spec is not None and spec.loader is not None
bench_gpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_gpu)


def _row(model: str, batch: int, variant: str, throughput: float) -> dict[str, Any]:
    return {
        "model": model,
        "batch": batch,
        "variant": variant,
        "precision": "fp16",
        "latency_ms": {"p50": batch / throughput * 1e3, "p99": batch / throughput * 1.1e3},
        "throughput_per_s": throughput,
        "peak_memory_bytes": 2**20,
        "joules_per_inference": 0.001,
        "first_call_s": 1.0,
        "gpu_after": {"clocks_mhz": {"sm": 1980}},
    }


def test_variant_plan() -> None:
    small = [v[0] for v in bench_gpu._variants(1, True)]
    big = [v[0] for v in bench_gpu._variants(64, False)]
    assert small == [
        "eager-fp32",
        "eager-fp16",
        "compile-fp16",
        "compile-fp16-cudagraphs",
        "sparse24-fp16",
        "sparse24-fp16-cutlass",
    ]
    assert big == ["eager-fp32", "eager-fp16", "compile-fp16", "compile-bf16"]


def test_markdown_reports_ratio_target_and_failures() -> None:
    data = {
        "gpu": "NVIDIA H100",
        "torch": "2.11",
        "cuda": "13.0",
        "method": "CUDA events",
        "tf32_cudnn": True,
        "tf32_matmul": False,
        "cusparselt": 600,
        "results": [
            _row("bert", 64, "eager-fp32", 1000.0),
            _row("bert", 64, "compile-fp16", 3500.0),
            _row("bert", 64, "compile-bf16", 3200.0),
            _row("cnn", 64, "eager-fp32", 1000.0),
            _row("cnn", 64, "compile-fp16", 2000.0),
            {"model": "cnn", "batch": 64, "variant": "compile-bf16", "error": "RuntimeError: boom"},
            {"model": "cnn", "batch": None, "variant": "sparse24-fp16", "skipped": "no Linear"},
        ],
    }
    md = bench_gpu.markdown(data)
    assert "| bert | 64 | compile-fp16 |" in md and "3.50x" in md
    assert "- bert: compile-fp16 3.50x eager FP32 (met)" in md
    assert "- cnn: compile-fp16 2.00x eager FP32 (NOT met)" in md
    assert "RuntimeError: boom" in md and "no Linear" in md
