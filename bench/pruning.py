"""Pruning and distillation vs INT8 alone on OpenVINO CPU; writes docs/pruning.md.

For the default ResNet (``resnet8`` on digits) and the BERT-style zoo classifier (``bert_classifier`` on
seq_majority), each at its default size and at a larger size where compute dominates (``resnet8-w64``:
width 64; ``bert_classifier-d256``: dim 256, 8 heads, 64 tokens), recipes go through
``effdl.pipeline.compress`` (export, INT8 via NNCF, OpenVINO compile, verification against the FP32
checkpoint on the held-out split):

- ``int8``: static INT8 only (the baseline);
- ``structured``: prune-structured (half the channels / heads / FFN neurons, widths multiples of 8, 2 steps
  with fine-tuning) -> distill (from the original checkpoint) -> INT8;
- ``depth`` (default sizes, and bert_classifier-d256-depth): prune-depth (one residual block removed, the
  one with the lowest calibration loss after a short probe fine-tune; then fine-tuned) -> the ``structured``
  stages;
- ``unstructured``: prune-unstructured (70% zero weights, gradual cubic schedule) -> INT8 (larger sizes);
- ``sparse24``: sparsity-24 (2:4, fixed masks, fine-tuned) -> INT8 (larger sizes).

Latency: each package's ``openvino-int8`` variant (and the INT8 package's ``openvino-fp32``) is timed by
effdl's benchmark worker, each in its own fresh process, batch 1, ``--threads`` inference threads (1 by
default: on a shared 2-core machine a second thread mostly waits for a core), interleaved over ``--rounds``
rounds so that load changes hit every variant alike; the table shows the lowest of the rounds' p50
latencies (on a shared machine other jobs only ever add time, so the least disturbed round is the best
estimate) and speed-ups vs INT8 alone from those; every round's p50 is listed too. Then OpenVINO's
per-node counters of each INT8 model show where a call's time goes.

Checkpoints are trained once with the zoo's recipe (fewer epochs for the larger sizes) and cached in
``--work`` (runs/bench-pruning by default). One model entry at a time; ``--render`` rewrites the page from
the saved results.

    PYTHONPATH=. python bench/pruning.py     # about an hour on 2 busy shared cores, mostly training
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUANTIZE = {"stage": "quantize", "output": "int8", "config": {"engine": "nncf", "samples": 100}}
# NNCF's transformer scheme keeps LayerNorm / Softmax / residual adds in FP32 as OpenVINO's CPU plugin expects;
# without it the INT8 BERT ran slower than FP32 (a weak baseline that would flatter the pruned model).
QUANTIZE_TRANSFORMER = {**QUANTIZE, "config": {**QUANTIZE["config"], "model_type": "transformer"}}

ALL = ("int8", "structured", "unstructured", "sparse24")

# Each entry: a zoo architecture at a size (``overrides`` of its defaults, ``task_options`` of its task), the
# epochs its checkpoint is trained for (None: the zoo recipe's), which variants run, and each stage's config.
# The default sizes (resnet8 width 32, bert_classifier dim 64 on 32 tokens) take ~0.1-0.3 ms per INT8 call on
# one core, where fixed per-call and per-node costs are a large share; the "-w64" / "-d256" sizes are the
# same architectures at 4x / 16x the MACs, where compute dominates and the goal is judged (docs/pruning.md).
MODELS: dict[str, dict[str, Any]] = {
    "resnet8": {
        "arch": "resnet8",
        "overrides": {},
        "task_options": {},
        "epochs": None,
        "variants": ("int8", "structured", "depth"),
        "quantize": QUANTIZE,
        "structured": {"ratio": 0.5, "steps": 2, "round_to": 8, "finetune": {"epochs": 2, "lr": 0.002}},
        "distill": {"temperature": 4.0, "alpha": 0.7, "finetune": {"epochs": 6, "lr": 0.002}},
        "depth": {"blocks": 1, "per_mac": True, "finetune": {"epochs": 2, "lr": 0.002}},
    },
    "resnet8-w64": {
        "arch": "resnet8",
        "overrides": {"width": 64},
        "task_options": {},
        "epochs": 4,
        "variants": ALL,
        "quantize": QUANTIZE,
        "structured": {"ratio": 0.5, "steps": 2, "round_to": 8, "finetune": {"epochs": 1, "lr": 0.002}},
        "distill": {"temperature": 4.0, "alpha": 0.7, "finetune": {"epochs": 3, "lr": 0.002}},
        "unstructured": {"finetune": {"epochs": 0.5, "lr": 0.001}},
        "sparse24": {"layers": ["linear", "conv"], "finetune": {"epochs": 1, "lr": 0.001}},
    },
    "bert_classifier": {
        "arch": "bert_classifier",
        "overrides": {},
        "task_options": {},
        "epochs": None,
        "variants": ("int8", "structured", "depth"),
        "quantize": QUANTIZE_TRANSFORMER,
        "structured": {
            "ratio": 0.5,
            "head_ratio": 0.5,
            "steps": 2,
            "round_to": 8,
            "finetune": {"epochs": 1, "lr": 0.002},
        },
        "distill": {"temperature": 4.0, "alpha": 0.7, "finetune": {"epochs": 2, "lr": 0.002}},
        "depth": {"blocks": 1, "finetune": {"epochs": 1, "lr": 0.002}},
    },
    "bert_classifier-d256": {
        "arch": "bert_classifier",
        "overrides": {"dim": 256, "heads": 8},
        "task_options": {"length": 64, "n_train": 4000},
        "epochs": 4,
        "variants": ALL,
        "quantize": QUANTIZE_TRANSFORMER,
        "structured": {
            "ratio": 0.5,
            "head_ratio": 0.5,
            "steps": 2,
            "round_to": 8,
            "finetune": {"epochs": 1, "lr": 0.001},
        },
        "distill": {"temperature": 4.0, "alpha": 0.7, "finetune": {"epochs": 2, "lr": 0.001}},
        "unstructured": {"finetune": {"epochs": 0.5, "lr": 0.0005}},
        "sparse24": {"layers": ["linear"], "finetune": {"epochs": 1, "lr": 0.0005}},
    },
}

# The same checkpoint as bert_classifier-d256, pruned further (5/8 of the residual width, heads and FFN
# neurons): the 50% row of that size stays below 2x on this CPU, and the task leaves accuracy to spare.
MODELS["bert_classifier-d256-p62"] = {
    **MODELS["bert_classifier-d256"],
    "checkpoint": "bert_classifier-d256",
    "variants": ("int8", "structured"),
    "structured": {**MODELS["bert_classifier-d256"]["structured"], "ratio": 0.625, "head_ratio": 0.625},
}

# The same checkpoint again, one of its two blocks removed before the 50% width pruning.
MODELS["bert_classifier-d256-depth"] = {
    **MODELS["bert_classifier-d256"],
    "checkpoint": "bert_classifier-d256",
    "variants": ("int8", "depth"),
    "depth": {"blocks": 1, "finetune": {"epochs": 1, "lr": 0.001}},
}

LABELS = {
    "int8": "INT8 only",
    "structured": "prune-structured 50% + distill + INT8",
    "depth": "prune-depth 1 block + prune-structured 50% + distill + INT8",  # the block count follows the config
    "unstructured": "prune-unstructured 70% (gradual) + INT8",
    "sparse24": "sparsity-24 (2:4) + INT8",
}


def stages_for(name: str, variant: str) -> list[dict[str, Any]]:
    cfg = MODELS[name]
    quantize = cfg["quantize"]
    if variant == "int8":
        return [quantize]
    if variant in ("structured", "depth"):
        depth = [{"stage": "prune-depth", "config": cfg["depth"]}] if variant == "depth" else []
        return [
            *depth,
            {"stage": "prune-structured", "config": cfg["structured"]},
            {"stage": "distill", "config": cfg["distill"]},
            quantize,
        ]
    if variant == "unstructured":
        unstructured = {"sparsity": 0.7, "scope": "global", "schedule": "gradual", "steps": 4, **cfg["unstructured"]}
        return [{"stage": "prune-unstructured", "config": unstructured}, quantize]
    return [{"stage": "sparsity-24", "config": cfg["sparse24"]}, quantize]


def checkpoint(name: str, work: Path) -> Path:
    """The zoo-trained checkpoint of model entry ``name`` (architecture at its size), trained once and cached."""
    from effdl.sources import save_checkpoint
    from effdl.zoo import get_model_entry
    from effdl.zoo.train import train_entry

    name = MODELS[name].get("checkpoint", name)  # an entry may reuse another entry's checkpoint
    spec = MODELS[name]
    path = work / "ckpt" / f"{name}.safetensors"
    if not path.exists():
        entry = get_model_entry(spec["arch"])
        epochs = spec["epochs"] or entry.train.epochs
        print(f"training {name} ({epochs} epochs) ...", flush=True)
        r = train_entry(
            entry, overrides=spec["overrides"], epochs=epochs, seed=0, task_options=spec["task_options"] or None
        )
        print(f"  {name}: held-out metric {r.metric:.2f} after {r.seconds:.0f} s", flush=True)
        save_checkpoint(
            r.model,
            path,
            arch=spec["arch"],
            config=r.config,
            task=entry.task,
            task_options={**entry.task_options, **spec["task_options"]},
        )
    return path


def zipped(paths: list[Path]) -> int:
    return sum(len(zlib.compress(p.read_bytes(), 6)) for p in paths)


def onnx_weights(path: Path) -> int:
    """Elements in the ONNX model's initializers: shows that structured pruning shrank the exported tensors."""
    import math as _math

    import onnx

    return sum(_math.prod(t.dims) for t in onnx.load(str(path), load_external_data=False).graph.initializer)


