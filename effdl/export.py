"""torch -> ONNX export with a dynamic batch, checked numerically against torch (as Optimum does)."""

from __future__ import annotations

import io
import json
import logging
import time
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np

from effdl.errors import EffdlError, VerificationError
from effdl.recipe import ExportConfig
from effdl.tasks import Task


def _as_list(y: Any) -> list[Any]:
    return list(y) if isinstance(y, tuple | list) else [y]


def export_onnx(
    module: Any,
    task: Task,
    path: Path,
    config: ExportConfig | None = None,
    *,
    exported_program: Any = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Export ``module`` (or a ``torch.export`` program) to ``path`` with the task's input/output names."""
    import onnx
    import torch

    cfg = config or ExportConfig()
    example = task.example_inputs(2)
    args = tuple(torch.from_numpy(example[n]) for n in task.input_names)
    in_names, out_names = list(task.input_names), list(task.output_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # e.g. "torchvision is not installed. Skipping torchvision::nms"
    try:
        with redirect_stdout(buf), warnings.catch_warnings():  # the dynamo exporter prints progress lines
            warnings.simplefilter("ignore", FutureWarning)
            if cfg.exporter == "dynamo" or exported_program is not None:
                target = exported_program if exported_program is not None else module
                dyn = None
                if cfg.dynamic_batch and exported_program is None:
                    batch = torch.export.Dim("batch", min=1, max=4096)
                    dyn = tuple({0: batch} for _ in args)
                torch.onnx.export(
                    target,
                    args,
                    str(path),
                    input_names=in_names,
                    output_names=out_names,
                    opset_version=cfg.opset,
                    dynamic_shapes=dyn,
                    dynamo=True,
                    external_data=False,
                )
            else:
                axes = {n: {0: "batch"} for n in [*in_names, *out_names]} if cfg.dynamic_batch else None
                torch.onnx.export(
                    module,
                    args,
                    str(path),
                    input_names=in_names,
                    output_names=out_names,
                    opset_version=cfg.opset,
                    dynamic_axes=axes,
                    dynamo=False,
                )
    except Exception as e:
        raise EffdlError(
            f"ONNX export ({cfg.exporter}) failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:300]}",
            "try `export: {exporter: torchscript}` in the recipe, or another opset",
        ) from e
    finally:
        onnx_log.setLevel(level)
    proto = onnx.load(str(path))
    if metadata:
        for k, v in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v if isinstance(v, str) else json.dumps(v)
        onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))
    return path


def torch_outputs(module: Any, task: Task, inputs: dict[str, np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
    """Run a torch module over ``inputs`` in batches; outputs as float32/int numpy arrays."""
    import torch

    chunks: list[list[np.ndarray]] = []
    n = len(next(iter(inputs.values())))
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            args = [torch.from_numpy(inputs[k][i : i + batch_size]) for k in task.input_names]
            chunks.append(
                [t.detach().float().numpy() if t.is_floating_point() else t.numpy() for t in _as_list(module(*args))]
            )
    return [np.concatenate([c[j] for c in chunks]) for j in range(len(chunks[0]))]


def compare_outputs(reference: list[np.ndarray], outputs: list[np.ndarray]) -> dict[str, float]:
    """Max and mean absolute error, and max error relative to max |reference|, over all outputs."""
    max_abs = mean_abs = rel = 0.0
    for r, o in zip(reference, outputs, strict=True):
        if r.shape != o.shape:
            raise VerificationError(f"output shape {o.shape} differs from the reference's {r.shape}")
        d = np.abs(r.astype(np.float64) - o.astype(np.float64))
        max_abs = max(max_abs, float(d.max(initial=0.0)))
        mean_abs = max(mean_abs, float(d.mean()) if d.size else 0.0)
        scale = float(np.abs(r).max(initial=0.0))
        rel = max(rel, float(d.max(initial=0.0)) / scale if scale > 0 else 0.0)
    return {"max_abs_error": max_abs, "mean_abs_error": mean_abs, "max_rel_error": rel}


def check_export(module: Any, task: Task, path: Path, config: ExportConfig | None = None) -> dict[str, Any]:
    """Run the ONNX file on ONNX Runtime and torch on held-out samples; raise if they disagree."""

    cfg = config or ExportConfig()
    held = task.split("heldout").take(cfg.check_samples)
    ref = torch_outputs(module, task, held.inputs)
    from effdl.backends.onnxruntime import cpu_session

    sess = cpu_session(path)
    start = time.perf_counter()
    batch = 64 if cfg.dynamic_batch else 1
    outs: list[list[np.ndarray]] = []
    for feeds, _ in held.batches(batch):
        outs.append(sess.run(None, {k: feeds[k] for k in task.input_names}))
    got = [np.concatenate([o[j] for o in outs]) for j in range(len(outs[0]))]
    errs = compare_outputs(ref, got)
    bound = cfg.atol + cfg.rtol * max(float(np.abs(r).max(initial=0.0)) for r in ref)
    details = {
        **errs,
        "samples": len(held),
        "tolerance": bound,
        "opset": cfg.opset,
        "exporter": cfg.exporter,
        "dynamic_batch": cfg.dynamic_batch,
        "check_seconds": round(time.perf_counter() - start, 3),
    }
    if errs["max_abs_error"] > bound:
        raise VerificationError(
            f"the ONNX export disagrees with torch: max abs error {errs['max_abs_error']:.3g} > "
            f"tolerance {bound:.3g} (atol {cfg.atol} + rtol {cfg.rtol} x max|output|)",
            "try the other exporter (`export: {exporter: torchscript}`) or report the model",
        )
    return details
