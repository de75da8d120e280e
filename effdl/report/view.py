"""What the Markdown and HTML renderings share: number formats, the variants table, the measurement notes.

Everything here returns plain text (never markup); each renderer escapes it for its own format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# Colour-blind-safe palette (Okabe-Ito), one colour per run in plots and in the comparison's runs table.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]

# ---------------------------------------------------------------------------------------------- formats


def is_num(x: Any) -> bool:
    """True for a finite int or float (not bool)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def sig(x: Any, digits: int = 3) -> str:
    """A number with about ``digits`` significant digits, without scientific notation in the usual range."""
    if not isinstance(x, int | float) or isinstance(x, bool):
        return "-"
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if mag >= 6 or mag < -4:
        return f"{x:.{digits - 1}e}"
    decimals = max(0, digits - 1 - mag)
    return f"{x:,.{decimals}f}"


def fmt_fixed(x: Any, decimals: int = 2) -> str:
    """Fixed decimals, or "-" when missing."""
    if not isinstance(x, int | float) or isinstance(x, bool):
        return "-"
    return f"{x:.{decimals}f}" if math.isfinite(x) else str(x)


def fmt_sci(x: Any) -> str:
    """Scientific notation with 2 decimals (errors), or "-"."""
    if not isinstance(x, int | float) or isinstance(x, bool):
        return "-"
    return f"{x:.2e}" if math.isfinite(x) else str(x)


def fmt_count(n: Any) -> str:
    """Decimal units for counts: 48530000 -> "48.5M"."""
    if not is_num(n):
        return "-"
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:g}"


def fmt_bytes(n: Any) -> str:
    """Binary units: 1536 -> "1.5 KiB"."""
    if not isinstance(n, int | float) or isinstance(n, bool):
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def fmt_value(v: Any, limit: int = 48) -> str:
    """A free-form detail value in a short readable form."""
    if isinstance(v, bool) or v is None:
        return str(v).lower() if v is not None else "null"
    if isinstance(v, int | float):
        return format(v, ".4g") if isinstance(v, float) else f"{v:,}"
    if isinstance(v, list | tuple):
        if len(v) <= 4 and all(not isinstance(x, dict | list) for x in v):
            return "[" + ", ".join(fmt_value(x, 16) for x in v) + "]"
        return f"[{len(v)} items]"
    if isinstance(v, dict):
        return (
            "{" + ", ".join(f"{k}={fmt_value(x, 16)}" for k, x in list(v.items())[:4]) + ("…}" if len(v) > 4 else "}")
        )
    text = " ".join(str(v).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fmt_details(details: Any, limit: int = 220) -> str:
    """A stage's free-form details as ``key=value`` pairs, nested objects flattened one level."""
    if not isinstance(details, dict) or not details:
        return ""
    parts = []
    for k, v in details.items():
        if isinstance(v, dict) and v and len(v) <= 6:
            parts.extend(f"{k}.{k2}={fmt_value(v2)}" for k2, v2 in v.items())
        else:
            parts.append(f"{k}={fmt_value(v)}")
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------- entries


@dataclass
class Entry:
    """One variant of one run, as shown in tables and plots."""

    run: int
    run_label: str
    report: dict[str, Any]
    variant: dict[str, Any]

    @property
    def name(self) -> str:
        return self.variant["name"]

    @property
    def is_reference(self) -> bool:
        return self.report.get("reference") == self.name

    @property
    def bench(self) -> dict[str, Any] | None:
        return self.variant.get("benchmark")

    @property
    def p50(self) -> float | None:
        b = self.bench
        x = b["latency_ms"].get("p50") if b else None
        return float(x) if is_num(x) else None

    @property
    def metric(self) -> float | None:
        x = self.variant.get("metric")
        if not is_num(x):
            x = (self.variant.get("verification") or {}).get("metric")
        return float(x) if is_num(x) else None

    @property
    def joules(self) -> float | None:
        e = (self.bench or {}).get("energy")
        x = e.get("joules_per_inference") if e else None
        return float(x) if is_num(x) else None

    @property
    def energy_estimate(self) -> bool:
        e = (self.bench or {}).get("energy")
        return bool(e and e.get("estimate"))


@dataclass
class Run:
    """One report among those rendered together."""

    index: int
    label: str
    report: dict[str, Any]
    entries: list[Entry] = field(default_factory=list)


def run_label(report: dict[str, Any]) -> str:
    """ "title @ device profile / host" (the parts that exist)."""
    where = []
    profile = (report.get("device") or {}).get("profile")
    if profile:
        where.append(str(profile))
    host = (report.get("system") or {}).get("hostname")
    if host:
        where.append(str(host))
    return report["title"] + (f" @ {' / '.join(where)}" if where else "")


def make_runs(reports: list[dict[str, Any]]) -> list[Run]:
    """Runs with unique labels (a repeated label gets " #2", " #3", ...)."""
    runs, seen = [], {}
    for i, report in enumerate(reports):
        label = run_label(report)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label} #{seen[label]}"
        run = Run(i, label, report)
        run.entries = [Entry(i, label, report, v) for v in report["variants"]]
        runs.append(run)
    return runs