def ov_compute(root: Path, files: list[str]) -> dict[str, Any]:
    """Runtime precision of the compute layers of a package's compiled OpenVINO variant (CPU, f32 hint)."""
    import openvino as ov

    from effdl.backends.openvino import compute_precisions

    core = ov.Core()
    cm = core.compile_model(core.read_model(str(root / files[0])), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compute_precisions(cm)


def compress_variant(arch: str, variant: str, ckpt: Path, work: Path, static_shapes: bool = True) -> dict[str, Any]:
    """Run the pipeline for one (model entry, variant); return what the table needs from its report."""
    from effdl.pipeline import compress
    from effdl.recipe import parse_recipe

    recipe = parse_recipe(
        {
            "name": f"{arch}-{variant}",
            "stages": stages_for(arch, variant),
            "targets": [
                {
                    "backend": "openvino",
                    "models": ["fp32", "int8"],
                    "options": {"inference_precision": "fp32", "static_shapes": static_shapes},
                }
            ],
            "verify": {"max_metric_drop": 100.0},  # the bench reports the drop; it does not gate on it
            "benchmark": {"enabled": False},  # timed below, side by side, each variant in its own process
        }
    )
    out = work / "packages" / f"{arch}-{variant}"
    start = time.perf_counter()
    report = compress(ckpt, recipe, out, force=True).report
    seconds = time.perf_counter() - start
    stages = {s["name"]: s["details"] for s in report["stages"]}
    variants = {v["name"]: v for v in report["variants"]}
    int8 = variants["openvino-int8"]
    fp32 = variants["openvino-fp32"]
    last_torch = next((stages[s] for s in ("distill", "sparsity-24", "prune-unstructured") if s in stages), None)
    macs = (last_torch or {}).get("after", {}).get("macs") or report["source"]["macs"]
    params = (last_torch or {}).get("after", {}).get("parameters") or report["source"]["parameters"]
    sparsity = None
    for s in ("prune-unstructured", "sparsity-24"):
        if s in stages:
            sparsity = stages[s]["sparsity"]["pruned_layers"]
    row: dict[str, Any] = {
        "arch": arch,
        "variant": variant,
        "package": str(out),
        "compress_seconds": round(seconds, 1),
        "reference_metric": stages["baseline"]["metric"],
        "metric_unit": report["task"]["unit"],
        "metric_name": report["task"]["metric"],
        "fp32_metric": fp32["metric"],
        "int8_metric": int8["metric"],
        "int8_drop": int8["verification"]["metric_drop"],
        "int8_precision": int8["precision"],
        "macs": macs,
        "source_macs": report["source"]["macs"],
        "parameters": params,
        "sparsity": sparsity,
        "fp32_onnx_bytes": (out / "models" / "fp32.onnx").stat().st_size,
        "fp32_onnx_weights": onnx_weights(out / "models" / "fp32.onnx"),
        "ov_int8_compute": ov_compute(out, int8["files"]),
        "zoo_arch": MODELS[arch]["arch"],
        "overrides": MODELS[arch]["overrides"],
        "task_options": MODELS[arch]["task_options"],
        "fp32_onnx_zip_bytes": zipped([out / "models" / "fp32.onnx"]),
        "int8_bytes": int8["size_bytes"],
        "int8_zip_bytes": zipped([out / f for f in int8["files"]]),
        "stages": {
            k: v for k, v in stages.items() if k in ("prune-depth", "prune-structured", "distill", "prune-unstructured")
        },
    }
    if "prune-structured" in stages:
        row["heads"] = stages["prune-structured"]["heads"]
        row["structured_metric"] = stages["prune-structured"]["after"]["metric"]
        row["distill_metric"] = stages["distill"]["after"]["metric"]
    if "prune-depth" in stages:
        row["depth_removed"] = [r["block"] for r in stages["prune-depth"]["removed"]]
        row["depth_metric"] = stages["prune-depth"]["after"]["metric"]
    if "sparsity-24" in stages:
        row["layers_24"] = len(stages["sparsity-24"]["semi_structured_layers"])
    return row


def time_all(rows: list[dict[str, Any]], work: Path, rounds: int, queries: int, threads: int | None) -> None:
    """p50 latency of every row's openvino-int8 (and the INT8 row's openvino-fp32), interleaved rounds."""
    import numpy as np

    from effdl.benchmark.worker import run_isolated
    from effdl.tasks import get_task
    from effdl.zoo import get_model_entry

    scratch = work / "timing"
    scratch.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[dict[str, Any], str, dict[str, Any]]] = []
    for row in rows:
        entry = get_model_entry(MODELS[row["arch"]]["arch"])
        task = get_task(entry.task, **{**entry.task_options, **MODELS[row["arch"]]["task_options"]})
        npz = scratch / f"{row['arch']}-inputs.npz"
        if not npz.exists():
            sample = task.split("heldout").take(1)
            np.savez(npz, **{k: sample.inputs[k] for k in task.input_names})
        common = {
            "warmup": 50,
            "queries": queries,
            "inputs_npz": str(npz),
            "input_names": list(task.input_names),
            "backend_latency": True,  # OpenVINO's own per-call latency beside perf_counter's
        }
        if threads:
            common["threads"] = threads
        names = ["openvino-int8"] + (["openvino-fp32"] if row["variant"] == "int8" else [])
        for name in names:
            spec = {**common, "kind": "package", "root": row["package"], "variant": name}
            jobs.append((row, name, spec))
            row.setdefault("p50_ms", {})[name] = []
            row.setdefault("ov_p50_ms", {})[name] = []
    for row in rows:
        row["timing_load_average"] = [round(x, 2) for x in os.getloadavg()]  # before the rounds
    for r in range(rounds):
        for row, name, spec in jobs:
            label = f"{row['arch']}-{row['variant']}-{name}-r{r}"
            b = run_isolated({**spec, "label": label}, scratch)
            row["p50_ms"][name].append(b["latency_ms"]["p50"])
            row["ov_p50_ms"][name].append(b["backend_latency_ms"]["p50"])
            print(
                f"  round {r + 1}/{rounds} {label}: p50 {b['latency_ms']['p50']:.4f} ms "
                f"(OpenVINO's own {b['backend_latency_ms']['p50']:.4f} ms)",
                flush=True,
            )


