"""Image classification tasks whose data ships with a package or is generated locally."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from effdl.tasks import register_task
from effdl.tasks.base import MetricSpec, Split, SplitName, Task


def classification_accuracy(outputs: list[np.ndarray], targets: np.ndarray | None) -> float:
    """Top-1 accuracy in percent of the first output's arg-max."""
    if targets is None:
        raise ValueError("accuracy needs targets")
    return float(100.0 * np.mean(outputs[0].argmax(-1) == targets))


@register_task
class Digits(Task):
    """scikit-learn's handwritten digits (1,797 8x8 images, 10 classes; shipped inside scikit-learn).

    Images are resized to ``size`` x ``size`` (default 32) with bilinear interpolation and scaled to
    [0, 1] then standardised. Splits (fixed by ``seed``): 100 calibration, 500 held-out, the rest train.
    """

    name: ClassVar[str] = "digits"
    metric: ClassVar[MetricSpec] = MetricSpec("top1", "%", True)
    input_names: ClassVar[tuple[str, ...]] = ("image",)
    output_names: ClassVar[tuple[str, ...]] = ("logits",)
    num_classes: ClassVar[int] = 10

    def _make_splits(self) -> dict[SplitName, Split]:
        from scipy.ndimage import zoom
        from sklearn.datasets import load_digits

        size = int(self.options.get("size", 32))
        data = load_digits()
        images = data.images.astype(np.float32) / 16.0
        if size != 8:
            images = zoom(images, (1, size / 8, size / 8), order=1)
        images = ((images - 0.3) / 0.4).astype(np.float32)[:, None]
        labels = data.target.astype(np.int64)
        order = np.random.default_rng(self.seed).permutation(len(labels))
        images, labels = images[order], labels[order]
        n_cal, n_held = 100, 500
        return {
            "calibration": Split({"image": images[:n_cal]}, labels[:n_cal]),
            "heldout": Split({"image": images[n_cal : n_cal + n_held]}, labels[n_cal : n_cal + n_held]),
            "train": Split({"image": images[n_cal + n_held :]}, labels[n_cal + n_held :]),
        }

    def score(self, outputs: list[np.ndarray], targets: np.ndarray | None) -> float:
        return classification_accuracy(outputs, targets)