def source_identity(report: dict[str, Any]) -> Any:
    """What identifies the model a run started from: its sha256, else (arch, task, parameters)."""
    src = report.get("source") or {}
    return src.get("sha256") or (src.get("arch"), src.get("task"), src.get("parameters"))


def baseline_entry(runs: list[Run]) -> Entry | None:
    """For several runs of the same source model: the first run's benchmarked reference variant, which every
    row is also compared with. None for one run, or when the runs start from different models (a speedup
    across models would mix the model's cost with the deployment's)."""
    if len(runs) < 2 or len({repr(source_identity(r.report)) for r in runs}) > 1:
        return None
    return next((e for e in runs[0].entries if e.is_reference and e.p50), None)


def metric_info(runs: list[Run]) -> tuple[str, str, bool]:
    """(metric name, unit, higher_is_better) shared by the runs; ("metric", "", True) when none is recorded."""
    for run in runs:
        task = run.report.get("task")
        if task:
            return str(task["metric"]), str(task.get("unit") or ""), bool(task["higher_is_better"])
    return "metric", "", True


def agreement(variant: dict[str, Any]) -> tuple[str, float] | None:
    """The verification's agreement figure (``top1_agreement`` or another ``*agreement`` key)."""
    ver = variant.get("verification") or {}
    if is_num(ver.get("top1_agreement")):
        return "top1_agreement", float(ver["top1_agreement"])
    for k, v in ver.items():
        if "agreement" in k and is_num(v):
            return k, float(v)
    return None


# ---------------------------------------------------------------------------------------------- tables


@dataclass
class Table:
    """Plain-text table: headers, rows of cells, which columns are numeric, and a CSS class per row."""

    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    row_classes: list[str] = field(default_factory=list)


