"""FP16 conversion of an ONNX model (``convert-fp16``), inputs and outputs kept FP32.

Uses ONNX Runtime's copy of onnxconverter-common's converter
(``onnxruntime.transformers.float16.convert_float_to_float16``), which blocks ops without FP16 kernels
and inserts Casts around them. ONNX Runtime's CPU provider has few FP16 kernels, so on a CPU this mainly
halves the file; speed comes from GPUs (CUDA/TensorRT) or from OpenVINO, which picks its own inference
precision (``options: {inference_precision: bf16|fp16}`` on an OpenVINO target, no stage needed).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

from pydantic import Field

from effdl.compress import register_stage
from effdl.compress.base import ModelArtifact, Stage, StageConfig, StageContext


class Fp16Config(StageConfig):
    """Options of ``convert-fp16``."""

    keep_io_types: bool = Field(True, description="Keep FP32 graph inputs/outputs (Casts inside).")
    op_block_list: list[str] | None = Field(None, description="Op types kept FP32 (default: the converter's list).")
    exclude: list[str] = Field(default_factory=list, description="ONNX node names kept in FP32.")


@register_stage
class ConvertFp16(Stage):
    """FP32 -> FP16 weights and compute (ONNX), I/O kept FP32."""

    name: ClassVar[str] = "convert-fp16"
    kind: ClassVar[Literal["torch", "onnx"]] = "onnx"
    Config: ClassVar[type[StageConfig]] = Fp16Config
    default_output: ClassVar[str] = "fp16"
    summary: ClassVar[str] = "FP16 ONNX (onnxruntime.transformers float16 converter)"

    def apply(self, model: ModelArtifact, ctx: StageContext, output: str) -> tuple[ModelArtifact, dict[str, Any]]:
        import onnx
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        cfg: Fp16Config = self.config  # type: ignore[assignment]
        self.onnx_input(model)
        start = time.perf_counter()
        dst = ctx.workdir / f"{output}.onnx"
        block = cfg.op_block_list if cfg.op_block_list is not None else list(DEFAULT_OP_BLOCK_LIST)
        proto = convert_float_to_float16(
            onnx.load(str(model.path)),
            keep_io_types=cfg.keep_io_types,
            op_block_list=block,
            node_block_list=cfg.exclude or None,
        )
        onnx.save(proto, str(dst))
        details = {
            "engine": "onnxruntime.transformers.float16.convert_float_to_float16",
            "method": "fp16",
            "keep_io_types": cfg.keep_io_types,
            "op_block_list": block,
            "excluded_nodes": cfg.exclude,
            "seconds": round(time.perf_counter() - start, 3),
            "size_bytes": dst.stat().st_size,
        }
        return ModelArtifact(output, "onnx", "fp16", path=dst, lineage=[*model.lineage, "convert-fp16"]), details
