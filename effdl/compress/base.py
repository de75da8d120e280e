"""The Stage: a typed config plus ``apply(model, ctx) -> model``, registered by name.

Torch stages (pruning, distillation, QAT) transform a torch module before export; ONNX stages
(post-training quantization) transform an ONNX file after export. Each returns a new
:class:`ModelArtifact` and records what it did in ``details``, which goes into the run's report.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from effdl.tasks import Task


class StageConfig(BaseModel):
    """Base of every stage's config: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class ModelArtifact:
    """A model between stages: a torch module or an ONNX file, with its name, precision and lineage."""

    name: str
    kind: Literal["torch", "onnx"]
    precision: str = "fp32"
    module: Any = None
    path: Path | None = None
    lineage: list[str] = field(default_factory=list)


@dataclass
class StageContext:
    """What a stage may use: the task (data + metric), a scratch folder, the original FP32 model (the
    default distillation teacher; stages must not modify it) and a progress callback."""

    task: Task
    workdir: Path
    seed: int = 0
    progress: Any = None  # callable(description: str) or None
    teacher: Any = None  # the source torch module (None for ONNX inputs)

    def say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)


class Stage(ABC):
    """A registered compression stage."""

    name: ClassVar[str]
    kind: ClassVar[Literal["torch", "onnx"]]
    Config: ClassVar[type[StageConfig]]
    default_output: ClassVar[str]
    summary: ClassVar[str] = ""

    def __init__(self, config: StageConfig) -> None:
        self.config = config

    @abstractmethod
    def apply(self, model: ModelArtifact, ctx: StageContext, output: str) -> tuple[ModelArtifact, dict[str, Any]]:
        """Return the new model (named ``output``) and the details to record in the report.

        Torch stages must not modify ``model.module`` in place (it may be the teacher): copy it first.
        The pipeline itself records, after each torch stage, the held-out metric, parameters and MACs.
        """

    def onnx_input(self, model: ModelArtifact) -> Path:
        """The ONNX file an ONNX stage works on; a clear error when the stage was put before the export."""
        from effdl.errors import InputError

        if model.kind != "onnx" or model.path is None:
            raise InputError(
                f"{self.name} works on an ONNX model; it must come after export",
                "in the recipe, put torch stages (pruning, distillation, QAT, MoE slimming) before ONNX stages",
            )
        return model.path