COMPUTE_NODES = ("Convolution", "FullyConnected", "MatMul", "Subgraph i8")


def profile_int8(
    row: dict[str, Any], work: Path, threads: int | None, static_shapes: bool, calls: int = 300
) -> dict[str, Any]:
    """Where a call of the row's OpenVINO INT8 model spends its time: OpenVINO's per-node counters
    (``PERF_COUNT``) summed per call, against the wall time of the same calls. Run in this process,
    after the timing rounds; these figures explain the latency table and are not part of it."""
    import numpy as np
    import openvino as ov

    manifest = json.loads((Path(row["package"]) / "manifest.json").read_text())
    variant = next(v for v in manifest["variants"] if v["name"] == "openvino-int8")
    core = ov.Core()
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    feeds = dict(np.load(work / "timing" / f"{row['arch']}-inputs.npz"))
    model = core.read_model(str(Path(row["package"]) / variant["files"][0]))
    if static_shapes:
        model.reshape({k: list(v.shape) for k, v in feeds.items()})
    compiled = core.compile_model(model, "CPU", {**config, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    views = {}  # fed the way effdl's OpenVINO runner feeds a request: copies into its own, kept input tensors
    for k, v in feeds.items():
        tensor = request.get_tensor(k)
        if tuple(tensor.shape) != v.shape:
            tensor.shape = list(v.shape)
        views[k] = tensor.data

    def call() -> None:
        for k, v in feeds.items():
            views[k][...] = v
        request.infer()

    for _ in range(50):
        call()
    calls_seen: list[tuple[float, dict[str, float]]] = []
    nodes = 0
    for _ in range(calls):
        start = time.perf_counter()
        call()
        wall = time.perf_counter() - start
        executed = [n for n in request.profiling_info if n.status.name == "EXECUTED"]
        nodes = len(executed)
        per: dict[str, float] = {}
        for n in executed:
            # A "Subgraph" is OpenVINO's fusion of several ops: i8 ones are the attention (MatMul-Softmax-MatMul),
            # f32 ones the element-wise chains (GELU, adds, scales).
            kind = n.node_type if n.node_type != "Subgraph" else f"Subgraph {'i8' if 'i8' in n.exec_type else 'f32'}"
            per[kind] = per.get(kind, 0.0) + n.real_time.total_seconds() * 1e6
        calls_seen.append((wall * 1e6, per))
    # On a shared machine a call that lost its core is slower in every node; the fastest quarter of the
    # calls is the least disturbed picture of where the time goes.
    fastest = sorted(calls_seen, key=lambda c: c[0])[: max(1, calls // 4)]
    by_type: dict[str, float] = {}
    for _, per in fastest:
        for k, v in per.items():
            by_type[k] = by_type.get(k, 0.0) + v / len(fastest)
    compute = sum(v for k, v in by_type.items() if k.startswith(COMPUTE_NODES))
    return {
        "calls": calls,
        "averaged_calls": len(fastest),
        "wall_us": round(sum(w for w, _ in fastest) / len(fastest), 1),
        "wall_p50_us": round(float(np.median([w for w, _ in calls_seen])), 1),
        "nodes_us": round(sum(by_type.values()), 1),
        "compute_us": round(compute, 1),
        "nodes": nodes,
        "by_type_us": {k: round(v, 1) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])},
    }


def label(row: dict[str, Any]) -> str:
    """The variant's label; the structured one names its channel ratio."""
    spec = MODELS.get(row["arch"], {})
    ratio = spec.get("structured", {}).get("ratio", 0.5)
    blocks = spec.get("depth", {}).get("blocks", 1)
    text = LABELS[row["variant"]].replace("50%", f"{ratio:.1%}".replace(".0%", "%"))
    return text.replace("1 block", f"{blocks} block{'s' if blocks != 1 else ''}")


def _fmt_bytes(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _describe(r: dict[str, Any]) -> str:
    """'resnet8, width 64' / 'bert_classifier, dim 256, heads 8; task length 64' from a row's config."""
    parts = [f"`{r.get('zoo_arch', r['arch'])}`"]
    parts += [f"{k} {v}" for k, v in (r.get("overrides") or {}).items()]
    opts = ", ".join(f"{k} {v}" for k, v in (r.get("task_options") or {}).items())
    return (
        ", ".join(parts)
        + (f"; task options {opts}" if opts else "")
        + ("" if r.get("overrides") or r.get("task_options") else " at its default size")
    )


def _compute(r: dict[str, Any]) -> str:
    c = r.get("ov_int8_compute")
    return "-" if not c else f"{c['int8']}/{c['int8'] + c['float']}"


def _ov_ms(row: dict[str, Any]) -> float | None:
    """Lowest round p50 of OpenVINO's own latency of the row's INT8 variant (None in results timed before it)."""
    v = row.get("ov_p50_ms", {}).get("openvino-int8")
    return min(v) if v else None


def render(rows: list[dict[str, Any]], settings: dict[str, Any], seconds: float) -> str:
    import openvino

    rounds, queries, threads = settings.get("rounds", 3), settings.get("queries", 500), settings.get("threads")
    thread_text = (
        f"{threads} inference thread{'s' if threads != 1 else ''}" if threads else "OpenVINO's default threads"
    )
    if settings.get("static_shapes"):
        thread_text += (
            ", each model compiled for its exact input shape (the backend's `static_shapes` option: at batch 1 a "
            "dynamic-batch model pays for shape handling on every call, which weighs more on the smaller model)"
        )
    lines = [
        "# Pruning and distillation",
        "",
        "effdl has five torch stages that run before export and compose with `quantize`",
        "(`prune-depth -> prune-structured -> distill -> quantize`). Recipes: `recipes/prune-structured.yaml`,",
        "`recipes/prune-depth.yaml`, `recipes/prune-unstructured.yaml`, `recipes/prune-24.yaml`,",
        "`recipes/distill-student.yaml`; every key is in [recipes.md](recipes.md).",
        "",
        "| stage | what it removes | faster on dense CPU backends? | library |",
        "|---|---|---|---|",
        "| `prune-structured` | whole conv channels, attention heads, FFN neurons (and the residual width), "
        "dependency-aware | **yes**: the model is smaller and dense | torch-pruning (DepGraph) |",
        "| `prune-depth` | whole residual blocks (ResNet basic blocks, Transformer blocks), the one whose bypass "
        "changes the outputs least first | **yes**, and more than narrower layers at batch 1 (below) | effdl "
        "(torch-pruning removes channels, not blocks) |",
        "| `prune-unstructured` | individual weights (global or per-layer L1 magnitude; one-shot or Zhu & Gupta "
        "cubic schedule) | no: zeros are computed like any weight; the zipped model is smaller | "
        "`torch.nn.utils.prune` |",
        "| `sparsity-24` | 2 of every 4 weights along the input dimension, masks fixed while fine-tuning | "
        "no on CPU; yes on sparse tensor cores (TensorRT sparse weights, torch `to_sparse_semi_structured`) | "
        "`torch.nn.utils.prune.custom_from_mask` |",
        "| `distill` | nothing: trains the current model (or a smaller zoo student) on the original model's "
        "logits (and optional feature hints) | it recovers the accuracy pruning cost | effdl (loss), torch |",
        "",
        "After each torch stage the pipeline records the held-out metric, parameters and MACs in the report, so",
        "each stage's effect is visible (`report.md`, *Stages*).",
        "",
        "## Results",
        "",
        f"Generated by `bench/pruning.py` ({seconds / 60:.1f} min of runs) on {platform.machine()} "
        f"({platform.processor() or 'CPU'}), OpenVINO {openvino.__version__}, CPU plugin with "
        "`INFERENCE_PRECISION_HINT=f32` (so INT8 kernels run on the QDQ model and nothing silently runs BF16), "
        f"{thread_text}.",
        "Every row is one `effdl.pipeline.compress` run from the same FP32 checkpoint; INT8 is NNCF's static "
        "quantization on 100 calibration samples (the BERT models with NNCF's transformer scheme, which keeps "
        "LayerNorm / Softmax / residual adds in FP32 as OpenVINO expects). Metric: the OpenVINO INT8 variant's task "
        "metric on the held-out split, and its drop vs the FP32 checkpoint (torch). Latency: p50 of "
        f"{queries} single-stream calls at batch 1 (after 50 warm-up calls), each variant alone in a fresh "
        f"process, {rounds} interleaved rounds; the table shows the lowest p50 over the rounds (other jobs on a "
        "shared machine only add time), and the speed-up vs INT8 alone is the ratio of those, measured in the "
        "same rounds. Each call is timed twice: *OpenVINO* is OpenVINO's own duration of the call "
        "(`InferRequest.latency`: the C++ `infer`, what OpenVINO's `benchmark_app` reports), *Python* is "
        "`time.perf_counter` around effdl's `session.run` (what an application calling effdl from Python "
        "waits: the OpenVINO call plus 10-30 us of Python, input copy and output conversion, the same for "
        "every variant). The goal is judged on OpenVINO's figure (how fast the model runs on OpenVINO); the "
        "Python ratio is shown beside it. MACs are torch's FLOP counter / 2 for one sample. ONNX weights: "
        "elements in the exported "
        "FP32 ONNX initializers (structured pruning shrinks them; masks do not). OV INT8 compute layers: "
        "convolution / fully-connected layers that OpenVINO's runtime graph runs in i8/u8, of all of them "
        "(`effdl.backends.openvino.compute_precisions`); a layer left in f32 would be a dequantize path that "
        "gains nothing. Zip: zlib level 6 over the files.",
        "",
        "Why two sizes of each model, and why depth: the default sizes (`resnet8` width 32 on 32x32 digits, "
        "`bert_classifier` dim 64 on 32 tokens) take about a tenth of a millisecond per INT8 call, and much of that "
        "is per-call and per-layer work that does not shrink with the channels (see *Where the time goes* and "
        "*Reading the table*), so halving every layer's channels does not halve the latency there. Removing one "
        "whole residual block (`prune-depth`) before the channel pruning removes its per-layer costs too; the "
        "`-w64` / `-d256` sizes are the same architectures where the multiply-accumulates dominate and channels "
        "alone suffice.",
        "",
    ]
    by_arch: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_arch.setdefault(r["arch"], []).append(r)
    goals: list[str] = []
    for arch, rs in by_arch.items():
        base = next(r for r in rs if r["variant"] == "int8")
        base_ms = min(base["p50_ms"]["openvino-int8"])
        fp32_ms = min(base["p50_ms"]["openvino-fp32"])
        unit = base["metric_unit"]
        load = base.get("timing_load_average")
        lines += [
            f"### {arch}",
            "",
            f"{_describe(base)}. FP32 checkpoint: {base['metric_name']} {base['reference_metric']:.2f}{unit} (torch), "
            f"{base['source_macs']:,} MACs; OpenVINO FP32 p50 {fp32_ms:.3f} ms"
            + (f"; load average before timing {load[0]:.1f} (1 min) on {os.cpu_count()} cores" if load else "")
            + ".",
            "",
            f"| variant | {base['metric_name']} (OV INT8) | drop vs FP32 | MACs | params | ONNX weights | "
            "weight sparsity | FP32 ONNX zip | INT8 files (zip) | OV INT8 compute layers | OV INT8 p50 ms "
            "OpenVINO / Python | speed-up vs INT8 OpenVINO / Python |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        base_ov = _ov_ms(base)
        for r in rs:
            ms = min(r["p50_ms"]["openvino-int8"])
            ov_ms = _ov_ms(r)
            ov_cell = "-" if ov_ms is None else f"{ov_ms:.3f}"
            ov_speed = "-" if ov_ms is None or base_ov is None else f"**{base_ov / ov_ms:.2f}x**"
            sp = "-" if r["sparsity"] is None else f"{r['sparsity']:.0%}"
            lines.append(
                f"| {label(r)} | {r['int8_metric']:.2f}{unit} | {r['int8_drop']:+.2f} | "
                f"{r['macs']:,} | {r['parameters']:,} | {r.get('fp32_onnx_weights', 0):,} | {sp} | "
                f"{_fmt_bytes(r['fp32_onnx_zip_bytes'])} | "
                f"{_fmt_bytes(r['int8_bytes'])} ({_fmt_bytes(r['int8_zip_bytes'])}) | {_compute(r)} | "
                f"{ov_cell} / {ms:.3f} | {ov_speed} / {base_ms / ms:.2f}x |"
            )
        for s in (r for r in rs if r["variant"] in ("structured", "depth")):
            speedup = base_ms / min(s["p50_ms"]["openvino-int8"])
            s_ov = _ov_ms(s)
            ov_speedup = None if s_ov is None or base_ov is None else base_ov / s_ov
            judged = speedup if ov_speedup is None else ov_speedup
            met = judged >= 2.0 and s["int8_drop"] <= 1.5
            rounds_ms = base.get("ov_p50_ms", base["p50_ms"])["openvino-int8"]
            spread = max(rounds_ms) / min(rounds_ms) - 1
            how = (
                f"{speedup:.2f}x"
                if ov_speedup is None
                else f"{ov_speedup:.2f}x on OpenVINO's own latency, {speedup:.2f}x through Python"
            )
            verdict = (
                f"**{'met' if met else 'not met'}** ({how}, drop {s['int8_drop']:+.2f}; INT8-alone p50 "
                f"varied {spread:.0%} over the rounds)"
            )
            goals.append(f"| {arch} | {_describe(s)} | {label(s)} | {verdict} |")
            earlier = [
                min(b["openvino-int8"]) / min(e["openvino-int8"])
                for b, e in zip(base.get("earlier_p50_ms", []), s.get("earlier_p50_ms", []), strict=False)
            ]
            lines += ["", f"Goal, {label(s)} (>= 2x faster than INT8 alone, drop <= 1.5 points): {verdict}."]
            if earlier:
                lines[-1] += (
                    " Earlier timing runs of the same packages (same method, fewer rounds): "
                    + ", ".join(f"{x:.2f}x" for x in earlier)
                    + "."
                )
            heads = ", ".join(f"{k} {v['before']}->{v['after']}" for k, v in s.get("heads", {}).items())
            ps = s["stages"]["prune-structured"]
            widths = sorted({tuple(v["after"]) for v in ps.get("layers_changed", {}).values()})
            depth = ""
            if s.get("depth_removed"):
                pd = s["stages"]["prune-depth"]
                scores = ", ".join(f"{k} {v:.3f}" for k, v in pd["removed"][0]["scores"].items())
                depth = (
                    f"after prune-depth (removed {', '.join(s['depth_removed'])}; candidates' {pd['score']}: "
                    f"{scores}) {s['depth_metric']:.2f}{unit}, "
                )
            lines += [
                "",
                f"{label(s).split(' + ')[0].capitalize()} row, stage by stage (held-out {base['metric_name']}, "
                f"torch): {depth}after prune-structured "
                f"{s['structured_metric']:.2f}{unit} ({ps['mac_fraction']:.0%} of the MACs left"
                + (f"; heads {heads}" if heads else "")
                + f"), after distill {s['distill_metric']:.2f}{unit}, after INT8 on OpenVINO "
                f"{s['int8_metric']:.2f}{unit}. Pruned layers' (in, out) widths: "
                + ", ".join(f"{a}x{b}" for a, b in widths)
                + ".",
            ]
        lines += [""]
    if goals:
        lines[lines.index("## Results") + 2 : lines.index("## Results") + 2] = [
            "| model | size | compressed variant | goal: >= 2x INT8 alone (OpenVINO's latency), drop <= 1.5 |",
            "|---|---|---|---|",
            *goals,
            "",
        ]
    profiled = [r for r in rows if "wall_us" in r.get("profile", {})]  # older results lack the fastest-quarter figures
    if profiled:
        lines += [
            "## Where the time goes",
            "",
            "OpenVINO's per-node counters (`PERF_COUNT`) of each INT8 model, same threads as the table, in the bench "
            f"process after the timing rounds (so not the table's numbers): {profiled[0]['profile']['calls']} calls, "
            "averaged over the fastest quarter of them (a call that lost its core to another job is slow in every "
            "node; the fastest calls are the least disturbed picture). *Compute* is the convolution, "
            "fully-connected and fused-attention (`Subgraph i8`) nodes; *other nodes* are the element-wise "
            "chains, LayerNorm (MVN), transposes, pooling; *outside nodes* is the wall time of a call minus its "
            "nodes (the request's dispatch, input and output copies). The counters are approximate: timing each "
            "node adds its own cost, and for the BERT models their sum can exceed the wall time of the same calls "
            "(then *outside nodes* shows 0); read them as shares of a call.",
            "",
            "| model | variant | MACs | call us | compute us | other nodes us | outside nodes us "
            "| top node kinds (us) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in profiled:
            pr = r["profile"]
            top = ", ".join(f"{k} {v:.0f}" for k, v in list(pr["by_type_us"].items())[:4])
            lines.append(
                f"| {r['arch']} | {label(r)} | {r['macs']:,} | {pr['wall_us']:.0f} | "
                f"{pr['compute_us']:.0f} | {pr['nodes_us'] - pr['compute_us']:.0f} | "
                f"{max(pr['wall_us'] - pr['nodes_us'], 0):.0f} | {top} |"
            )
        lines += [""]
    lines += [
        "Per-round p50 latencies (ms), in the order measured:",
        "",
        "```",
        *(
            f"{r['arch']:>21} {r['variant']:>12} {name:>14}: "
            + " ".join(f"{x:.4f}" for x in v)
            + (
                "  (OpenVINO's own: " + " ".join(f"{x:.4f}" for x in r["ov_p50_ms"][name]) + ")"
                if name in r.get("ov_p50_ms", {})
                else ""
            )
            for r in rows
            for name, v in r["p50_ms"].items()
        ),
        "```",
        "",
        "## Reading the table",
        "",
        "- Only structured pruning makes the dense model smaller, so only it is faster on OpenVINO/ONNX Runtime;",
        "  distillation from the original checkpoint is there to win back accuracy the removed channels cost",
        "  (the stage-by-stage line shows whether it did on this run).",
        "- Halving the channels quarters a layer's MACs but only halves its element-wise work (activations,",
        "  requantization, LayerNorm, GELU, softmax over half the heads), and leaves the per-call and per-node",
        "  costs as they are; the speed-up therefore sits between 2x and 4x only where the MACs dominate, and",
        "  below 2x at the default sizes. `round_to: 8` keeps the pruned widths multiples of 8, which oneDNN's",
        "  INT8 kernels (AMX / VNNI) tile without remainders.",
        "- The default resnet8 (per-node counters): the pruned model's INT8 nodes take about half the INT8",
        "  model's for a quarter of the MACs, because the AMX convolution kernels work on 64 input channels",
        "  at a time and the pruned layers have 16-64 (the first convolution, one input channel at 32x32, halves",
        "  with its outputs, no more), and a call's ~10-30 us outside the nodes does not shrink. Removing one",
        "  whole block first (`prune-depth`) removes its layers' fixed costs too; with `per_mac` the stage",
        "  removes the full-resolution first block (the probe fine-tune's calibration loss: 0.206 for it, 0.183",
        "  for the second, 0.418 for the third; per MAC saved the first is cheapest): 2.36x on OpenVINO's own",
        "  latency for a 0.2-point drop. Without `per_mac` the stage removed the second block (2.00x through",
        "  Python in one timing run), with the one-shot `reconstruction` ranking the third (top-1 98.4%, 1.77x).",
        "- Python's share: `perf_counter` around `session.run` adds 25-35 us per call to OpenVINO's own latency",
        "  here, for every variant alike (the call, copying the input in and the logits out, the interpreter;",
        "  effdl already skips OpenVINO's Python-side data dispatcher and result dictionary). At the default",
        "  sizes that is a fifth of INT8 alone and a third of the pruned call, so the ratio an application",
        "  sees from Python is lower: 2.0x where OpenVINO runs the model 2.35x faster. From C++, or with",
        "  batching, the OpenVINO figure is what remains.",
        "- Symmetric activations (NNCF's `performance` preset, now the default for CNNs with `engine: nncf`)",
        "  made every INT8 ResNet faster than the asymmetric `mixed` preset the first tables used: OpenVINO's",
        "  INT8 convolutions compensate a u8 input's zero point, which costs most at the first convolution",
        "  (31 -> 19 us). The INT8-alone baseline got faster, so the channel-only ratio at the default size fell",
        "  from 1.77x to ~1.6x.",
        "- The BERT-style model gains less than the ResNet at the same channel ratio: its INT8 matrix products",
        "  are small (64 tokens x a few hundred features), so the AMX kernels are far from their peak and a",
        "  quarter of the MACs takes about half the time, not a quarter; attention over half the heads halves,",
        "  and the FP32 LayerNorm, GELU, residual adds and transposes only shrink with the width (see *Where the",
        "  time goes*). Pruning further (the `-p62` row: 62.5% of width, heads and FFN neurons, 15% of the MACs)",
        "  keeps the task's accuracy. On a machine this busy a ratio near 2x moves by 10-20% between timing runs",
        "  of the same packages (the earlier-run figures beside each goal line), more than the margin: the BERT",
        "  rows at dim 256 are 'about 2x' (the 50% and 62.5% rows even swap order between runs), not a margin.",
        "- `seq_majority` is an easy synthetic task: every BERT variant scores 100%, so its drop column cannot",
        "  tell the variants apart; the ResNet rows on digits can.",
        "- Unstructured and 2:4 sparsity keep every tensor's shape: same MACs, same latency on dense kernels.",
        "  Their gain here is size: zeros deflate, so the zipped FP32 (and INT8) files shrink. 2:4 pays off on",
        "  NVIDIA sparse tensor cores; `sparsity-24` lists the 2:4 layers in its stage details, and the torch",
        "  backend's `sparse_24` option (CUDA) or TensorRT's sparse-weights flag consume them.",
        "",
    ]
    return "\n".join(lines)


def _saved(work: Path) -> tuple[list[dict[str, Any]], float, dict[str, Any]]:
    """Every model measured so far (a model's rows and timings always come from one run), the total run
    time, and the timing settings (the same for every model, or the page says they differ)."""
    rows: list[dict[str, Any]] = []
    seconds = 0.0
    settings: list[dict[str, Any]] = []
    for arch in MODELS:
        path = work / f"results-{arch}.json"
        if path.exists():
            result = json.loads(path.read_text())
            rows += result["rows"]
            seconds += result["seconds"]
            settings.append(result.get("settings", {}))
    if any(s != settings[0] for s in settings):
        raise SystemExit(f"results in {work} were timed with different settings: {settings}; rerun them alike")
    return rows, seconds, settings[0] if settings else {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-pruning")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "pruning.md")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1, help="OpenVINO inference threads when timing (0: its default)")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch threads for training / fine-tuning")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument(
        "--static-shapes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="OpenVINO variants compiled for the exact input shapes (the backend's static_shapes option)",
    )
    ap.add_argument("--render", action="store_true", help="only rewrite --out from the saved results")
    ap.add_argument("--profile-saved", action="store_true", help="add the per-node profile to saved results")
    ap.add_argument(
        "--retime", action="store_true", help="time the saved packages again (same settings otherwise), then render"
    )
    args = ap.parse_args()
    if args.retime:
        for arch in args.models:
            path = args.work / f"results-{arch}.json"
            result = json.loads(path.read_text())
            rows = result["rows"]
            for row in rows:  # earlier timings of the same packages are kept: the page shows their spread
                row["earlier_p50_ms"] = [*row.get("earlier_p50_ms", []), row.pop("p50_ms")]
                row.pop("ov_p50_ms", None)
            result["settings"] = {**result["settings"], "rounds": args.rounds, "queries": args.queries}
            threads, static = result["settings"]["threads"], result["settings"].get("static_shapes", False)
            time_all(rows, args.work, args.rounds, args.queries, threads)
            for row in rows:
                row["profile"] = profile_int8(row, args.work, threads, static)
            path.write_text(json.dumps(result, indent=2) + "\n")
        rows, seconds, settings = _saved(args.work)
        args.out.write_text(render(rows, settings, seconds))
        return 0
    if args.profile_saved:
        for arch in args.models:
            path = args.work / f"results-{arch}.json"
            if path.exists():
                result = json.loads(path.read_text())
                for row in result["rows"]:
                    settings = result["settings"]
                    row["profile"] = profile_int8(
                        row, args.work, settings["threads"], settings.get("static_shapes", False)
                    )
                path.write_text(json.dumps(result, indent=2) + "\n")
        rows, seconds, settings = _saved(args.work)
        args.out.write_text(render(rows, settings, seconds))
        return 0
    if args.render:
        rows, seconds, settings = _saved(args.work)
        args.out.write_text(render(rows, settings, seconds))
        return 0
    import torch

    if args.torch_threads:
        # On a shared 2-core machine two torch threads wait on each other (a training step ran 30x slower).
        torch.set_num_threads(args.torch_threads)
    settings = {
        "rounds": args.rounds,
        "queries": args.queries,
        "threads": args.threads or None,
        "static_shapes": args.static_shapes,
    }
    for arch in args.models:  # one model at a time: its rows and timings always come from one run
        start = time.perf_counter()
        rows = []
        ckpt = checkpoint(arch, args.work)
        for variant in MODELS[arch]["variants"]:
            print(f"compress {arch} {variant} ...", flush=True)
            row = compress_variant(arch, variant, ckpt, args.work, args.static_shapes)
            print(f"  {row['int8_metric']:.2f} (drop {row['int8_drop']:+.2f}), {row['macs']:,} MACs", flush=True)
            rows.append(row)
        print("timing (each variant in its own process) ...", flush=True)
        time_all(rows, args.work, args.rounds, args.queries, args.threads or None)
        for row in rows:
            row["profile"] = profile_int8(row, args.work, args.threads or None, args.static_shapes)
        result = {"seconds": time.perf_counter() - start, "settings": settings, "rows": rows}
        (args.work / f"results-{arch}.json").write_text(json.dumps(result, indent=2) + "\n")
    rows, seconds, saved_settings = _saved(args.work)
    args.out.write_text(render(rows, saved_settings, seconds))
    print(f"wrote {args.out} ({seconds / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
