"""Dynamic INT8 quantization (``quantize-dynamic``): weights quantized ahead of time, activations at run time.

``onnxruntime.quantization.quantize_dynamic`` rewrites MatMul/Gemm into ``DynamicQuantizeLinear`` +
``MatMulInteger`` (or ``DynamicQuantizeMatMul``) and LSTM into ``DynamicQuantizeLSTM``, and the fused
``Attention`` op of an ORT-optimized Transformer (stage ``optimize-transformer``) into ``QAttention``.
No calibration data is needed: activation ranges are measured on every call. ORT's dynamic quantizer does
not handle GRU or RNN (they stay FP32). The com.microsoft ops it emits are ONNX Runtime's own; OpenVINO
reads ``DynamicQuantizeLinear``/``MatMulInteger`` but not the fused variants, and is usually faster with
static INT8 or weight-only compression (measured in docs/quantization.md).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

from pydantic import Field

from effdl.compress import register_stage
from effdl.compress.base import ModelArtifact, Stage, StageConfig, StageContext
from effdl.compress.overrides import LayerOverride, resolve_overrides
from effdl.errors import InputError


class DynamicQuantConfig(StageConfig):
    """Options of ``quantize-dynamic``."""

    op_types: list[str] = Field(
        default_factory=lambda: ["MatMul", "Gemm", "LSTM", "Attention"],
        description="ONNX op types to quantize (ORT supports MatMul, Gemm, LSTM, Attention, Conv, ...).",
    )
    per_channel: bool = Field(False, description="Per-output-channel weight scales.")
    weight_type: Literal["int8", "uint8"] = Field("int8", description="Weight integer type.")
    reduce_range: bool = Field(False, description="7-bit weights (avoids overflow on CPUs without VNNI).")
    preprocess: bool = Field(True, description="Run ORT's quant_pre_process (shape inference) first.")
    exclude: list[str] = Field(default_factory=list, description="ONNX node names kept in FP32.")
    overrides: list[LayerOverride] = Field(default_factory=list, description="Per-layer overrides (action: fp32).")


@register_stage
class DynamicQuantize(Stage):
    """Dynamic INT8 (weights INT8 offline, activations quantized per call) with ONNX Runtime."""

    name: ClassVar[str] = "quantize-dynamic"
    kind: ClassVar[Literal["torch", "onnx"]] = "onnx"
    Config: ClassVar[type[StageConfig]] = DynamicQuantConfig
    default_output: ClassVar[str] = "int8-dynamic"
    summary: ClassVar[str] = "dynamic INT8 (MatMul/Gemm/LSTM/Attention), onnxruntime"

    def apply(self, model: ModelArtifact, ctx: StageContext, output: str) -> tuple[ModelArtifact, dict[str, Any]]:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process

        cfg: DynamicQuantConfig = self.config  # type: ignore[assignment]
        self.onnx_input(model)
        if any(o.per_channel is not None for o in cfg.overrides):
            raise InputError("quantize-dynamic: overrides support `action` only (per_channel is a static option)")
        start = time.perf_counter()
        dst = ctx.workdir / f"{output}.onnx"
        src = model.path
        if cfg.preprocess:
            pre = ctx.workdir / f"{output}.pre.onnx"
            # Symbolic shape inference does not know com.microsoft fused ops' outputs in every case.
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True, skip_optimization=_has_ms_ops(src))
            src = pre
        resolved = resolve_overrides(src, cfg.overrides)
        exclude = list(dict.fromkeys([*cfg.exclude, *resolved.exclude]))
        ctx.say(f"quantize-dynamic: {', '.join(cfg.op_types)}")
        quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=cfg.op_types,
            per_channel=cfg.per_channel,
            reduce_range=cfg.reduce_range,
            weight_type={"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[cfg.weight_type],
            nodes_to_exclude=exclude,
        )
        if src != model.path:
            src.unlink(missing_ok=True)
        details = {
            "engine": "onnxruntime.quantization.quantize_dynamic",
            "method": "dynamic",
            "op_types": cfg.op_types,
            "quantized_ops": quantized_op_counts(dst),
            "per_channel": cfg.per_channel,
            "weight_type": cfg.weight_type,
            "excluded_nodes": exclude,
            "seconds": round(time.perf_counter() - start, 3),
            "size_bytes": dst.stat().st_size,
        }
        return ModelArtifact(output, "onnx", "int8", path=dst, lineage=[*model.lineage, "quantize-dynamic"]), details


def _has_ms_ops(path: Any) -> bool:
    import onnx

    return any(n.domain == "com.microsoft" for n in onnx.load(str(path), load_external_data=False).graph.node)


QUANT_OPS = {
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
    "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "QAttention", "MatMulIntegerToFloat", "MatMulNBits",
    "QLinearMatMul", "QLinearConv", "GatherBlockQuantized",
}  # fmt: skip


def quantized_op_counts(path: Any) -> dict[str, int]:
    """How many of each quantization-related op the ONNX file holds (what a stage actually produced)."""
    import onnx

    counts: dict[str, int] = {}
    for n in onnx.load(str(path), load_external_data=False).graph.node:
        if n.op_type in QUANT_OPS:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items()))
