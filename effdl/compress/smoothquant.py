"""SmoothQuant for Transformers: static INT8 (QDQ) after migrating activation outliers into the weights.

NNCF's ``SmoothQuant`` (run inside ``nncf.quantize`` with ``model_type=TRANSFORMER``) rescales each
MatMul's input channels by ``s = max|X|^alpha / max|W|^(1-alpha)`` and folds ``1/s`` into the producer,
so activations quantize with less clipping. ONNX Runtime's own ``SmoothQuant`` extra option imports Intel
Neural Compressor's ONNX adaptor, which effdl does not depend on, so this stage uses NNCF.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from effdl.compress import register_stage
from effdl.compress.base import StageConfig
from effdl.compress.quantize import StaticQuantConfig, StaticQuantize


class SmoothQuantConfig(StaticQuantConfig):
    """The ``quantize`` options with SmoothQuant's defaults (nncf engine, Transformer model type)."""

    engine: Literal["onnxruntime", "nncf"] = Field("nncf", description="Must be nncf.")
    model_type: Literal["transformer"] | None = Field("transformer", description="Must be transformer.")
    smooth_quant: bool = Field(True, description="Apply SmoothQuant before quantizing.")
    smooth_quant_alpha: float = Field(0.95, ge=0, le=1, description="Migration strength for MatMul inputs.")


@register_stage
class SmoothQuantize(StaticQuantize):
    """Static INT8 with NNCF SmoothQuant (Transformers)."""

    name: ClassVar[str] = "quantize-smoothquant"
    Config: ClassVar[type[StageConfig]] = SmoothQuantConfig
    default_output: ClassVar[str] = "int8-sq"
    summary: ClassVar[str] = "SmoothQuant + static INT8 (QDQ) via NNCF, for Transformers"
