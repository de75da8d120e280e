"""``sparsity-24``: N:M semi-structured sparsity (2:4 by default), fine-tuned with the masks fixed.

In every group of ``m`` consecutive weights along the input dimension, only the ``n`` largest in
magnitude are kept. NVIDIA's sparse tensor cores (TensorRT with sparse weights enabled, torch's
``to_sparse_semi_structured`` / cuSPARSELt, which effdl's torch backend uses with ``sparse_24``) run
2:4 weights at up to twice the dense throughput. ONNX Runtime and OpenVINO on the CPU run them as
dense weights: no speed gain there, only the sparsity (and compressed size).

Masks are applied with ``torch.nn.utils.prune.custom_from_mask`` so that fine-tuning keeps them fixed,
then made permanent. The stage details name every layer that has the pattern (and whether cuSPARSELt
can take its shape), which is what a semi-structured backend needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from effdl.compress import register_stage
from effdl.compress.base import ModelArtifact, Stage, StageConfig, StageContext
from effdl.compress.finetune import FinetuneConfig, copy_module, finetune
from effdl.compress.prune import _check_patterns, storage_sizes, weight_sparsity
from effdl.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest-magnitude weights of every ``m`` consecutive ones along the input dimension.

    Linear ``(out, in)``: groups along ``in``. Conv ``(out, in, *k)``: groups along ``in`` for every
    output channel and kernel position (the layout TensorRT's sparse convolutions expect).
    """
    import torch

    w = weight.detach()
    if w.ndim == 2:
        perm = w
    else:  # (out, in, *k) -> (out, *k, in): groups of m input channels per kernel position
        perm = w.movedim(1, -1)
    groups = perm.abs().reshape(-1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.topk(n, dim=1).indices, True)
    mask = keep.reshape(perm.shape)
    return (mask if w.ndim == 2 else mask.movedim(-1, 1)).to(w.dtype).contiguous()


def has_nm_pattern(weight: torch.Tensor, n: int, m: int) -> bool:
    """Whether at most ``n`` of every ``m`` weights along the input dimension are non-zero."""
    w = weight.detach()
    perm = w if w.ndim == 2 else w.movedim(1, -1)
    if perm.shape[-1] % m:
        return False
    return bool(((perm != 0).reshape(-1, m).sum(1) <= n).all())


class NMSparsityConfig(StageConfig):
    """Options of ``sparsity-24``."""

    n: int = Field(2, ge=1, description="Non-zeros kept per group.")
    m: int = Field(4, ge=2, description="Group size along the input dimension.")
    layers: list[Literal["linear", "conv"]] = Field(["linear"], description="Layer kinds to sparsify.")
    exclude: list[str] = Field(default_factory=list, description="Regexes of module names left dense.")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="Fine-tuning with masks fixed.")

    @model_validator(mode="after")
    def _n_below_m(self) -> NMSparsityConfig:
        if self.n >= self.m:
            raise ValueError(f"n ({self.n}) must be smaller than m ({self.m})")
        return self


def _eligible(layer: nn.Module, m: int) -> str | None:
    from torch import nn

    if isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Conv3d) and layer.groups != 1:
        return f"grouped/depthwise conv (groups={layer.groups}): no dense input dimension to group"
    width = layer.weight.shape[1]
    if width % m:
        return f"input width {width} is not a multiple of {m}"
    return None


@register_stage
class SparsityNM(Stage):
    """N:M (2:4) semi-structured weight sparsity with masks fixed during fine-tuning."""

    name: ClassVar[str] = "sparsity-24"
    kind: ClassVar[Literal["torch", "onnx"]] = "torch"
    Config: ClassVar[type[StageConfig]] = NMSparsityConfig
    default_output: ClassVar[str] = "fp32"
    summary: ClassVar[str] = "N:M (2:4) semi-structured sparsity, fine-tuned with fixed masks"

    def apply(self, model: ModelArtifact, ctx: StageContext, output: str) -> tuple[ModelArtifact, dict[str, Any]]:
        import torch.nn.utils.prune as tprune

        from effdl.backends.torch import sparse_24_reason
        from effdl.compress.prune import prunable_layers

        cfg: NMSparsityConfig = self.config  # type: ignore[assignment]
        _check_patterns(cfg.exclude, "sparsity-24.exclude")
        module = copy_module(model, self.name)
        candidates = prunable_layers(module, cfg.layers, cfg.exclude)
        chosen: list[tuple[str, nn.Module]] = []
        skipped: dict[str, str] = {}
        for name, layer in candidates:
            reason = _eligible(layer, cfg.m)
            if reason:
                skipped[name] = reason
            else:
                chosen.append((name, layer))
        if not chosen:
            raise InputError(
                f"sparsity-24: no {'/'.join(cfg.layers)} layer can take a {cfg.n}:{cfg.m} pattern "
                f"({'; '.join(f'{k}: {v}' for k, v in skipped.items()) or 'no such layers'})"
            )
        size_before = storage_sizes(module)
        for _, layer in chosen:
            tprune.custom_from_mask(layer, "weight", nm_mask(layer.weight, cfg.n, cfg.m))
        ctx.say(f"sparsity-24: {cfg.n}:{cfg.m} masks on {len(chosen)} layers, fine-tuning with masks fixed")
        ft = finetune(module, ctx.task, cfg.finetune, seed=ctx.seed)
        for _, layer in chosen:
            tprune.remove(layer, "weight")
        broken = [n for n, layer in chosen if not has_nm_pattern(layer.weight, cfg.n, cfg.m)]
        if broken:  # cannot happen with fixed masks; a failure here is a bug, not a user error
            raise RuntimeError(f"sparsity-24: layers lost their {cfg.n}:{cfg.m} pattern: {broken}")
        pattern = f"{cfg.n}:{cfg.m}"
        layers_meta: dict[str, dict[str, Any]] = {}
        for name, layer in chosen:
            w = layer.weight.detach()
            entry: dict[str, Any] = {
                "pattern": pattern,
                "shape": list(w.shape),
                "group_axis": "input",
                "op": type(layer).__name__,
            }
            if w.ndim == 2 and pattern == "2:4":
                entry["cusparselt"] = sparse_24_reason(w.float().cpu().numpy()) or "ok"
            layers_meta[name] = entry
        sparsity = weight_sparsity(module, chosen)
        details = {
            "result": (
                f"{pattern} on {len(chosen)} layers ({sparsity['pruned_layers']:.0%} of their weights zero), "
                f"{len(skipped)} skipped; dense on CPU backends"
            ),
            "method": f"{pattern} magnitude masks (torch.nn.utils.prune.custom_from_mask), fixed during fine-tuning",
            "pattern": pattern,
            "semi_structured_layers": layers_meta,
            "skipped_layers": skipped,
            "sparsity": sparsity,
            "finetune": ft,
            "size_before": size_before,
            "size_after": storage_sizes(module),
            "backends": (
                "2:4 kernels: TensorRT (sparse weights builder flag) and the torch backend's sparse_24 option "
                "(cuSPARSELt, CUDA, fp16/bf16). ONNX Runtime and OpenVINO CPU run these weights dense: no speed gain."
            ),
        }
        return ModelArtifact(output, "torch", "fp32", module=module, lineage=[*model.lineage, self.name]), details
