"""Static post-training INT8 quantization of an ONNX model into QDQ form.

QDQ (QuantizeLinear/DequantizeLinear pairs around each quantized op) is the one INT8 format that
ONNX Runtime, OpenVINO and TensorRT all consume. Two engines produce it:

- ``onnxruntime``: ``onnxruntime.quantization.quantize_static`` (calibration methods minmax,
  entropy, percentile, distribution), after ORT's recommended ``quant_pre_process``.
- ``nncf``: ``nncf.quantize`` on the ONNX model (min-max with NNCF's range estimators and its
  hardware-aware placement tuned for OpenVINO's CPU plugin).

Calibration samples come from the task's calibration split, never from the held-out split.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from effdl.compress import register_stage
from effdl.compress.base import ModelArtifact, Stage, StageConfig, StageContext
from effdl.errors import InputError


class StaticQuantConfig(StageConfig):
    """Options of the ``quantize`` stage (static INT8 PTQ)."""

    engine: Literal["onnxruntime", "nncf"] = Field("onnxruntime", description="Which library quantizes.")
    calibration: Literal["minmax", "entropy", "percentile", "distribution"] = Field(
        "minmax", description="Calibration method (nncf supports minmax only)."
    )
    samples: int = Field(100, ge=1, description="Calibration samples from the task's calibration split.")
    per_channel: bool = Field(True, description="Per-output-channel weight scales.")
    activation_type: Literal["uint8", "int8"] = Field("uint8", description="Activation integer type.")
    weight_type: Literal["int8", "uint8"] = Field("int8", description="Weight integer type.")
    symmetric_activations: bool = Field(False, description="Symmetric activation ranges (zero point 0).")
    percentile: float = Field(99.999, gt=90, le=100, description="Percentile for calibration=percentile.")
    preprocess: bool = Field(True, description="Run ORT's quant_pre_process (shape inference, fusions) first.")
    exclude: list[str] = Field(default_factory=list, description="ONNX node names to keep in FP32.")
    op_types: list[str] | None = Field(None, description="Only quantize these op types (default: all supported).")


class _Reader:
    """ORT CalibrationDataReader over the task's calibration split, one sample at a time."""

    def __init__(self, inputs: dict[str, np.ndarray], names: list[str]) -> None:
        self.inputs, self.names = inputs, names
        self.n = len(next(iter(inputs.values())))
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= self.n:
            return None
        feed = {n: self.inputs[n][self.i : self.i + 1] for n in self.names}
        self.i += 1
        return feed

    def rewind(self) -> None:
        self.i = 0


def _calibration_inputs(ctx: StageContext, samples: int, path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    init = {i.name for i in proto.graph.initializer}
    names = [i.name for i in proto.graph.input if i.name not in init]
    calib = ctx.task.split("calibration").take(samples)
    missing = [n for n in names if n not in calib.inputs]
    if missing:
        raise InputError(f"the ONNX model needs inputs {missing} that task {ctx.task.name!r} does not provide")
    if len(calib) < samples:
        ctx.say(f"calibration split has only {len(calib)} samples (asked {samples})")
    return {n: calib.inputs[n] for n in names}, names


def _ort_quantize(src: Path, dst: Path, cfg: StaticQuantConfig, ctx: StageContext) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    inputs, names = _calibration_inputs(ctx, cfg.samples, src)
    model_in = src
    if cfg.preprocess:
        pre = dst.with_name(dst.stem + ".pre.onnx")
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        model_in = pre
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
        "distribution": CalibrationMethod.Distribution,
    }[cfg.calibration]
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    extra: dict[str, Any] = {"ActivationSymmetric": cfg.symmetric_activations}
    if cfg.calibration == "percentile":
        extra["CalibPercentile"] = cfg.percentile
    quantize_static(
        str(model_in),
        str(dst),
        _Reader(inputs, names),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=cfg.op_types,
        per_channel=cfg.per_channel,
        activation_type=qtype[cfg.activation_type],
        weight_type=qtype[cfg.weight_type],
        nodes_to_exclude=cfg.exclude,
        calibrate_method=method,
        extra_options=extra,
    )
    if model_in != src:
        Path(model_in).unlink(missing_ok=True)
    return {"engine": "onnxruntime.quantization.quantize_static", "samples": len(next(iter(inputs.values())))}


def _nncf_quantize(src: Path, dst: Path, cfg: StaticQuantConfig, ctx: StageContext) -> dict[str, Any]:
    import nncf
    import onnx

    if cfg.calibration != "minmax":
        raise InputError(f"quantize: engine 'nncf' supports calibration 'minmax' only, not {cfg.calibration!r}")
    inputs, names = _calibration_inputs(ctx, cfg.samples, src)
    n = len(next(iter(inputs.values())))
    dataset = nncf.Dataset(range(n), lambda i: {k: inputs[k][i : i + 1] for k in names})
    model = onnx.load(str(src))
    ignored = nncf.IgnoredScope(names=cfg.exclude) if cfg.exclude else None
    preset = nncf.QuantizationPreset.PERFORMANCE if cfg.symmetric_activations else nncf.QuantizationPreset.MIXED
    kwargs: dict[str, Any] = {"subset_size": n, "preset": preset}
    if ignored is not None:
        kwargs["ignored_scope"] = ignored
    qmodel = nncf.quantize(model, dataset, **kwargs)
    onnx.save(qmodel, str(dst))
    return {"engine": f"nncf.quantize (nncf {nncf.__version__})", "samples": n, "preset": preset.value}


@register_stage
class StaticQuantize(Stage):
    """Static post-training INT8 quantization (QDQ) calibrated on the task's calibration split."""

    name: ClassVar[str] = "quantize"
    kind: ClassVar[Literal["torch", "onnx"]] = "onnx"
    Config: ClassVar[type[StageConfig]] = StaticQuantConfig
    default_output: ClassVar[str] = "int8"
    summary: ClassVar[str] = "static post-training INT8 (QDQ), onnxruntime or nncf engine"

    def apply(self, model: ModelArtifact, ctx: StageContext, output: str) -> tuple[ModelArtifact, dict[str, Any]]:
        cfg: StaticQuantConfig = self.config  # type: ignore[assignment]
        if model.kind != "onnx" or model.path is None:
            raise InputError("quantize works on an ONNX model; it must come after export")
        dst = ctx.workdir / f"{output}.onnx"
        start = time.perf_counter()
        ctx.say(f"quantize: {cfg.engine}, {cfg.calibration} calibration on {cfg.samples} samples")
        run = _ort_quantize if cfg.engine == "onnxruntime" else _nncf_quantize
        details = run(model.path, dst, cfg, ctx)
        details.update(
            {
                "method": "static",
                "format": "QDQ",
                "calibration": cfg.calibration,
                "per_channel": cfg.per_channel,
                "activation_type": cfg.activation_type,
                "weight_type": cfg.weight_type,
                "symmetric_activations": cfg.symmetric_activations,
                "excluded_nodes": cfg.exclude,
                "seconds": round(time.perf_counter() - start, 3),
                "size_bytes": dst.stat().st_size,
            }
        )
        return (
            ModelArtifact(output, "onnx", "int8", path=dst, lineage=[*model.lineage, f"quantize:{cfg.engine}"]),
            details,
        )
