"""The Task: where data for calibration, training and evaluation comes from, and how it is scored.

A task hands out numpy arrays (no torch needed), keyed by the model's input names, so the same data
drives torch training, ONNX calibration and every backend's verification. Data ships with a package
or is generated from a fixed seed: nothing is downloaded at run time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

if TYPE_CHECKING:  # torch only for training helpers
    import torch

SplitName = Literal["train", "calibration", "heldout"]
SPLITS: tuple[SplitName, ...] = ("train", "calibration", "heldout")


@dataclass
class Split:
    """One split of a task: named input arrays (batch-major) and optional targets."""

    inputs: dict[str, np.ndarray]
    targets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, n: int | None) -> Split:
        """The first ``n`` samples (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return Split(
            {k: v[:n] for k, v in self.inputs.items()},
            None if self.targets is None else self.targets[:n],
        )

    def batches(self, batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        """Consecutive batches of inputs and targets, the last one possibly smaller."""
        for i in range(0, len(self), batch_size):
            yield (
                {k: v[i : i + batch_size] for k, v in self.inputs.items()},
                None if self.targets is None else self.targets[i : i + batch_size],
            )


@dataclass(frozen=True)
class MetricSpec:
    """What the task's metric is called, its unit, and which way is better."""

    name: str
    unit: str = ""
    higher_is_better: bool = True


@dataclass
class Task(ABC):
    """Calibration, training and held-out data plus a metric.

    Subclasses set ``name``, ``metric``, ``input_names`` and ``output_names`` and implement
    :meth:`_make_splits` (called once, cached) and :meth:`score`.
    """

    name: ClassVar[str]
    metric: ClassVar[MetricSpec]
    input_names: ClassVar[tuple[str, ...]]
    output_names: ClassVar[tuple[str, ...]]
    default_min_agreement: ClassVar[dict[str, float]] = {"top1_agreement": 97.0}
    """Verification's agreement limits for this task when a recipe's ``verify.min_agreement`` names none of
    the measures :meth:`agreement` gives (e.g. the default recipe's ``top1_agreement`` on an image-output task).
    Keys are :meth:`agreement` keys where higher is better; empty means no agreement check."""
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    _splits: dict[str, Split] | None = field(default=None, init=False, repr=False)

    @abstractmethod
    def _make_splits(self) -> dict[SplitName, Split]:
        """Build all three splits deterministically from ``self.seed``."""

    @abstractmethod
    def score(self, outputs: list[np.ndarray], targets: np.ndarray | None) -> float:
        """The task metric of a model's outputs (in the order of ``output_names``)."""

    def split(self, name: SplitName) -> Split:
        if self._splits is None:
            self._splits = dict(self._make_splits())
        return self._splits[name]

    def agreement(self, reference: list[np.ndarray], outputs: list[np.ndarray]) -> dict[str, float]:
        """Task-specific agreement of a variant's outputs with the FP32 reference's.

        The default compares arg-max of the first output (top-1 agreement, in percent); tasks whose
        outputs are not class scores override it.
        """
        ref, out = reference[0], outputs[0]
        if ref.ndim >= 2 and ref.shape[-1] > 1:
            return {"top1_agreement": float(100.0 * np.mean(ref.argmax(-1) == out.argmax(-1)))}
        return {}

    def example_inputs(self, batch: int = 1) -> dict[str, np.ndarray]:
        """A batch taken from the calibration split, for export and shape inference."""
        calib = self.split("calibration")
        return {k: v[:batch] for k, v in calib.inputs.items()}

    def loss(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], targets: torch.Tensor) -> torch.Tensor:
        """Training loss; classification tasks use cross-entropy on the first output."""
        import torch.nn.functional as F

        logits = outputs[0] if isinstance(outputs, tuple | list) else outputs
        return F.cross_entropy(logits, targets)

    def describe(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "metric": self.metric.name,
            "unit": self.metric.unit,
            "higher_is_better": self.metric.higher_is_better,
            "seed": self.seed,
            "sizes": {s: len(self.split(s)) for s in SPLITS},
        }
