"""Static post-training INT8 quantization of an ONNX model into QDQ form.

QDQ (QuantizeLinear/DequantizeLinear pairs around each quantized op) is the one INT8 format that
ONNX Runtime, OpenVINO and TensorRT all consume. Two engines produce it:

- ``onnxruntime``: ``onnxruntime.quantization.quantize_static`` (calibration methods minmax,
  entropy, percentile, distribution), after ORT's recommended ``quant_pre_process``.
- ``nncf``: ``nncf.quantize`` on the ONNX model (min-max with NNCF's range estimators and its
  hardware-aware placement tuned for OpenVINO's CPU plugin), optionally with SmoothQuant
  (``smooth_quant``, for Transformers: ``model_type: transformer``).

Calibration ``mse`` (onnxruntime engine) picks each activation's clipping range to minimise the
expected quantization error over its calibration histogram (see :func:`mse_range`). Per-layer
``overrides`` (exact ONNX node name or ``re:`` regex) keep a layer in FP32 or change its weight
granularity (:mod:`effdl.compress.overrides`).

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
from effdl.compress.overrides import LayerOverride, resolve_overrides
from effdl.errors import InputError


class StaticQuantConfig(StageConfig):
    """Options of the ``quantize`` stage (static INT8 PTQ)."""

    engine: Literal["onnxruntime", "nncf"] = Field("onnxruntime", description="Which library quantizes.")
    calibration: Literal["minmax", "entropy", "percentile", "distribution", "mse"] = Field(
        "minmax", description="Calibration method (nncf supports minmax only)."
    )
    samples: int = Field(100, ge=1, description="Calibration samples from the task's calibration split.")
    per_channel: bool = Field(True, description="Per-output-channel weight scales.")
    activation_type: Literal["uint8", "int8"] = Field("uint8", description="Activation integer type.")
    weight_type: Literal["int8", "uint8"] = Field("int8", description="Weight integer type.")
    symmetric_activations: bool | None = Field(
        None,
        description="Symmetric activation ranges (zero point 0). Default: the engine's own, asymmetric for "
        "onnxruntime; for nncf its presets: symmetric ('performance') unless model_type is 'transformer' ('mixed').",
    )
    symmetric_weights: bool = Field(True, description="Symmetric weight ranges (onnxruntime engine).")
    percentile: float = Field(99.999, gt=90, le=100, description="Percentile for calibration=percentile.")
    preprocess: bool = Field(True, description="Run ORT's quant_pre_process (shape inference, fusions) first.")
    exclude: list[str] = Field(default_factory=list, description="ONNX node names to keep in FP32.")
    op_types: list[str] | None = Field(None, description="Only quantize these op types (default: all supported).")
    overrides: list[LayerOverride] = Field(
        default_factory=list, description="Per-layer overrides by exact ONNX node name or 're:' regex."
    )
    model_type: Literal["transformer"] | None = Field(
        None, description="nncf: 'transformer' keeps LayerNorm/Softmax/residual adds in FP32 as OpenVINO expects."
    )
    smooth_quant: bool = Field(False, description="nncf: SmoothQuant (migrate activation outliers into weights).")
    smooth_quant_alpha: float = Field(0.95, ge=0, le=1, description="SmoothQuant migration strength for MatMul.")


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

    def __iter__(self) -> _Reader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        feed = self.get_next()
        if feed is None:
            raise StopIteration
        return feed


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


def mse_range(
    hist: np.ndarray, edges: np.ndarray, symmetric: bool, levels: int = 256, grid: int = 48
) -> tuple[float, float]:
    """The clipping range ``[rmin, rmax]`` that minimises the expected squared quantization error of a
    value distribution given as a histogram (``levels`` integer levels, uniform rounding noise inside the
    range, clipping error outside it).

    ONNX Runtime's calibrators offer min-max, entropy, percentile and distribution but no MSE search,
    and NNCF's range estimators none either, so this small grid search is written here.
    """
    centers = (edges[:-1] + edges[1:]) / 2.0
    p = hist.astype(np.float64)
    p /= max(p.sum(), 1.0)
    nz = p > 0
    centers, p = centers[nz], p[nz]
    lo, hi = float(min(centers.min(), 0.0)), float(max(centers.max(), 0.0))
    if hi - lo <= 0:
        return lo, hi
    fracs = np.linspace(1.0 / grid, 1.0, grid)

    def err(a: float, b: float) -> float:
        step = (b - a) / (levels - 1)
        inside = (centers >= a) & (centers <= b)
        clip = np.where(centers < a, a - centers, np.where(centers > b, centers - b, 0.0))
        return float(np.sum(p * np.where(inside, step * step / 12.0, clip * clip)))

    if symmetric:
        amax = max(-lo, hi)
        best = min(fracs, key=lambda f: err(-f * amax, f * amax))
        return -best * amax, best * amax
    pairs = [(fa, fb) for fa in fracs[grid // 4 :] for fb in fracs[grid // 4 :]]
    fa, fb = min(pairs, key=lambda ab: err(ab[0] * lo, ab[1] * hi))
    return fa * lo, fb * hi


_EXTREME = 1e30  # attention masks use finfo(float32).min: such tensors keep their min-max range


def _mse_ranges(
    model_in: Path, inputs: dict[str, np.ndarray], names: list[str], cfg: StaticQuantConfig, scratch: Path
) -> dict[str, list[dict[str, Any]]]:
    """Per-activation MSE-optimal ranges as ORT ``TensorQuantOverrides`` (rmin/rmax), from histograms that
    ORT's own histogram collector builds on the calibration split.

    Tensors holding non-finite or extreme values (e.g. additive attention masks) are left to min-max:
    clipping them would turn "masked" into "slightly less likely"."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, HistogramCollector, create_calibrator

    extreme: set[str] = set()

    class _Collector(HistogramCollector):
        def collect_value(self, name_to_arr: dict[str, Any]) -> None:
            clean = {}
            for name, arrs in name_to_arr.items():
                # float32 (not 64): the calibrator already holds every sample's activations in memory
                a = np.concatenate([np.asarray(x, dtype=np.float32).ravel() for x in arrs])
                bad = ~np.isfinite(a) | (np.abs(a) > _EXTREME)
                if bad.any():
                    extreme.add(name)
                    a = a[~bad]
                clean[name] = [a if a.size else np.zeros(1)]
            super().collect_value(clean)

    aug = scratch / "mse-augmented.onnx"
    calibrator = create_calibrator(
        str(model_in),
        cfg.op_types,
        augmented_model_path=str(aug),
        calibrate_method=CalibrationMethod.Distribution,
        extra_options={"num_bins": 2048},
    )
    calibrator.collector = _Collector(
        method="distribution", symmetric=False, num_bins=2048, num_quantized_bins=128, percentile=99.999,
        scenario="same",
    )  # fmt: skip
    try:
        calibrator.collect_data(_Reader(inputs, names))
        hists = calibrator.collector.histogram_dict
    finally:
        aug.unlink(missing_ok=True)
        Path(str(aug) + ".data").unlink(missing_ok=True)
    out: dict[str, list[dict[str, Any]]] = {}
    for tensor, entry in hists.items():
        if tensor in extreme:
            continue
        hist, edges, tmin, tmax = entry[0], entry[1], float(entry[2]), float(entry[3])
        a, b = mse_range(np.asarray(hist), np.asarray(edges), activations_symmetric(cfg))
        a, b = max(a, min(tmin, 0.0)), min(b, max(tmax, 0.0))  # never wider than what was seen
        out[tensor] = [{"rmin": np.float32(a), "rmax": np.float32(b)}]
    return out


