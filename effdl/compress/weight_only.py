"""Weight-only compression (``quantize-weights``): INT8 or group-wise INT4 weights, FP32 activations.

For Transformer linear layers (MatMul with a constant weight; Gemm for the nncf engine), where memory
traffic for weights dominates at small batch:

- ``nncf``: ``nncf.compress_weights`` on the ONNX model, INT8_SYM/ASYM per output channel, emitted as
  ``DequantizeLinear`` on the weights; OpenVINO runs them as compressed weights. (NNCF's INT4 modes
  are refused on ONNX models: see ``_nncf``.)
- ``onnxruntime``: ``MatMulNBitsQuantizer`` (ORT's ``MatMulNBits`` kernel, 4 or 8 bits, ``group_size``
  blocks along K; algorithms RTN, HQQ, or GPTQ calibrated on the task's calibration split), or the same
  blocks as QDQ (``format: qdq``, opset 21 INT4 ``DequantizeLinear``).

Intel Neural Compressor's RTN/GPTQ/AWQ for torch are not used: see docs/quantization.md.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from effdl.compress import register_stage
from effdl.compress.base import ModelArtifact, Stage, StageConfig, StageContext
from effdl.compress.dynamic import quantized_op_counts
from effdl.compress.overrides import LayerOverride, resolve_overrides
from effdl.errors import InputError


class WeightOnlyConfig(StageConfig):
    """Options of ``quantize-weights``."""

    engine: Literal["nncf", "onnxruntime"] = Field("nncf", description="Which library compresses.")
    bits: Literal[4, 8] = Field(4, description="Weight bits.")
    group_size: int = Field(
        128, ge=-1, description="onnxruntime: weights per scale along K (-1: per output channel); nncf: per channel."
    )
    symmetric: bool = Field(True, description="Symmetric weights (no zero point).")
    algorithm: Literal["rtn", "hqq", "gptq"] = Field(
        "rtn", description="onnxruntime engine: round-to-nearest, HQQ, or GPTQ (calibrated)."
    )
    format: Literal["matmulnbits", "qdq"] = Field("matmulnbits", description="onnxruntime engine: output format.")
    samples: int = Field(32, ge=1, description="Calibration samples (onnxruntime gptq).")
    exclude: list[str] = Field(default_factory=list, description="ONNX node names kept in FP32.")
    overrides: list[LayerOverride] = Field(default_factory=list, description="Per-layer overrides (action: fp32).")

    @model_validator(mode="after")
    def _check(self) -> WeightOnlyConfig:
        if self.group_size == 0:
            raise ValueError("group_size must be -1 (per channel) or a positive block size")
        if self.group_size > 0 and self.group_size & (self.group_size - 1):
            raise ValueError(f"group_size must be a power of two (got {self.group_size})")
        return self


def _calib(ctx: StageContext, path: Path, n: int) -> tuple[dict[str, Any], list[str]]:
    from effdl.compress.quantize import _calibration_inputs

    return _calibration_inputs(ctx, n, path)


def _nncf(src: Path, dst: Path, cfg: WeightOnlyConfig, exclude: list[str], ctx: StageContext) -> dict[str, Any]:
    import nncf
    import onnx
    from nncf import CompressWeightsMode

    if cfg.bits == 4:
        # Measured with NNCF 3.4 / ORT 1.32: NNCF's ONNX backend INT4_SYM output loses most of the signal
        # (relative error 0.66 on the tiny BERT, cosine 0.77 on all-MiniLM-L6-v2, same on OpenVINO) and
        # INT4_ASYM writes MatMulNBits zero points ORT rejects. ORT's quantizer is accurate and OpenVINO
        # reads its MatMulNBits, so INT4 goes through it for both backends.
        raise InputError(
            "quantize-weights: engine 'nncf' gives wrong INT4 results on ONNX models (NNCF 3.4); "
            "use engine 'onnxruntime' (its MatMulNBits runs on ONNX Runtime and OpenVINO alike)"
        )
    mode = CompressWeightsMode.INT8_SYM if cfg.symmetric else CompressWeightsMode.INT8_ASYM
    # Convolutions stay FP32: weight-only compression is for linear layers, and NNCF's ONNX backend writes a
    # Conv weight's per-channel scale as a 4-D tensor that ONNX Runtime's DequantizeLinear rejects (resnet8).
    proto = onnx.load(str(src), load_external_data=False)
    convs = ["Conv"] if any(n.op_type == "Conv" for n in proto.graph.node) else []  # NNCF refuses absent types
    kwargs: dict[str, Any] = {"mode": mode}
    if exclude or convs:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=exclude, types=convs)
    # all_layers stays off: NNCF would also compress embedding Gathers, and its ONNX backend then emits a
    # MatMulNBits fed by int64 token ids, which ONNX Runtime rejects.
    model = nncf.compress_weights(onnx.load(str(src)), **kwargs)
    onnx.save(model, str(dst))
    return {"engine": f"nncf.compress_weights (nncf {nncf.__version__})", "mode": mode.value}


def _ort(src: Path, dst: Path, cfg: WeightOnlyConfig, exclude: list[str], ctx: StageContext) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization import matmul_nbits_quantizer as mnb

    fmt = QuantFormat.QDQ if cfg.format == "qdq" else QuantFormat.QOperator
    block = cfg.group_size if cfg.group_size > 0 else 0
    channel = cfg.group_size == -1
    common: dict[str, Any] = {"quant_format": fmt, "op_types_to_quantize": ("MatMul",)}
    if cfg.algorithm == "rtn":
        algo: Any = mnb.DefaultWeightOnlyQuantConfig(
            block_size=block or 128,
            is_symmetric=cfg.symmetric,
            bits=cfg.bits,
            channel_wised_quantize=channel,
            **common,
        )
    elif cfg.algorithm == "hqq":
        if cfg.bits != 4:
            raise InputError("quantize-weights: algorithm hqq supports bits 4 only")
        algo = mnb.HQQWeightOnlyQuantConfig(block_size=block or 128, bits=4, **common)
    else:
        inputs, names = _calib(ctx, src, cfg.samples)
        from effdl.compress.quantize import _Reader

        algo = mnb.GPTQWeightOnlyQuantConfig(calibration_data_reader=_Reader(inputs, names), **common)
    q = mnb.MatMulNBitsQuantizer(
        onnx.load(str(src)),
        bits=cfg.bits,
        block_size=block or 128,
        is_symmetric=cfg.symmetric,
        nodes_to_exclude=exclude,
        quant_format=fmt,
        channel_wised_quantize=channel,
        algo_config=algo,
    )
    q.process()
    q.model.save_model_to_file(str(dst), use_external_data_format=False)
    return {"engine": "onnxruntime MatMulNBitsQuantizer", "algorithm": cfg.algorithm, "format": cfg.format}


@register_stage
class WeightOnlyQuantize(Stage):
    """Weight-only INT8 / group-wise INT4 compression of linear layers (FP32 activations)."""

    name: ClassVar[str] = "quantize-weights"
    kind: ClassVar[Literal["torch", "onnx"]] = "onnx"
    Config: ClassVar[type[StageConfig]] = WeightOnlyConfig
    default_output: ClassVar[str] = "w4"
    summary: ClassVar[str] = "weight-only INT8 / group-wise INT4 (nncf or onnxruntime MatMulNBits)"

    def apply(self, model: ModelArtifact, ctx: StageContext, output: str) -> tuple[ModelArtifact, dict[str, Any]]:
        cfg: WeightOnlyConfig = self.config  # type: ignore[assignment]
        self.onnx_input(model)
        if any(o.per_channel is not None for o in cfg.overrides):
            raise InputError("quantize-weights: overrides support `action` only; use group_size for granularity")
        start = time.perf_counter()
        dst = ctx.workdir / f"{output}.onnx"
        resolved = resolve_overrides(model.path, cfg.overrides)
        exclude = list(dict.fromkeys([*cfg.exclude, *resolved.exclude]))
        ctx.say(f"quantize-weights: {cfg.engine}, INT{cfg.bits}, group {cfg.group_size}")
        run = _nncf if cfg.engine == "nncf" else _ort
        details = run(model.path, dst, cfg, exclude, ctx)
        ops = quantized_op_counts(dst)
        if not ops:
            raise InputError(
                f"quantize-weights: no layer of {model.path.name} was compressed "
                "(weight-only compression needs MatMul/Gemm layers with constant weights)"
            )
        details.update(
            {
                "method": "weight-only",
                "bits": cfg.bits,
                "group_size": cfg.group_size,
                "symmetric": cfg.symmetric,
                "quantized_ops": ops,
                "excluded_nodes": exclude,
                "seconds": round(time.perf_counter() - start, 3),
                "size_bytes": dst.stat().st_size,
            }
        )
        precision = f"w{cfg.bits}a32"
        lineage = [*model.lineage, f"quantize-weights:{cfg.engine}"]
        return ModelArtifact(output, "onnx", precision, path=dst, lineage=lineage), details
