"""Compression stages, registered by name for recipes: quantization (quantize, quantize-dynamic,
quantize-weights, quantize-smoothquant, quantize-auto, convert-fp16, qat), pruning and distillation
(prune-unstructured, prune-structured, prune-depth, sparsity-24, distill) and mixture-of-experts (moe-*, moefy)."""

from __future__ import annotations

from effdl.compress.base import ModelArtifact, Stage, StageConfig, StageContext
from effdl.registry import Registry


def _load_builtin() -> None:
    from effdl.compress import (  # noqa: F401  (each module registers its stages)
        depth,
        distill,
        dynamic,
        fp16,
        moe,
        moe_moefy,
        moe_quant,
        prune,
        qat,
        quantize,
        smoothquant,
        sparsity,
        tuning,
        weight_only,
    )


STAGES: Registry[type[Stage]] = Registry("stage", _load_builtin)


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator registering a :class:`Stage` under ``cls.name``."""
    STAGES.add(cls.name, cls)
    return cls


__all__ = ["STAGES", "ModelArtifact", "Stage", "StageConfig", "StageContext", "register_stage"]
