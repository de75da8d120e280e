"""Latency statistics: percentiles, spread, a bootstrap confidence interval of the median, noise flag."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

NOISY_CV = 0.25  # coefficient of variation above which a run is flagged as noisy


def summarize(
    latencies_s: Sequence[float], *, batch: int = 1, keep_samples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Summary of per-query latencies in seconds, reported in milliseconds.

    Percentiles use linear interpolation; the 95% confidence interval of the median is a
    percentile bootstrap (1,000 resamples); throughput is ``batch / mean latency`` (single stream).
    """
    lat = np.asarray(latencies_s, dtype=np.float64) * 1e3
    if lat.size == 0:
        raise ValueError("no latencies to summarize")
    p = np.percentile(lat, [50, 90, 95, 99])
    mean, std = float(lat.mean()), float(lat.std(ddof=1)) if lat.size > 1 else 0.0
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(lat, size=(1000, lat.size), replace=True), axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    cv = std / mean if mean > 0 else 0.0
    step = max(1, lat.size // keep_samples)
    return {
        "queries": int(lat.size),
        "latency_ms": {
            "p50": float(p[0]),
            "p90": float(p[1]),
            "p95": float(p[2]),
            "p99": float(p[3]),
            "mean": mean,
            "std": std,
            "min": float(lat.min()),
            "max": float(lat.max()),
            "p50_ci95": [float(lo), float(hi)],
        },
        "cv": cv,
        "noisy": bool(cv > NOISY_CV),
        "throughput_per_s": float(batch * 1e3 / mean) if mean > 0 else 0.0,
        "samples_ms": [float(x) for x in lat[::step]],
    }