def activations_symmetric(cfg: StaticQuantConfig) -> bool:
    """Whether activations get zero point 0: ``cfg.symmetric_activations``, or else the engine's default.

    NNCF's defaults are its own: the 'performance' preset (symmetric) for CNNs, 'mixed' (asymmetric
    activations) for Transformers. Symmetric is also what OpenVINO's CPU INT8 convolutions run fastest: a
    u8 input with a zero point makes oneDNN compensate it, which costs most where a convolution has few input
    channels and padding (resnet8's first convolution: 31 vs 19 us per call on an AMX Xeon, docs/pruning.md).
    """
    if cfg.symmetric_activations is not None:
        return cfg.symmetric_activations
    return cfg.engine == "nncf" and cfg.model_type != "transformer"


def preprocess_for_quantization(src: Path, dst: Path) -> dict[str, Any]:
    """ORT's ``quant_pre_process`` (ONNX shape inference, graph fusions); its symbolic shape inference is
    skipped when it cannot handle the graph (it fails on some dynamo-exported Transformers)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        return {"preprocess": "quant_pre_process"}
    except Exception as e:  # ORT raises plain TypeError/Exception from its symbolic shape inference
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return {"preprocess": f"quant_pre_process without symbolic shapes ({type(e).__name__})"}


def _ort_quantize(src: Path, dst: Path, cfg: StaticQuantConfig, ctx: StageContext) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if cfg.smooth_quant or cfg.model_type:
        raise InputError(
            "quantize: smooth_quant and model_type need engine 'nncf' (ONNX Runtime's SmoothQuant option "
            "imports Intel Neural Compressor's ONNX adaptor, which is not installed)"
        )
    inputs, names = _calibration_inputs(ctx, cfg.samples, src)
    model_in = src
    pre_info: dict[str, Any] = {}
    if cfg.preprocess:
        pre = dst.with_name(dst.stem + ".pre.onnx")
        pre_info = preprocess_for_quantization(src, pre)
        model_in = pre
    method = {
        "minmax": CalibrationMethod.MinMax,
        "mse": CalibrationMethod.MinMax,  # ranges come from TensorQuantOverrides (see _mse_ranges)
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
        "distribution": CalibrationMethod.Distribution,
    }[cfg.calibration]
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    resolved = resolve_overrides(Path(model_in), cfg.overrides, cfg.symmetric_weights)
    tensor_overrides: dict[str, list[dict[str, Any]]] = {}
    if cfg.calibration == "mse":
        tensor_overrides.update(_mse_ranges(Path(model_in), inputs, names, cfg, dst.parent))
    tensor_overrides.update(resolved.tensor_overrides)
    extra: dict[str, Any] = {
        "ActivationSymmetric": activations_symmetric(cfg),
        "WeightSymmetric": cfg.symmetric_weights,
    }
    if tensor_overrides:
        extra["TensorQuantOverrides"] = tensor_overrides
    if cfg.calibration == "percentile":
        extra["CalibPercentile"] = cfg.percentile
    exclude = list(dict.fromkeys([*cfg.exclude, *resolved.exclude]))
    quantize_static(
        str(model_in),
        str(dst),
        _Reader(inputs, names),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=cfg.op_types,
        per_channel=cfg.per_channel,
        activation_type=qtype[cfg.activation_type],
        weight_type=qtype[cfg.weight_type],
        nodes_to_exclude=exclude,
        calibrate_method=method,
        extra_options=extra,
    )
    if model_in != src:
        Path(model_in).unlink(missing_ok=True)
    details: dict[str, Any] = {
        "engine": "onnxruntime.quantization.quantize_static",
        "samples": len(next(iter(inputs.values()))),
        "excluded_nodes": exclude,
        **pre_info,
    }
    if resolved.matched:
        details["overrides"] = {k: len(v) for k, v in resolved.matched.items()}
    if cfg.calibration == "mse":
        details["mse_ranges"] = len(tensor_overrides) - len(resolved.tensor_overrides)
    return details


def _nncf_quantize(src: Path, dst: Path, cfg: StaticQuantConfig, ctx: StageContext) -> dict[str, Any]:
    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    if cfg.calibration != "minmax":
        raise InputError(f"quantize: engine 'nncf' supports calibration 'minmax' only, not {cfg.calibration!r}")
    if any(o.per_channel is not None for o in cfg.overrides):
        raise InputError(
            "quantize: engine 'nncf' chooses weight granularity itself; per_channel overrides need engine 'onnxruntime'"
        )
    if cfg.smooth_quant and cfg.model_type != "transformer":
        raise InputError("quantize: smooth_quant needs model_type: transformer (NNCF applies it to Transformers)")
    inputs, names = _calibration_inputs(ctx, cfg.samples, src)
    n = len(next(iter(inputs.values())))
    dataset = nncf.Dataset(range(n), lambda i: {k: inputs[k][i : i + 1] for k in names})
    model = onnx.load(str(src))
    resolved = resolve_overrides(src, cfg.overrides)
    exclude = list(dict.fromkeys([*cfg.exclude, *resolved.exclude]))
    preset = nncf.QuantizationPreset.PERFORMANCE if activations_symmetric(cfg) else nncf.QuantizationPreset.MIXED
    kwargs: dict[str, Any] = {"subset_size": n, "preset": preset}
    if exclude:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=exclude)
    if cfg.model_type == "transformer":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
        alpha = cfg.smooth_quant_alpha if cfg.smooth_quant else -1.0
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha)
        )
    qmodel = nncf.quantize(model, dataset, **kwargs)
    onnx.save(qmodel, str(dst))
    details: dict[str, Any] = {
        "engine": f"nncf.quantize (nncf {nncf.__version__})",
        "samples": n,
        "preset": preset.value,
        "excluded_nodes": exclude,
        "model_type": cfg.model_type,
        "smooth_quant": cfg.smooth_quant,
    }
    if cfg.smooth_quant:
        details["smooth_quant_alpha"] = cfg.smooth_quant_alpha
    return details


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
        self.onnx_input(model)
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
                "symmetric_activations": activations_symmetric(cfg),
                "seconds": round(time.perf_counter() - start, 3),
                "size_bytes": dst.stat().st_size,
            }
        )
        return (
            ModelArtifact(output, "onnx", "int8", path=dst, lineage=[*model.lineage, f"quantize:{cfg.engine}"]),
            details,
        )