def variants_table(runs: list[Run], *, with_run: bool = False, baseline: Entry | None = None) -> Table:
    """The main table: one row per variant (of every run), refused ones marked."""
    name, unit, _ = metric_info(runs)
    entries = [e for r in runs for e in r.entries]
    has_energy = any(e.joules is not None for e in entries)
    agree_keys = {a[0] for e in entries if (a := agreement(e.variant))}
    agree_header = "top-1 agreement (%)" if agree_keys <= {"top1_agreement"} else "agreement"
    cols: list[tuple[str, bool]] = [("run", False)] if with_run else []
    cols += [
        ("variant", False),
        ("backend", False),
        ("precision", False),
        ("accepted", False),
        (f"{name} ({unit})" if unit else name, True),
        ("metric drop", True),
        (agree_header, True),
        ("max abs error", True),
        ("p50 ms", True),
        ("p90 ms", True),
        ("p99 ms", True),
        ("throughput /s", True),
        ("speedup vs ref", True),
    ]
    if baseline is not None:
        cols.append((f"speedup vs {baseline.name} (run {baseline.run + 1})", True))
    if has_energy:
        cols.append(("J / inference", True))
    cols.append(("size", True))

    rows, classes = [], []
    for e in entries:
        v, b = e.variant, e.bench or {}
        lat = b.get("latency_ms") or {}
        ver = v.get("verification") or {}
        a = agreement(v)
        agree = "-" if a is None else fmt_fixed(a[1], 2) + ("" if a[0] == "top1_agreement" else f" ({a[0]})")
        label = e.name + (" (reference)" if e.is_reference else "")
        if b.get("noisy"):
            label += " (noisy)"
        row = [e.run_label] if with_run else []
        row += [
            label,
            str(v["backend"]),
            str(v["precision"]),
            "yes" if v["accepted"] else "refused",
            fmt_fixed(e.metric, 2),
            fmt_fixed(ver.get("metric_drop"), 2),
            agree,
            fmt_sci(ver.get("max_abs_error")),
            sig(lat.get("p50")),
            sig(lat.get("p90")),
            sig(lat.get("p99")),
            sig(b.get("throughput_per_s")),
            (sig(v.get("speedup")) + "×") if is_num(v.get("speedup")) else "-",
        ]
        if baseline is not None:
            row.append(f"{sig(baseline.p50 / e.p50)}×" if baseline.p50 and e.p50 else "-")
        if has_energy:
            j = e.joules
            row.append("-" if j is None else sig(j) + (" (est.)" if e.energy_estimate else ""))
        row.append(fmt_bytes(v.get("size_bytes")))
        rows.append(row)
        classes.append(
            " ".join(
                c
                for c, on in (("refused", not v["accepted"]), ("reference", e.is_reference), ("noisy", b.get("noisy")))
                if on
            )
        )
    return Table([c for c, _ in cols], rows, [n for _, n in cols], classes)


def refused(runs: list[Run], *, with_run: bool = False) -> list[str]:
    """One line per refused variant: its name, reason and verification failures."""
    lines = []
    for e in (e for r in runs for e in r.entries):
        v = e.variant
        if v["accepted"]:
            continue
        failures = (v.get("verification") or {}).get("failures") or []
        extra = [f for f in failures if f and f not in str(v["reason"])]  # the reason often joins the failures
        who = f"{e.run_label}: {e.name}" if with_run else e.name
        lines.append(f"{who}: {v['reason']}" + (f" (failures: {'; '.join(extra)})" if extra else ""))
    return lines


def stages_table(report: dict[str, Any]) -> Table:
    """Pipeline stages in order: name, seconds, the key details."""
    rows = [[str(s["name"]), fmt_fixed(s.get("seconds"), 2), fmt_details(s.get("details"))] for s in report["stages"]]
    return Table(["stage", "seconds", "details"], rows, [False, True, False])


def _arrow(before: Any, after: Any, fmt: Any = sig) -> str:
    """``before → after``, or one value where they are equal."""
    return fmt(after) if before == after else f"{fmt(before)} → {fmt(after)}"


