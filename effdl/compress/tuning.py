"""Accuracy-aware quantization (``quantize-auto``): the fastest configuration within an accuracy budget.

The search, every step recorded in the stage's details (the report's stages table):

1. Score the FP32 model on a tuning split (the task's ``train`` split by default, never the held-out
   split that verification uses) and time it on the target backend in a fresh process.
2. Try each candidate configuration in turn (static INT8 with min-max, MSE and percentile calibration,
   dynamic INT8, weight-only INT8; for a graph with attention ONNX Runtime static on MatMul/Gemm only,
   NNCF's Transformer placement and SmoothQuant instead of the all-op static ones; or the recipe's own
   list), reusing the registered stages. Each is
   scored (task metric drop and agreement with the FP32 outputs) and, if within the limits, timed.
3. If no static candidate meets the limits, run a per-layer sensitivity analysis on the best static one:
   ONNX Runtime's QDQ debugger (``qdq_loss_debug``) gives each quantized activation's signal-to-
   quantization-noise ratio; the nodes reading the noisiest tensors are kept in FP32, 1, 2, 4, ... at a
   time (mixed precision), until the limits hold or ``max_fp32_nodes`` is reached.
4. The winner is the fastest configuration that meets the limits (FP32 itself if none does, or if
   none is faster than FP32), and the trace says why it won.

Latency: each configuration is timed alone in a fresh Python process (``python -m effdl.compress.tuning``)
so the compress process's thread pools do not interfere; ``backend`` picks ONNX Runtime or OpenVINO
(FP32 inference precision pinned).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from effdl.compress import STAGES, register_stage
from effdl.compress.base import ModelArtifact, Stage, StageConfig, StageContext
from effdl.errors import InputError

DEFAULT_CANDIDATES: list[dict[str, Any]] = [
    {"stage": "quantize", "config": {"calibration": "minmax"}},
    {"stage": "quantize", "config": {"calibration": "mse"}},
    {"stage": "quantize", "config": {"calibration": "percentile", "percentile": 99.99}},
    {"stage": "quantize-dynamic", "config": {"per_channel": True}},
    {"stage": "quantize-weights", "config": {"engine": "nncf", "bits": 8}},
]
# Transformers: ONNX Runtime's static quantizer, given every op, also quantizes the additive attention mask
# (values near -3.4e38), Softmax and LayerNorm, and the outputs collapse (all-MiniLM-L6-v2: cosine < 0.4 with
# min-max, MSE or percentile). So for a graph with attention the search tries ORT restricted to the linear
# layers' MatMul/Gemm, and NNCF's Transformer placement (with and without SmoothQuant), instead.
TRANSFORMER_CANDIDATES: list[dict[str, Any]] = [
    {"stage": "quantize", "config": {"calibration": "minmax", "op_types": ["MatMul", "Gemm"]}},
    {"stage": "quantize", "config": {"calibration": "percentile", "percentile": 99.99, "op_types": ["MatMul", "Gemm"]}},
    {"stage": "quantize", "config": {"engine": "nncf", "model_type": "transformer"}},
    {"stage": "quantize-smoothquant", "config": {}},
    {"stage": "quantize-dynamic", "config": {"per_channel": True}},
    {"stage": "quantize-weights", "config": {"engine": "nncf", "bits": 8}},
]
SEARCHABLE = ("quantize", "quantize-dynamic", "quantize-weights", "quantize-smoothquant")


def is_transformer(path: Path) -> bool:
    """Whether an ONNX graph has attention: a fused Attention op, or a Softmax and a MatMul of two activations
    (Q times K-transposed; a linear layer's MatMul has a weight initializer, possibly behind a Transpose)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    ops = {n.op_type for n in graph.node}
    if ops & {"Attention", "MultiHeadAttention"}:
        return True
    consts = {i.name for i in graph.initializer}
    for n in graph.node:  # constants and what is computed from constants alone (Transpose of a weight, ...)
        if n.op_type == "Constant" or (n.input and all(t in consts for t in n.input if t)):
            consts.update(n.output)
    act_matmul = any(n.op_type == "MatMul" and not any(t in consts for t in n.input) for n in graph.node)
    return act_matmul and "Softmax" in ops


def default_candidates(path: Path) -> list[dict[str, Any]]:
    """The configurations ``quantize-auto`` tries when the recipe lists none, chosen by the graph's family."""
    return TRANSFORMER_CANDIDATES if is_transformer(path) else DEFAULT_CANDIDATES


class Candidate(BaseModel):
    """One configuration to try: a registered quantization stage and its config."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["quantize", "quantize-dynamic", "quantize-weights", "quantize-smoothquant"]
    config: dict[str, Any] = Field(default_factory=dict)


class AutoQuantConfig(StageConfig):
    """Options of ``quantize-auto``."""

    max_accuracy_drop: float = Field(1.0, ge=0, description="Largest allowed task-metric drop vs FP32.")
    min_agreement: dict[str, float] = Field(
        default_factory=dict, description="Minimum agreement with FP32 outputs, e.g. {cosine: 0.99}."
    )
    candidates: list[Candidate] | None = Field(None, description="Configurations to try (default: a built-in list).")
    backend: Literal["onnxruntime", "openvino"] = Field("onnxruntime", description="Where latency is measured.")
    tune_split: Literal["train", "calibration"] = Field("train", description="Split the search scores on.")
    tune_samples: int = Field(256, ge=8, description="Samples of the tuning split scored per configuration.")
    mixed_precision: bool = Field(True, description="Keep the most sensitive nodes in FP32 when needed.")
    max_fp32_nodes: int = Field(16, ge=1, description="Most nodes kept in FP32 by the sensitivity search.")
    sensitivity_samples: int = Field(16, ge=1, description="Samples for the per-layer sensitivity analysis.")
    warmup: int = Field(10, ge=0, description="Untimed calls before timing a configuration.")
    queries: int = Field(50, ge=5, description="Timed calls per configuration.")
    threads: int | None = Field(None, ge=1, description="Intra-op threads when timing.")


def _run_batches(sess: Any, inputs: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    shape0 = sess.get_inputs()[0].shape[0]
    batch = 64 if not isinstance(shape0, int) else 1
    n = len(inputs[names[0]])
    chunks = [sess.run(None, {k: inputs[k][i : i + batch] for k in names}) for i in range(0, n, batch)]
    return [np.concatenate([c[j] for c in chunks]) for j in range(len(chunks[0]))]


def _ort_outputs(path: Path, inputs: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    from effdl.backends.onnxruntime import cpu_session

    return _run_batches(cpu_session(path), inputs, names)


def _ov_outputs(path: Path, inputs: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()
    n = len(inputs[names[0]])
    rows = []
    for i in range(n):  # one at a time: shapes stay those the model was exported with
        res = req.infer({k: inputs[k][i : i + 1] for k in names})
        rows.append([np.asarray(res[o]) for o in compiled.outputs])
    return [np.concatenate([r[j] for r in rows]) for j in range(len(rows[0]))]


def time_model(path: Path, backend: str, inputs_npz: Path, workdir: Path, cfg: AutoQuantConfig) -> float:
    """p50 latency (ms) of one model, measured in a fresh Python process."""
    spec = {
        "path": str(path),
        "backend": backend,
        "inputs_npz": str(inputs_npz),
        "warmup": cfg.warmup,
        "queries": cfg.queries,
        "threads": cfg.threads,
    }
    spec_path = workdir / f"time-{path.stem}.json"
    out_path = workdir / f"time-{path.stem}.out.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-m", "effdl.compress.tuning", str(spec_path), str(out_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    if proc.returncode != 0 or not out_path.exists():
        tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"timing {path.name} on {backend} failed: {tail}")
    return float(json.loads(out_path.read_text())["p50_ms"])


def _time_here(spec: dict[str, Any]) -> dict[str, Any]:
    from effdl.benchmark.worker import time_queries

    data = np.load(spec["inputs_npz"])
    feeds = {k: data[k] for k in data.files}
    threads = spec.get("threads")
    if spec["backend"] == "openvino":
        import openvino as ov

        props: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            props["INFERENCE_NUM_THREADS"] = int(threads)
        req = ov.Core().compile_model(spec["path"], "CPU", props).create_infer_request()

        def fn() -> Any:
            return req.infer(feeds)
    else:
        from effdl.backends.onnxruntime import cpu_session

        sess = cpu_session(spec["path"], threads)

        def fn() -> Any:
            return sess.run(None, feeds)

    lat = time_queries(fn, spec["warmup"], spec["queries"])
    return {"p50_ms": float(np.median(lat) * 1e3), "queries": len(lat)}


class _Search:
    """State of one search: data, reference outputs, limits and the trace."""

    def __init__(self, cfg: AutoQuantConfig, ctx: StageContext, src: Path, work: Path) -> None:
        self.cfg, self.ctx, self.src, self.work = cfg, ctx, src, work
        import onnx

        proto = onnx.load(str(src), load_external_data=False)
        inits = {i.name for i in proto.graph.initializer}
        self.names = [i.name for i in proto.graph.input if i.name not in inits]
        split = ctx.task.split(cfg.tune_split).take(cfg.tune_samples)
        missing = [n for n in self.names if n not in split.inputs]
        if missing:
            raise InputError(f"quantize-auto: the model needs inputs {missing} that task {ctx.task.name!r} lacks")
        self.inputs = {n: split.inputs[n] for n in self.names}
        self.targets = split.targets
        self.npz = work / "one-sample.npz"
        np.savez(self.npz, **{n: v[:1] for n, v in self.inputs.items()})
        self.ref = self.outputs(src)
        self.ref_metric = ctx.task.score(self.ref, self.targets)
        self.trace: list[dict[str, Any]] = []

    def outputs(self, path: Path) -> list[np.ndarray]:
        run = _ov_outputs if self.cfg.backend == "openvino" else _ort_outputs
        return run(path, self.inputs, self.names)

    def drop(self, metric: float) -> float:
        return self.ref_metric - metric if self.ctx.task.metric.higher_is_better else metric - self.ref_metric

    def evaluate(
        self, label: str, stage: str, config: dict[str, Any], path: Path | None, **extra: Any
    ) -> dict[str, Any]:
        """Score (and, if within limits, time) one configuration; append it to the trace."""
        rec: dict[str, Any] = {"config": label, "stage": stage, "settings": config, **extra}
        try:
            if path is None:
                path = self.quantize(label, stage, config)
            outs = self.outputs(path)
            metric = self.ctx.task.score(outs, self.targets)
            agreement = self.ctx.task.agreement(self.ref, outs)
            failures = []
            drop = self.drop(metric)
            if drop > self.cfg.max_accuracy_drop:
                failures.append(f"{self.ctx.task.metric.name} drop {drop:.3f} > {self.cfg.max_accuracy_drop}")
            for k, minimum in self.cfg.min_agreement.items():
                if k not in agreement:
                    failures.append(f"task gives no {k!r} agreement (it gives {sorted(agreement)})")
                elif agreement[k] < minimum:
                    failures.append(f"{k} {agreement[k]:.4f} < {minimum}")
            rec.update({"metric": metric, "metric_drop": drop, **agreement, "meets_limits": not failures})
            rec["failures"] = failures
            rec["size_bytes"] = path.stat().st_size
            rec["p50_ms"] = time_model(path, self.cfg.backend, self.npz, self.work, self.cfg) if not failures else None
            rec["path"] = str(path)
        except Exception as e:  # a configuration that cannot be built or run (ORT's Fail is no RuntimeError)
            rec.update({"meets_limits": False, "error": f"{type(e).__name__}: {str(e)[:300]}", "p50_ms": None})
        self.trace.append(rec)
        shown = f"{rec.get('metric_drop', float('nan')):.3f} drop" if "metric_drop" in rec else rec.get("error")
        self.ctx.say(f"quantize-auto: {label}: {shown}, p50 {rec.get('p50_ms')}")
        return rec

    def quantize(self, label: str, stage: str, config: dict[str, Any]) -> Path:
        cls = STAGES.get(stage)
        stage_cfg = cls.Config(**config)
        sub = StageContext(self.ctx.task, self.work, seed=self.ctx.seed, progress=None, teacher=self.ctx.teacher)
        art, _ = cls(stage_cfg).apply(ModelArtifact("fp32", "onnx", "fp32", path=self.src), sub, label)
        assert art.path is not None
        return art.path

    def sensitivity(self, qdq_path: Path) -> list[tuple[str, float]]:
        """Nodes that read quantized activations, most sensitive first (lowest SQNR of their input)."""
        import onnx
        from onnxruntime.quantization.qdq_loss_debug import (
            collect_activations,
            compute_activation_error,
            create_activation_matching,
            modify_model_output_intermediate_tensors,
        )

        from effdl.compress.quantize import _Reader

        n = min(self.cfg.sensitivity_samples, len(self.inputs[self.names[0]]))
        sample = {k: v[:n] for k, v in self.inputs.items()}
        aug_f, aug_q = self.work / "sens-float.onnx", self.work / "sens-qdq.onnx"
        modify_model_output_intermediate_tensors(str(self.src), str(aug_f))
        modify_model_output_intermediate_tensors(str(qdq_path), str(aug_q))
        fl = collect_activations(str(aug_f), _Reader(sample, self.names))
        qd = collect_activations(str(aug_q), _Reader(sample, self.names))
        errors = compute_activation_error(create_activation_matching(qd, fl))
        aug_f.unlink(missing_ok=True)
        aug_q.unlink(missing_ok=True)
        graph = onnx.load(str(self.src), load_external_data=False).graph
        consumers: dict[str, list[str]] = {}
        for node in graph.node:
            for t in node.input:
                consumers.setdefault(t, []).append(node.name)
        ranked: list[tuple[str, float]] = []
        seen: set[str] = set()
        for tensor, err in sorted(errors.items(), key=lambda kv: float(kv[1]["qdq_err"])):
            for name in consumers.get(tensor, []):
                if name and name not in seen:
                    seen.add(name)
                    ranked.append((name, float(err["qdq_err"])))
        return ranked


def _label(stage: str, config: dict[str, Any]) -> str:
    short = {"quantize": "static", "quantize-dynamic": "dynamic", "quantize-weights": "weights"}.get(stage, stage)
    parts = [f"{k}={v}" for k, v in sorted(config.items()) if k not in ("exclude", "preprocess")]
    return f"{short}({', '.join(parts)})"


@register_stage
class AutoQuantize(Stage):
    """Accuracy-aware search over quantization configurations and per-layer FP32 fallbacks."""

    name: ClassVar[str] = "quantize-auto"
    kind: ClassVar[Literal["torch", "onnx"]] = "onnx"
    Config: ClassVar[type[StageConfig]] = AutoQuantConfig
    default_output: ClassVar[str] = "auto"
    summary: ClassVar[str] = "accuracy-aware quantization: fastest config within max_accuracy_drop"

    def apply(self, model: ModelArtifact, ctx: StageContext, output: str) -> tuple[ModelArtifact, dict[str, Any]]:
        from effdl.compress.quantize import preprocess_for_quantization

        cfg: AutoQuantConfig = self.config  # type: ignore[assignment]
        self.onnx_input(model)
        start = time.perf_counter()
        work = ctx.workdir / f".{output}-search"
        work.mkdir(parents=True, exist_ok=True)
        try:
            pre = work / "pre.onnx"
            # Preprocess once, so every candidate (and the sensitivity analysis) sees the same node names.
            preprocess_for_quantization(model.path, pre)
            search = _Search(cfg, ctx, pre, work)
            fp32 = search.evaluate("fp32", "none", {}, pre)
            candidates = cfg.candidates or [Candidate(**c) for c in default_candidates(pre)]
            for c in candidates:
                conf = dict(c.config)
                if c.stage in ("quantize", "quantize-smoothquant", "quantize-dynamic"):
                    conf.setdefault("preprocess", False)
                search.evaluate(_label(c.stage, conf), c.stage, conf, None)
            static_ok = [r for r in search.trace if r["stage"] in ("quantize", "quantize-smoothquant")]
            if cfg.mixed_precision and static_ok and not any(r["meets_limits"] for r in static_ok):
                self._mixed(search, [r for r in static_ok if "metric" in r])
            winner, why = self._choose(search.trace, fp32)
            dst = ctx.workdir / f"{output}.onnx"
            shutil.copyfile(winner["path"], dst)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for r in search.trace:
            r.pop("path", None)
        precision = "fp32" if winner["stage"] == "none" else _precision(winner)
        details = {
            "engine": "effdl quantize-auto",
            "method": "accuracy-aware search",
            "backend_timed": cfg.backend,
            "tune_split": cfg.tune_split,
            "tune_samples": len(search.inputs[search.names[0]]),
            "reference_metric": search.ref_metric,
            "max_accuracy_drop": cfg.max_accuracy_drop,
            "min_agreement": cfg.min_agreement,
            "winner": winner["config"],
            "why": why,
            "trace": search.trace,
            "seconds": round(time.perf_counter() - start, 3),
            "size_bytes": dst.stat().st_size,
        }
        art = ModelArtifact(output, "onnx", precision, path=dst, lineage=[*model.lineage, f"quantize-auto:{output}"])
        return art, details

    def _mixed(self, search: _Search, static: list[dict[str, Any]]) -> None:
        cfg = search.cfg
        base = max(static, key=lambda r: (-r["metric_drop"], r.get("cosine", 0.0)))
        qdq = search.quantize("sens-base", base["stage"], base["settings"])
        try:
            ranked = search.sensitivity(qdq)
        except Exception as e:  # the debugger cannot augment every graph; record it and stop searching
            search.trace.append({"config": "sensitivity analysis", "stage": "none", "error": str(e)[:300]})
            return
        search.trace.append(
            {
                "config": "sensitivity analysis",
                "stage": "none",
                "base": base["config"],
                "method": "onnxruntime qdq_loss_debug: SQNR (dB) of each quantized activation vs its FP32 value",
                "most_sensitive": [{"node": n, "sqnr_db": round(s, 2)} for n, s in ranked[:10]],
                "meets_limits": False,
                "p50_ms": None,
            }
        )
        k = 1
        while k <= min(cfg.max_fp32_nodes, len(ranked)):
            keep = [n for n, _ in ranked[:k]]
            conf = {**base["settings"], "exclude": [*base["settings"].get("exclude", []), *keep]}
            rec = search.evaluate(f"{base['config']} + {k} node(s) FP32", base["stage"], conf, None, fp32_nodes=keep)
            if rec.get("meets_limits"):
                break
            k *= 2

    @staticmethod
    def _choose(trace: list[dict[str, Any]], fp32: dict[str, Any]) -> tuple[dict[str, Any], str]:
        ok = [r for r in trace if r.get("meets_limits") and r.get("p50_ms") is not None and r["stage"] != "none"]
        if not ok:
            return fp32, "no quantized configuration met the accuracy limits: FP32 kept"
        best = min(ok, key=lambda r: r["p50_ms"])
        if fp32.get("p50_ms") is not None and best["p50_ms"] >= fp32["p50_ms"]:
            return fp32, (
                f"the fastest configuration within the limits ({best['config']}, {best['p50_ms']:.3f} ms) "
                f"is not faster than FP32 ({fp32['p50_ms']:.3f} ms): FP32 kept"
            )
        others = sorted(ok, key=lambda r: r["p50_ms"])[1:3]
        runner_up = "; ".join(f"{r['config']} {r['p50_ms']:.3f} ms" for r in others) or "none"
        return best, (
            f"fastest of {len(ok)} configurations within the limits: {best['p50_ms']:.3f} ms p50 vs FP32 "
            f"{fp32['p50_ms']:.3f} ms, drop {best['metric_drop']:.3f} (next: {runner_up})"
        )


def _precision(rec: dict[str, Any]) -> str:
    if rec["stage"] == "quantize-weights":
        return f"w{rec['settings'].get('bits', 4)}a32"
    return "int8" if not rec.get("fp32_nodes") else "int8-mixed"


def main(argv: list[str] | None = None) -> int:
    """Time one model (``python -m effdl.compress.tuning SPEC.json OUT.json``)."""
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    Path(args[1]).write_text(json.dumps(_time_here(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
