"""Comparing several run reports (devices, backends, variants) side by side."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from effdl.errors import InputError
from effdl.report.schema import COMPARISON_SCHEMA, validate_report
from effdl.report.view import agreement, baseline_entry, make_runs


def _distinct(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def compare(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge run reports into one comparison (schema ``effdl.comparison/1``).

    The result lists the runs (label = title @ device profile / host), one flat row per variant of
    every run (with the run's own speedup and, for several runs, the speedup against the first run's
    reference), notes on what differs between runs (hosts, effdl or library versions, source models,
    task metrics), and the full reports themselves so that the comparison can be rendered again.
    """
    if not reports:
        raise InputError("no reports to compare; pass one or more report.json files")
    for i, r in enumerate(reports):
        validate_report(r, f"report {i + 1}")
    runs = make_runs(reports)
    base = baseline_entry(runs)
    notes: list[str] = []

    def differs(values: list[Any], what: str, consequence: str) -> None:
        distinct = _distinct(values)
        if len(distinct) > 1:
            notes.append(f"The runs come from different {what} ({', '.join(map(str, distinct))}); {consequence}")

    differs(
        [(r.report.get("system") or {}).get("hostname", "unnamed host") for r in runs],
        "hosts",
        "latency and energy differences reflect the hardware as well as the variants.",
    )
    differs(
        [(r.report.get("device") or {}).get("profile", "no profile") for r in runs],
        "device profiles",
        "energy estimates rest on different profile assumptions.",
    )
    differs([r.report["effdl_version"] for r in runs], "effdl versions", "methods may have changed between versions.")
    libs: dict[str, list[str]] = {}
    for r in runs:
        for name, version in ((r.report.get("system") or {}).get("libraries") or {}).items():
            libs.setdefault(name, []).append(str(version))
    for name, versions in libs.items():
        if len(set(versions)) > 1:
            notes.append(f"{name} versions differ between runs: {', '.join(_distinct(versions))}.")
    differs(
        [(r.report.get("source") or {}).get("sha256", "unknown") for r in runs],
        "source models (sha256)",
        "accuracy differences partly come from the models themselves.",
    )
    metrics = [
        f"{t['metric']} ({t.get('unit') or ''}) on {t.get('task', '?')}" if (t := r.report.get("task")) else "none"
        for r in runs
    ]
    differs(metrics, "task metrics", "their metric values are not comparable; plots use the first run's axis name.")

    rows = []
    for r in runs:
        for e in r.entries:
            v, b = e.variant, e.bench or {}
            a = agreement(v)
            rows.append(
                {
                    "run": r.index,
                    "run_label": r.label,
                    "variant": e.name,
                    "reference": e.is_reference,
                    "backend": v["backend"],
                    "precision": v["precision"],
                    "accepted": v["accepted"],
                    "reason": v.get("reason"),
                    "metric": e.metric,
                    "metric_drop": (v.get("verification") or {}).get("metric_drop"),
                    "agreement": None if a is None else {"key": a[0], "value": a[1]},
                    "max_abs_error": (v.get("verification") or {}).get("max_abs_error"),
                    "latency_ms": {k: b["latency_ms"].get(k) for k in ("p50", "p90", "p99")} if b else None,
                    "throughput_per_s": b.get("throughput_per_s"),
                    "noisy": b.get("noisy"),
                    "joules_per_inference": e.joules,
                    "energy_estimate": e.energy_estimate if e.joules is not None else None,
                    "speedup": v.get("speedup"),
                    "speedup_vs_baseline": (base.p50 / e.p50) if base is not None and e.p50 else None,
                    "size_bytes": v.get("size_bytes"),
                }
            )
    from effdl import __version__

    return {
        "schema": COMPARISON_SCHEMA,
        "effdl_version": __version__,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "runs": [
            {
                "index": r.index,
                "label": r.label,
                "title": r.report["title"],
                "kind": r.report["kind"],
                "created": r.report["created"],
                "effdl_version": r.report["effdl_version"],
                "hostname": (r.report.get("system") or {}).get("hostname"),
                "device_profile": (r.report.get("device") or {}).get("profile"),
                "reference": r.report.get("reference"),
            }
            for r in runs
        ],
        "baseline": None if base is None else {"run": base.run, "variant": base.name, "p50_ms": base.p50},
        "notes": notes,
        "variants": rows,
        "reports": reports,
    }