def moe_layer_tables(report: dict[str, Any]) -> list[tuple[str, Table]]:
    """One titled table per stage that records MoE layers: ``moe-slim`` (experts kept, tokens per expert before
    and after: the calibration split's routing histogram, and experts / active parameters / MACs per token
    before -> after) and ``moefy`` (experts, neurons per expert, tokens per expert, router recall)."""
    out: list[tuple[str, Table]] = []
    for stage in report.get("stages") or []:
        layers = (stage.get("details") or {}).get("layers")
        if not isinstance(layers, dict) or not layers:
            continue
        recs = list(layers.values())
        if all(isinstance(r, dict) and "before" in r and "after" in r for r in recs):
            rows = []
            for name, r in layers.items():
                b, a = r["before"], r["after"]
                rows.append(
                    [
                        str(name),
                        f"{len(r.get('experts_kept', []))} of {b.get('experts', '-')}",
                        " ".join(str(t) for t in b.get("tokens_per_expert", [])),
                        " ".join(str(t) for t in a.get("tokens_per_expert", [])),
                        _arrow(b.get("experts_per_token"), a.get("experts_per_token")),
                        _arrow(b.get("active_parameters_per_token"), a.get("active_parameters_per_token"), fmt_count),
                        _arrow(b.get("macs_per_token"), a.get("macs_per_token"), fmt_count),
                    ]
                )
            headers = ["layer", "experts kept", "tokens per expert (before)", "tokens per expert (after)"]
            headers += ["experts / token", "active params / token", "MACs / token"]
            numeric = [False, False, False, False, True, True, True]
            out.append((f"{stage['name']}: per MoE layer", Table(headers, rows, numeric)))
        elif all(isinstance(r, dict) and "neurons_per_expert" in r for r in recs):
            rows = []
            for name, r in layers.items():
                router = r.get("router") or {}
                recall = router.get("recall_mlp", router.get("recall_centroid"))
                rows.append(
                    [
                        str(name),
                        str(len(r["neurons_per_expert"])),
                        " ".join(str(n) for n in r["neurons_per_expert"]),
                        " ".join(str(t) for t in r.get("tokens_per_expert", [])),
                        fmt_fixed(recall, 3),
                    ]
                )
            headers = ["layer", "experts", "neurons per expert", "tokens per expert (calibration)", "router recall"]
            out.append((f"{stage['name']}: per MoEfied FFN", Table(headers, rows, [False, True, False, False, True])))
    return out


def measurement_table(run: Run) -> Table:
    """Per benchmarked variant: the sample counts and spread behind its percentiles (and peak memory)."""
    benched = [e for e in run.entries if e.bench]
    has_rss = any(is_num(e.bench.get("peak_rss_bytes")) for e in benched)
    rows = []
    for e in benched:
        b = e.bench
        lat = b["latency_ms"]
        ci = lat.get("p50_ci95")
        mean, std = lat.get("mean"), lat.get("std")
        row = [
            e.name,
            str(b["scenario"]),
            str(b["batch"]),
            str(b.get("threads") if b.get("threads") is not None else "default"),
            f"{b['warmup']:,}",
            f"{b['queries']:,}",
            f"{sig(mean)} ± {sig(std)}" if is_num(mean) and is_num(std) else "-",
            f"[{sig(ci[0])}, {sig(ci[1])}]" if ci else "-",
            fmt_fixed(b.get("cv"), 3),
            "yes" if b.get("noisy") else "no",
        ]
        if has_rss:
            row.append(fmt_bytes(b.get("peak_rss_bytes")))
        rows.append(row)
    headers = ["variant", "scenario", "batch", "threads", "warm-up", "timed queries", "mean ± std ms"]
    headers += ["p50 95% CI ms", "CV", "noisy"] + (["peak RSS"] if has_rss else [])
    numeric = [False, False, True, True, True, True, True, True, True, False] + ([True] if has_rss else [])
    return Table(headers, rows, numeric)


# ---------------------------------------------------------------------------------------------- method notes


