"""Image reconstruction and generation tasks on scikit-learn's handwritten digits (upsampled to 16x16)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

from effdl.tasks import register_task
from effdl.tasks.base import MetricSpec, Split, SplitName, Task
from effdl.tasks.metrics import first, regression_agreement


def digit_images(size: int = 16, seed: int = 0) -> np.ndarray:
    """The 1,797 digits as float32 ``(N, 1, size, size)`` in [0, 1], bilinear-resized, shuffled by ``seed``."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32) / 16.0
    if size != 8:
        images = zoom(images, (1, size / 8, size / 8), order=1)
    images = np.clip(images, 0.0, 1.0)[:, None]
    return np.ascontiguousarray(images[np.random.default_rng(seed).permutation(len(images))], dtype=np.float32)


@register_task
class DigitsReconstruction(Task):
    """Reconstruct 16x16 digit images (autoencoders, VAEs). Metric: mean squared error (lower is better).

    Input ``image`` in [0, 1]; the target is the input itself. Splits (disjoint images, shuffled by
    ``seed``): 100 calibration, 400 held-out, the remaining 1,297 train. Agreement with the reference is
    the relative L2 error, max absolute error and PSNR of the reconstructions.
    """

    name: ClassVar[str] = "digits_recon"
    metric: ClassVar[MetricSpec] = MetricSpec("mse", "", False)
    input_names: ClassVar[tuple[str, ...]] = ("image",)
    output_names: ClassVar[tuple[str, ...]] = ("reconstruction",)
    # Images have no arg-max: verification compares pixels. 30 dB PSNR on the reference's range is an RMS
    # error of about 3 % of it, visually indistinguishable on these 16x16 digits.
    default_min_agreement: ClassVar[dict[str, float]] = {"psnr_db": 30.0}

    def _make_splits(self) -> dict[SplitName, Split]:
        images = digit_images(int(self.options.get("size", 16)), self.seed)
        n_cal, n_held = 100, 400
        parts = {
            "calibration": images[:n_cal],
            "heldout": images[n_cal : n_cal + n_held],
            "train": images[n_cal + n_held :],
        }
        return {k: Split({"image": v}, v) for k, v in parts.items()}  # type: ignore[misc]

    def score(self, outputs: list[np.ndarray], targets: np.ndarray | None) -> float:
        if targets is None:
            raise ValueError("reconstruction error needs targets")
        return float(np.mean((outputs[0].astype(np.float64) - targets) ** 2))

    def loss(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], targets: torch.Tensor) -> torch.Tensor:  # noqa: D102
        import torch.nn.functional as F

        return F.mse_loss(first(outputs), targets)

    def agreement(self, reference: list[np.ndarray], outputs: list[np.ndarray]) -> dict[str, float]:
        return regression_agreement(reference, outputs)


def random_features(images: np.ndarray, dim: int = 64, seed: int = 1234) -> np.ndarray:
    """Features of a fixed, untrained random network: 4x4 patch projections with ReLU, pooled 2x2, projected.

    The weights come from ``seed`` alone, so every run and every model is measured with the same network.
    """
    n, c, h, w = images.shape
    rng = np.random.default_rng(seed)
    p = 4
    patches = images.reshape(n, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5).reshape(n, h // p, w // p, -1)
    w1 = rng.normal(0.0, 1.0 / np.sqrt(patches.shape[-1]), (patches.shape[-1], 32))
    b1 = rng.normal(0.0, 0.5, 32)
    act = np.maximum(patches.astype(np.float64) @ w1 + b1, 0.0)
    gh, gw = act.shape[1] // 2, act.shape[2] // 2
    pooled = act[:, : 2 * gh, : 2 * gw].reshape(n, gh, 2, gw, 2, -1).mean((2, 4)).reshape(n, -1)
    w2 = rng.normal(0.0, 1.0 / np.sqrt(pooled.shape[1]), (pooled.shape[1], dim))
    return pooled @ w2


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * covmean))


@register_task
class DigitsGeneration(Task):
    """Generate 16x16 digit-like images from latent vectors (GAN generators).

    Input ``z``: standard-normal latents of ``latent_dim`` (default 32). Targets: real digit images in
    [-1, 1] (the generator's tanh range), used by training (the discriminator's real samples) and by the
    metric. Metric (lower is better): a *proxy* for sample quality, the Fréchet distance between
    :func:`random_features` of the generated images and of the real held-out images, FID-style but with a
    fixed random network instead of Inception, so it only compares low-order image statistics; it is no
    FID and its values are comparable only within this task. Splits: 100 calibration, 500 held-out,
    1,197 train.
    """

    name: ClassVar[str] = "digits_gen"
    metric: ClassVar[MetricSpec] = MetricSpec("random_feature_frechet_distance", "", False)
    input_names: ClassVar[tuple[str, ...]] = ("z",)
    output_names: ClassVar[tuple[str, ...]] = ("image",)
    default_min_agreement: ClassVar[dict[str, float]] = {"psnr_db": 30.0}  # as DigitsReconstruction's

    def _make_splits(self) -> dict[SplitName, Split]:
        latent_dim = int(self.options.get("latent_dim", 32))
        images = digit_images(int(self.options.get("size", 16)), self.seed) * 2.0 - 1.0
        n_cal, n_held = 100, 500
        parts = {
            "calibration": images[:n_cal],
            "heldout": images[n_cal : n_cal + n_held],
            "train": images[n_cal + n_held :],
        }
        out: dict[SplitName, Split] = {}
        for i, (k, v) in enumerate(parts.items()):
            z = np.random.default_rng([self.seed, 404, i]).standard_normal((len(v), latent_dim)).astype(np.float32)
            out[k] = Split({"z": z}, np.ascontiguousarray(v, dtype=np.float32))  # type: ignore[index]
        return out

    def score(self, outputs: list[np.ndarray], targets: np.ndarray | None) -> float:
        if targets is None:
            raise ValueError("the sample-quality proxy needs real images as targets")
        return frechet_distance(random_features(outputs[0]), random_features(targets))

    def loss(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], targets: torch.Tensor) -> torch.Tensor:  # noqa: D102
        from effdl.errors import InputError

        raise InputError(
            "digits_gen has no per-sample loss: a generator is trained adversarially by its model's train_fn"
        )

    def agreement(self, reference: list[np.ndarray], outputs: list[np.ndarray]) -> dict[str, float]:
        return regression_agreement(reference, outputs)
