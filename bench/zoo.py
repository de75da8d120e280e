"""The zoo table of docs/zoo.md: every zoo model trained at its default size, then through effdl's INT8 pipeline.

    .venv/bin/python bench/zoo.py [--models lenet5,gcn] [--quick] [--cache runs/zoo] [--out docs/zoo.md]

For each model: train it with `effdl zoo train`'s code (``effdl.zoo.train``; the checkpoint is cached in
``--cache`` and reused while its recorded architecture, config, task, epochs and seed match the zoo entry),
then run ``effdl.pipeline.compress`` with the default recipe's static INT8 quantization (ONNX Runtime QDQ,
MinMax calibration, per-channel weights) and its verify limits, compiled for ONNX Runtime and OpenVINO
(FP32 inference precision pinned), FP32 beside INT8. Where static INT8 fails, no static INT8 variant
passes verification, or static INT8 leaves recurrent ops (LSTM, GRU) in FP32, dynamic INT8 on ONNX Runtime
runs too, in a second pipeline run (recorded as such). The
pipeline times torch eager FP32 (the reference) and every accepted variant alone in a fresh process,
single stream, batch 1.

Results go to ``docs/zoo.json`` (one entry per model, so ``--models`` reruns replace only their rows) and
the table between the ZOO-TABLE markers of ``docs/zoo.md`` is rendered from that JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BEGIN, END = "<!-- ZOO-TABLE -->", "<!-- /ZOO-TABLE -->"


def recipe_dict(kind: str, queries: int, warmup: int, threads: int | None = 1) -> dict[str, Any]:
    """The recipe of one run: ``static`` (the default recipe's quantization, ORT + OpenVINO) or ``dynamic``."""
    import yaml

    default = yaml.safe_load((ROOT / "recipes" / "default.yaml").read_text())
    if kind == "static":
        stages = default["stages"]
        targets = [t for t in default["targets"] if t["backend"] in ("onnxruntime", "openvino")]
    else:
        stages = [{"stage": "quantize-dynamic", "output": "int8", "config": {"per_channel": True}}]
        targets = [{"backend": "onnxruntime", "models": ["fp32", "int8"]}]
    return {
        "version": 1,
        "name": f"zoo-{kind}-int8",
        "export": default["export"],
        "stages": stages,
        "targets": targets,
        "verify": default["verify"],
        "benchmark": {"warmup": warmup, "queries": queries, "batch": 1, "threads": threads},
    }


def checkpoint(name: str, cache: Path, log: Any) -> tuple[Path, dict[str, Any], bool]:
    """The cached default-size checkpoint of ``name`` (trained now if missing or stale) and its sidecar."""
    from effdl.zoo import get_model_entry
    from effdl.zoo.train import save_trained, train_entry, trained_with_defaults

    entry = get_model_entry(name)
    path = cache / f"{name}.safetensors"
    fresh = not trained_with_defaults(path, entry)
    if fresh:
        log(f"train {name} ({entry.train.epochs} epochs)")
        result = train_entry(entry, seed=0)
        save_trained(result, entry, path, seed=0)
    return path, json.loads(path.with_suffix(".json").read_text()), fresh


COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN")


def int8_coverage(path: Path) -> dict[str, Any] | None:
    """How many of a model's compute ops (conv, matmul, gemm, recurrent) run in INT8, and which op types do not.

    In QDQ form an op counts when its first two inputs (data and weight) both come from ``DequantizeLinear``,
    the pattern backends fuse into integer kernels. A recurrent op (``LSTM``, ``GRU``) counts only in its
    integer form (``DynamicQuantizeLSTM``): ONNX Runtime's static quantizer has no QDQ rule for it, so a
    recurrent model's static "INT8" variant runs its recurrence in FP32. This count says so in the table.
    """
    import onnx

    if not path.is_file():
        return None
    graph = onnx.load(str(path), load_external_data=False).graph
    dq_outputs = {o for n in graph.node if n.op_type in ("DequantizeLinear", "DynamicQuantizeLinear") for o in n.output}
    compute = [n for n in graph.node if n.op_type in COMPUTE_OPS]
    integer = [n for n in graph.node if n.op_type in ("MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM")]
    quantized = [
        n
        for n in compute
        if n.op_type not in ("LSTM", "GRU", "RNN") and len(n.input) >= 2 and all(i in dq_outputs for i in n.input[:2])
    ]
    fp32 = sorted({n.op_type for n in compute if n not in quantized})
    return {"quantized": len(quantized) + len(integer), "total": len(compute) + len(integer), "fp32_ops": fp32}


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """What the table needs from one pipeline report."""
    variants = {v["name"]: v for v in report["variants"]}
    ref = variants[report["reference"]]
    out: dict[str, Any] = {
        "parameters": report["source"].get("parameters"),
        "macs": report["source"].get("macs"),
        "metric": report["task"]["metric"],
        "unit": report["task"]["unit"],
        "higher_is_better": report["task"]["higher_is_better"],
        "fp32_metric": ref["metric"],
        "torch_p50_ms": (ref.get("benchmark") or {}).get("latency_ms", {}).get("p50"),
        "variants": {},
    }
    for name, v in variants.items():
        if v.get("reference"):
            continue
        b = v.get("benchmark") or {}
        out["variants"][name] = {
            "backend": v["backend"],
            "model": v["model"],
            "precision": v["precision"],
            "accepted": v["accepted"],
            "reason": v["reason"],
            "metric": v["metric"],
            "p50_ms": (b.get("latency_ms") or {}).get("p50"),
            "threads": b.get("threads"),
            "agreement": {
                k: (v.get("verification") or {}).get(k)
                for k in ("top1_agreement", "psnr_db", "cosine")
                if (v.get("verification") or {}).get(k) is not None
            },
        }
    verify = next((s for s in report["stages"] if s["name"] == "verify"), {}).get("details", {})
    out["min_agreement"] = verify.get("min_agreement")
    out["min_agreement_note"] = verify.get("min_agreement_note")
    out["max_metric_drop"] = report["recipe"]["verify"]["max_metric_drop"]
    return out


def bench_model(name: str, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    from effdl.errors import VerificationError
    from effdl.pipeline import compress
    from effdl.recipe import parse_recipe
    from effdl.zoo import get_model_entry

    entry = get_model_entry(name)
    t0 = time.perf_counter()
    ckpt, meta, fresh = checkpoint(name, Path(args.cache), log)
    trained = meta.get("trained", {})
    res: dict[str, Any] = {
        "model": name,
        "family": entry.family,
        "task": entry.task,
        "trained": {**trained, "this_run": fresh},
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": os.getloadavg()[0],
    }
    queries, warmup = (30, 10) if args.quick else (args.queries, 20)
    runs: dict[str, Any] = {}
    for kind in ("static", "dynamic"):
        out = Path(args.work) / f"{name}-{kind}"
        log(f"compress {name} ({kind} INT8)")
        try:
            report = compress(
                ckpt, parse_recipe(recipe_dict(kind, queries, warmup, args.threads or None)), out, force=True
            ).report
            runs[kind] = summarise(report)
            runs[kind]["int8_coverage"] = int8_coverage(out / "models" / "int8.onnx")
        except VerificationError as e:  # nothing passed: keep the reason, the FP32 ONNX variants normally pass
            runs[kind] = {"error": str(e)}
        except Exception as e:  # a failed static quantization (an op it cannot handle) is a finding, not a crash
            traceback.print_exc()
            runs[kind] = {"error": f"{type(e).__name__}: {e}"}
        static_ok = kind == "static" and any(
            v["accepted"] and v["model"] == "int8" for v in runs["static"].get("variants", {}).values()
        )
        # Static QDQ leaves recurrent ops in FP32 (ONNX Runtime has no static INT8 LSTM/GRU); dynamic INT8 has.
        recurrent_fp32 = {"LSTM", "GRU", "RNN"} & set((runs[kind].get("int8_coverage") or {}).get("fp32_ops", []))
        if static_ok and not recurrent_fp32:
            break
    res["runs"] = runs
    res["load_after"] = os.getloadavg()[0]
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["queries"], res["warmup"] = queries, warmup
    return res


def _fmt_metric(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}{unit}" if abs(x) >= 1 else f"{x:.4f}{unit}"


def _fmt_count(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def row(r: dict[str, Any]) -> tuple[str, list[str]]:
    """One table row and the footnotes it needs."""
    notes: list[str] = []
    if "runs" not in r:
        return f"| `{r['model']}` | {r.get('family', '-')} | failed: {r.get('error', '?')} |" + " |" * 8, notes
    static = r["runs"].get("static", {})
    base = static if "fp32_metric" in static else r["runs"].get("dynamic", {})
    if "fp32_metric" not in base:
        err = static.get("error") or r["runs"].get("dynamic", {}).get("error")
        return f"| `{r['model']}` | {r['family']} | pipeline failed: {err} |" + " |" * 8, notes
    unit = base["unit"]
    int8_cells = []
    for kind, run in r["runs"].items():
        if "error" in run:
            notes.append(f"{kind} INT8: {run['error']}")
            continue
        for v in run["variants"].values():
            if v["model"] != "int8":
                continue
            label = {"onnxruntime": "ORT", "openvino": "OV"}.get(v["backend"], v["backend"])
            mark = "" if v["accepted"] else " ✗"
            int8_cells.append(f"{_fmt_metric(v['metric'], unit)} {label}{' dyn' if kind == 'dynamic' else ''}{mark}")
            if not v["accepted"]:
                notes.append(f"{kind} INT8 on {v['backend']} refused: {v['reason']}")
        cov = run.get("int8_coverage")
        if cov and cov["quantized"] < cov["total"]:
            notes.append(
                f"{kind} INT8 quantizes {cov['quantized']} of {cov['total']} compute ops; "
                f"still FP32: {', '.join(cov['fp32_ops'])}"
            )
        if run.get("min_agreement_note"):
            notes.append(f"verified with the task's own agreement limits {run['min_agreement']}")
    # The dynamic run re-times the FP32 model; only its INT8 variant is new (no picking the luckier FP32 timing).
    timed = [
        (v["p50_ms"], f"{v['backend']} {v['precision']}{' (dynamic)' if kind == 'dynamic' else ''}")
        for kind, run in r["runs"].items()
        if "variants" in run
        for v in run["variants"].values()
        if v["accepted"] and v["p50_ms"] and (kind == "static" or v["model"] == "int8" or base is run)
    ]
    tr = r.get("trained") or {}
    if tr.get("value") is not None:
        how = "trained in this run" if tr.get("this_run") else "checkpoint reused from the cache"
        notes.append(
            f"{how}: {tr.get('epochs')} epochs, {tr.get('seconds')} s, held-out {_fmt_metric(tr['value'], unit)}"
        )
        if abs(tr["value"] - base["fp32_metric"]) > 1e-3 * max(1.0, abs(tr["value"])):
            notes.append(f"the pipeline's FP32 metric differs from the one recorded at training ({tr['value']:.4g})")
    torch_p50 = base["torch_p50_ms"]
    best = min(timed) if timed else None
    speed = f"{torch_p50 / best[0]:.1f}x" if best and torch_p50 else "-"
    cells = [
        f"`{r['model']}`",
        r["family"],
        f"`{r['task']}` {base['metric']}{' ↓' if not base['higher_is_better'] else ''}",
        _fmt_count(base["parameters"]),
        _fmt_count(base["macs"]),
        _fmt_metric(base["fp32_metric"], unit),
        "<br>".join(int8_cells) or "-",
        f"{torch_p50:.3f}" if torch_p50 else "-",
        f"{best[0]:.3f} {best[1]}" if best else "-",
        speed,
        f"{r['load_before']:.1f} / {r['load_after']:.1f}",
    ]
    return "| " + " | ".join(cells) + " |", notes


def render(results: dict[str, Any], meta: dict[str, Any]) -> str:
    """The ZOO-TABLE section: how it was measured, the table, then per-model notes."""
    from effdl.zoo import ZOO

    order = [n for n in ZOO.names() if n in results]
    h = meta["host"]
    threads = meta.get("threads") or "its runtime's default number of"
    max_load = max((max(r.get("load_before", 0), r.get("load_after", 0)) for r in results.values()), default=0.0)
    lines = [
        "<!-- generated by bench/zoo.py from docs/zoo.json; do not edit by hand -->",
        "",
        "Produced by "
        + "; ".join(
            f"`{r['command']}` ({r['date']}, {r['wall_s']:.0f} s wall, {len(r['models'])} models)" for r in meta["runs"]
        )
        + " (a later run replaces the rows of the models it ran; each row's date is in `docs/zoo.json`).",
        f"Host from `effdl devices detect`: {h.get('cpu_model')}, {h.get('cores')} cores usable, "
        f"{h.get('clock_ghz')} GHz, profile `{meta['profile']}`; shared with other jobs (the load column is the "
        "1-minute load average before / after each model's run). "
        f"At the loads of these runs (up to {max_load:.0f} on {h.get('cores')} cores) every process gets "
        "a small share of a core, and a query longer than a scheduler time slice waits for other "
        "jobs' slices: slow variants (torch eager, the larger models) are inflated far more than sub-millisecond "
        "ones, so the x column overstates speed-ups and absolute latencies are not figures to quote. Rerun on an "
        "idle host for those; the metrics, coverage and verification columns do not depend on load. "
        f"Versions: torch {meta['torch']}, ONNX Runtime {meta['ort']}, OpenVINO {meta['ov']}, effdl {meta['effdl']}.",
        "",
        "How: each model is trained at its default size (`effdl zoo train`'s code, seed 0), then run through "
        "`effdl.pipeline.compress` with the default recipe's static INT8 quantization (ONNX Runtime QDQ, MinMax "
        "calibration on 100 samples, per-channel weights) and verify limits (metric drop at most 1 point of the "
        "task metric, top-1 agreement at least 97 %, or the task's own agreement limit where top-1 does not apply), "
        "for ONNX Runtime and OpenVINO (FP32 inference precision pinned). Where no static INT8 variant passes, "
        "or static INT8 leaves LSTM/GRU ops in FP32, dynamic INT8 on ONNX Runtime runs too (`dyn`). "
        "Metrics are on the task's whole held-out split (↓: lower "
        "is better). Latency is the p50 of single-stream batch-1 queries "
        f"({meta['queries']} timed after {meta['warmup']} warm-up), each variant alone in a fresh process with "
        f"{threads} intra-op thread(s); torch is the model in eager mode, FP32. `best` is the fastest variant "
        "that passed verification; x is torch eager p50 / best p50. ✗ marks an INT8 variant refused by "
        "verification (reason in the notes); it is not packaged.",
        "",
        "| model | family | task, metric | params | MACs | FP32 metric | INT8 metric | torch eager FP32 p50 ms "
        "| best p50 ms (backend, precision) | x | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    all_notes: list[str] = []
    for name in order:
        line, notes = row(results[name])
        lines.append(line)
        all_notes += [f"- `{name}`: {n}" for n in notes]
    if all_notes:
        lines += ["", "Notes:", "", *all_notes]
    return "\n".join(lines)


def runs_of(meta: dict[str, Any], results: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs a results file records (older files kept one run's command, date and wall time at the top)."""
    if "runs" in meta:
        return list(meta["runs"])
    return [{k: meta.get(k) for k in ("command", "date", "wall_s")} | {"models": sorted(results)}]


def merge(files: list[Path], md: Path) -> None:
    """Combine results files of runs made separately (e.g. in parallel) into ``md`` and its JSON, in order."""
    results: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    for f in files:
        data = json.loads(f.read_text())
        results.update(data["results"])
        meta = data["meta"]
        runs += runs_of(data["meta"], data["results"])
    # A later run's row replaces an earlier run's: each run keeps only the rows it still owns.
    meta["runs"] = []
    for i, r in enumerate(runs):
        later = {m for x in runs[i + 1 :] for m in x["models"]}
        mine = [m for m in r["models"] if m not in later and m in results]
        if mine:
            meta["runs"].append({**r, "models": mine})
    write(results, meta, md)


def write(results: dict[str, Any], meta: dict[str, Any], md: Path) -> None:
    md.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str) + "\n")
    section = render(results, meta)
    text = md.read_text() if md.exists() else f"# The model zoo\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = f"{head}{BEGIN}\n{section}\n{END}{rest.split(END, 1)[1]}"
    else:
        text += f"\n## Measured\n\n{BEGIN}\n{section}\n{END}\n"
    md.write_text(text)


def main() -> int:
    from effdl.zoo import ZOO

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated zoo names (default: all)")
    ap.add_argument("--quick", action="store_true", help="30 timed queries (10 warm-up) instead of --queries")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads of every runtime while timing (0: each runtime's default). 1 by default: on a "
        "shared host, torch's spinning OpenMP threads turn small models' latency into scheduler noise",
    )
    ap.add_argument("--cache", default=str(ROOT / "runs" / "zoo"), help="trained checkpoints, reused when current")
    ap.add_argument("--work", default=None, help="where the packages go (default: CACHE/packages)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "zoo.md"))
    ap.add_argument("--merge", nargs="+", type=Path, help="measure nothing: combine these results JSONs into --out")
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, Path(args.out))
        print(Path(args.out).read_text())
        return 0
    args.work = args.work or str(Path(args.cache) / "packages")
    names = [n.strip() for n in args.models.split(",")] if args.models else ZOO.names()
    for n in names:
        ZOO.get(n)  # unknown names fail now, listing the known ones
    import onnxruntime
    import openvino
    import torch

    from effdl import __version__
    from effdl.devices import detect_host, profile_for_host

    host = detect_host(gpus=False)
    md = Path(args.out)
    old = json.loads(md.with_suffix(".json").read_text()) if md.with_suffix(".json").exists() else {}
    results: dict[str, Any] = dict(old.get("results", {}))
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": {k: host.get(k) for k in ("cpu_model", "cores", "logical_cpus", "clock_ghz", "isa")},
        "profile": profile_for_host(unit="cpu").name,
        "torch": torch.__version__,
        "ort": onnxruntime.__version__,
        "ov": openvino.__version__.split("-")[0],
        "effdl": f"{__version__} ({commit.stdout.strip() or 'unknown commit'})",
        "queries": 30 if args.quick else args.queries,
        "warmup": 10 if args.quick else 20,
        "threads": args.threads or None,
    }
    this_run = {"command": "python bench/zoo.py " + " ".join(sys.argv[1:]), "date": meta["date"], "wall_s": 0.0}
    this_run["models"] = names
    meta["runs"] = [
        {**r, "models": [m for m in r["models"] if m not in names]}
        for r in runs_of(old.get("meta", {}), results)
        if old and any(m not in names for m in r["models"])
    ] + [this_run]
    start = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {text}", flush=True)

    Path(args.work).mkdir(parents=True, exist_ok=True)
    for name in names:
        try:
            results[name] = bench_model(name, args, log)
        except Exception as e:
            traceback.print_exc()
            results[name] = {"model": name, "family": ZOO.get(name).family, "error": f"{type(e).__name__}: {e}"}
        this_run["wall_s"] = time.perf_counter() - start
        write(results, meta, md)  # after every model, so an interrupted run keeps what it measured
        log(f"done {name}")
    shutil.rmtree(args.work, ignore_errors=True)
    print(render(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