def measurement_notes(run: Run) -> list[str]:
    """How the numbers of one run were obtained, generated from what the report records."""
    report, entries = run.report, run.entries
    notes: list[str] = []
    benched = [e for e in entries if e.bench]
    if not benched:
        notes.append("No variant was benchmarked in this run; latency, throughput and speedup are not available.")
    groups: dict[tuple[Any, ...], list[str]] = {}
    for e in benched:
        b = e.bench
        key = (b["scenario"], b["batch"], b.get("threads"), b["warmup"], b["queries"], b["method"])
        groups.setdefault(key, []).append(e.name)
    for (scenario, batch, threads, warmup, queries, method), names in groups.items():
        thr = f", {threads} thread{'s' if threads != 1 else ''}" if threads is not None else ""
        notes.append(
            f"Latency ({', '.join(names)}): {scenario} scenario, batch {batch}{thr}; {warmup:,} warm-up queries "
            f"(not timed), then {queries:,} timed queries. Method: {method}."
        )
    if benched:
        notes.append(
            "p50 / p90 / p99 are percentiles of the per-query latencies of the timed queries; the table below "
            "gives their mean, spread and the 95% confidence interval of the median where the run recorded it."
        )
        consistent = all(_throughput_is_batch_over_mean(e.bench) for e in benched)
        if consistent:
            notes.append("Throughput = batch size / mean latency of the timed queries (one stream).")
        else:
            notes.append("Throughput is the inferences per second the benchmark scenario reported.")
        noisy = [e for e in benched if e.bench.get("noisy")]
        if noisy:
            notes.append(
                "Flagged noisy (coefficient of variation of the latencies above the benchmark's threshold): "
                + ", ".join(f"{e.name} (CV {fmt_fixed(e.bench.get('cv'), 2)})" for e in noisy)
                + ". Treat their percentiles with care; rerun on a quieter machine."
            )
        else:
            cvs = [e.bench["cv"] for e in benched if is_num(e.bench.get("cv"))]
            if cvs:
                notes.append(f"No run was flagged noisy (largest coefficient of variation {max(cvs):.2f}).")
    ref_name = report.get("reference")
    ref = next((e for e in entries if e.name == ref_name), None)
    if ref is not None and ref.p50 is not None:
        notes.append(f"Speedup = p50 latency of the reference variant {ref_name} / p50 latency of the variant.")
    elif benched:
        notes.append("Speedup is not available: the reference variant has no benchmark.")

    task = report.get("task")
    if task:
        sizes = task.get("sizes") or {}
        held = f" on {sizes['heldout']:,} held-out samples" if is_num(sizes.get("heldout")) else " on held-out data"
        seed = f" (seed {task['seed']})" if task.get("seed") is not None else ""
        better = "higher" if task["higher_is_better"] else "lower"
        unit = f" ({task['unit']})" if task.get("unit") else ""
        notes.append(
            f"Task metric: {task['metric']}{unit} of task {task.get('task', '?')}{held}{seed}; {better} is better. "
            "Metric drop is the verification's loss against the reference (positive = worse)."
        )
    verified = [e for e in entries if e.variant.get("verification")]
    if verified:
        by_limits: dict[str, list[str]] = {}
        for e in verified:
            ver = e.variant["verification"]
            limits = ver.get("limits") or {}
            text = ", ".join(f"{k} {fmt_value(v)}" for k, v in limits.items() if v is not None) or "none recorded"
            by_limits.setdefault(f"{ver['samples']:,} held-out inputs; acceptance limits: {text}", []).append(e.name)
        for text, names in by_limits.items():
            notes.append(
                f"Verification ({', '.join(names)}): outputs compared with the reference on {text}. "
                "A variant outside a limit is refused and listed with its reason."
            )
    with_energy = [e for e in entries if (e.bench or {}).get("energy")]
    for e in with_energy:
        en = e.bench["energy"]
        label = "ESTIMATE" if en["estimate"] else "measured"
        assumptions = f" Assumptions: {en['assumptions']}." if en.get("assumptions") else ""
        joules = sig(en["joules_per_inference"])
        notes.append(f"Energy of {e.name}: {joules} J per inference ({label}; {en['method']}).{assumptions}")
    if benched and not with_energy:
        notes.append("No energy figure was recorded in this run.")
    if any(is_num(e.bench.get("peak_rss_bytes")) for e in benched):
        notes.append(
            "Peak RSS = the largest resident memory of the benchmark process of the variant "
            "(includes Python and the runtime, not only the model)."
        )
    if any(is_num(e.variant.get("size_bytes")) for e in entries):
        notes.append("Size = bytes of the variant's model files on disk as packaged.")
    system = report.get("system") or {}
    host = system.get("hostname", "an unnamed host")
    cpu = f", {system['cpu']}" if system.get("cpu") else ""
    cores = f", {system['cores']} cores" if system.get("cores") is not None else ""
    libs = system.get("libraries") or {}
    lib_text = f"; {', '.join(f'{k} {v}' for k, v in libs.items())}" if libs else ""
    notes.append(f"Measured on {host}{cpu}{cores}{lib_text}.")
    return notes


