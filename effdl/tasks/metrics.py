"""Metric, loss and agreement helpers shared by the built-in tasks (numpy for metrics, torch for losses)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def first(outputs: torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
    """The first output of a model that returns one tensor or a tuple of them."""
    return outputs[0] if isinstance(outputs, tuple | list) else outputs


def accuracy(logits: np.ndarray, targets: np.ndarray | None) -> float:
    """Percent of positions whose arg-max over the last axis equals the target (any leading shape)."""
    if targets is None:
        raise ValueError("accuracy needs targets")
    return float(100.0 * np.mean(logits.argmax(-1) == targets))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis, in float64."""
    x = logits.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def perplexity(logits: np.ndarray, targets: np.ndarray | None) -> float:
    """exp of the mean next-token cross-entropy (natural log) over every target position."""
    if targets is None:
        raise ValueError("perplexity needs targets")
    logp = log_softmax(logits)
    nll = -np.take_along_axis(logp, targets[..., None].astype(np.int64), -1)[..., 0]
    return float(np.exp(nll.mean()))


def token_cross_entropy(outputs: torch.Tensor | tuple[torch.Tensor, ...], targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``(..., classes)`` logits against ``(...)`` integer targets, averaged over positions."""
    import torch.nn.functional as F

    logits = first(outputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def argmax_agreement(reference: list[np.ndarray], outputs: list[np.ndarray], key: str) -> dict[str, float]:
    """Percent of positions where the arg-max of the first output matches the reference's."""
    ref, out = reference[0], outputs[0]
    if ref.shape != out.shape:
        raise ValueError(f"output shape {out.shape} differs from the reference's {ref.shape}")
    return {key: float(100.0 * np.mean(ref.argmax(-1) == out.argmax(-1)))}


def regression_agreement(reference: list[np.ndarray], outputs: list[np.ndarray]) -> dict[str, float]:
    """Relative L2 error (percent), max absolute error and PSNR (dB, on the reference's range) of output 0."""
    ref = reference[0].astype(np.float64)
    out = outputs[0].astype(np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"output shape {out.shape} differs from the reference's {ref.shape}")
    diff = out - ref
    rel = float(100.0 * np.linalg.norm(diff) / max(np.linalg.norm(ref), 1e-12))
    mse = float(np.mean(diff**2))
    peak = float(ref.max() - ref.min()) or 1.0
    psnr = float("inf") if mse == 0 else float(10.0 * np.log10(peak**2 / mse))
    return {"relative_error_pct": rel, "max_abs_error": float(np.abs(diff).max()), "psnr_db": psnr}
