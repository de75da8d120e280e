"""Compression stages (quantize, quantize-dynamic, quantize-weights, qat, ..., later prune / distill / moe),
registered by name for recipes."""

from __future__ import annotations

from effdl.compress.base import ModelArtifact, Stage, StageConfig, StageContext
from effdl.registry import Registry


def _load_builtin() -> None:
    from effdl.compress import dynamic, fp16, qat, quantize, smoothquant, tuning, weight_only  # noqa: F401


STAGES: Registry[type[Stage]] = Registry("stage", _load_builtin)


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator registering a :class:`Stage` under ``cls.name``."""
    STAGES.add(cls.name, cls)
    return cls


__all__ = ["STAGES", "ModelArtifact", "Stage", "StageConfig", "StageContext", "register_stage"]