def _throughput_is_batch_over_mean(b: dict[str, Any]) -> bool:
    mean, thr, batch = b["latency_ms"].get("mean"), b.get("throughput_per_s"), b.get("batch")
    if not (is_num(mean) and is_num(thr) and is_num(batch)) or mean <= 0 or thr <= 0:
        return False
    return abs(batch * 1e3 / mean - thr) <= 0.01 * thr


def facts(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Key/value lines about the run: source, task, system, device."""
    out: list[tuple[str, str]] = []
    src = report.get("source") or {}
    if src:
        parts = [str(src[k]) for k in ("path",) if src.get(k)]
        for k in ("format", "arch", "task"):
            if src.get(k):
                parts.append(f"{k} {src[k]}")
        if is_num(src.get("parameters")):
            parts.append(f"{src['parameters']:,} parameters")
        if is_num(src.get("macs")):
            parts.append(f"{fmt_count(src['macs'])} MACs per sample")
        if src.get("sha256"):
            parts.append(f"sha256 {str(src['sha256'])[:16]}…")
        out.append(("source", ", ".join(parts)))
    task = report.get("task")
    if task:
        sizes = task.get("sizes") or {}
        size_text = ", ".join(f"{k} {fmt_value(v)}" for k, v in sizes.items())
        out.append(
            (
                "task",
                f"{task.get('task', '?')}: {task['metric']}"
                + (f" ({task['unit']})" if task.get("unit") else "")
                + (", higher is better" if task["higher_is_better"] else ", lower is better")
                + (f"; splits: {size_text}" if size_text else ""),
            )
        )
    system = report["system"]
    sys_parts = [str(system[k]) for k in ("hostname", "cpu") if system.get(k)]
    if system.get("cores") is not None:
        sys_parts.append(f"{system['cores']} cores")
    if is_num(system.get("memory_gb")):
        sys_parts.append(f"{system['memory_gb']:.1f} GB memory")
    for k in ("os", "python"):
        if system.get(k):
            sys_parts.append(f"{k} {system[k]}")
    out.append(("system", ", ".join(sys_parts) or "-"))
    if system.get("isa"):
        isa = system["isa"]
        out.append(("ISA", ", ".join(map(str, isa)) if isinstance(isa, list) else str(isa)))
    libs = system.get("libraries") or {}
    if libs:
        out.append(("libraries", ", ".join(f"{k} {v}" for k, v in libs.items())))
    device = report.get("device")
    if device:
        profile = device.get("profile", "?")
        parts = [str(device["description"])] if device.get("description") else []
        for p in device.get("peaks") or []:
            if p.get("ops_per_s"):
                parts.append(f"{p.get('variant') or p.get('unit')} {p['dtype']} peak {p['ops_per_s'] / 1e9:,.0f} Gop/s")
        power = device.get("power") or {}
        if (power.get("idle_w") or {}).get("value") is not None and (power.get("max_w") or {}).get("value") is not None:
            parts.append(f"power {power['idle_w']['value']:g}-{power['max_w']['value']:g} W")
        if not parts:  # a profile without these fields: show what it has
            parts = [fmt_details({k: v for k, v in device.items() if k != "profile" and v is not None}, limit=300)]
        out.append(("device", f"{profile}" + (f" ({'; '.join(x for x in parts if x)})" if parts else "")))
    else:
        out.append(("device", "no device profile"))
    out.append(("effdl", f"{report['effdl_version']}, {report['kind']} run, created {report['created']}"))
    return out
