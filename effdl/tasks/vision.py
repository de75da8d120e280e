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


SHAPE_CLASSES: tuple[str, ...] = ("disc", "ring", "square", "diamond", "triangle", "cross")


def render_shapes(labels: np.ndarray, size: int, rng: np.random.Generator, noise: float = 0.15) -> np.ndarray:
    """RGB images (N, 3, size, size) in [0, 1] of one shape each, class ``labels[i]`` of :data:`SHAPE_CLASSES`.

    Each image has a random background colour, a random foreground colour at least 0.35 away from it
    (max-norm), a random centre and radius, and Gaussian pixel noise of standard deviation ``noise``.
    """
    n = len(labels)
    r = rng.uniform(0.18, 0.36, n) * size
    cx = rng.uniform(0.3, 0.7, n) * size
    cy = rng.uniform(0.3, 0.7, n) * size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    mask = np.zeros((n, size, size), dtype=bool)
    for k, cls in enumerate(SHAPE_CLASSES):
        sel = labels == k
        dx = xx[None] - cx[sel, None, None]
        dy = yy[None] - cy[sel, None, None]
        rr = r[sel, None, None]
        if cls == "disc":
            m = dx**2 + dy**2 < rr**2
        elif cls == "ring":
            d2 = dx**2 + dy**2
            m = (d2 < rr**2) & (d2 > (0.55 * rr) ** 2)
        elif cls == "square":
            m = np.maximum(np.abs(dx), np.abs(dy)) < 0.8 * rr
        elif cls == "diamond":
            m = np.abs(dx) + np.abs(dy) < 1.1 * rr
        elif cls == "triangle":
            m = (dy < 0.8 * rr) & (np.abs(dx) < 0.55 * (dy + rr))
        else:  # cross
            ax, ay = np.abs(dx), np.abs(dy)
            m = ((ax < 0.3 * rr) & (ay < rr)) | ((ay < 0.3 * rr) & (ax < rr))
        mask[sel] = m
    bg = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    fg = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    # Push foreground colours that are too close to the background away from it, so every shape is visible.
    close = np.abs(fg - bg).max(1) < 0.35
    fg[close] = np.where(bg[close] > 0.5, bg[close] - 0.5, bg[close] + 0.5)
    img = np.where(mask[:, None], fg[:, :, None, None], bg[:, :, None, None])
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise)
    return np.clip(img, 0.0, 1.0, out=img)


@register_task
class Shapes(Task):
    """Procedurally generated RGB shape images (disc, ring, square, diamond, triangle, cross; 6 classes).

    Options: ``size`` (default 32), ``n_train`` (default 4000), ``noise`` (default 0.15). Splits are
    generated independently from ``seed``-derived streams: 200 calibration, 1000 held-out, ``n_train``
    train. Inputs are standardised as ``(x - 0.5) / 0.3``.
    """

    name: ClassVar[str] = "shapes"
    metric: ClassVar[MetricSpec] = MetricSpec("top1", "%", True)
    input_names: ClassVar[tuple[str, ...]] = ("image",)
    output_names: ClassVar[tuple[str, ...]] = ("logits",)
    num_classes: ClassVar[int] = len(SHAPE_CLASSES)

    def _make_splits(self) -> dict[SplitName, Split]:
        size = int(self.options.get("size", 32))
        noise = float(self.options.get("noise", 0.15))
        sizes = {"train": int(self.options.get("n_train", 4000)), "calibration": 200, "heldout": 1000}
        out: dict[SplitName, Split] = {}
        for i, (split, n) in enumerate(sizes.items()):
            rng = np.random.default_rng([self.seed, 101, i])
            labels = rng.integers(0, self.num_classes, n).astype(np.int64)
            images = (render_shapes(labels, size, rng, noise) - 0.5) / 0.3
            out[split] = Split({"image": images.astype(np.float32)}, labels)  # type: ignore[index]
        return out

    def score(self, outputs: list[np.ndarray], targets: np.ndarray | None) -> float:
        return classification_accuracy(outputs, targets)
