"""Pruning stages: unstructured magnitude pruning and structured (channel / head / neuron) pruning.

- ``prune-unstructured`` zeroes individual weights with ``torch.nn.utils.prune`` (global or per-layer
  L1 magnitude), in one shot or gradually on Zhu & Gupta's cubic schedule with fine-tuning between
  steps, then makes the masks permanent. The tensors stay dense: ONNX Runtime, OpenVINO and dense
  TensorRT compute the zeros like any other weight, so this buys compressed size, not speed.
- ``prune-structured`` physically removes conv channels, attention heads and FFN neurons with
  torch-pruning's dependency graph (residual additions, grouped/depthwise convs, flatten and
  reshape are followed automatically), to a channel ratio or a MAC budget, in iterative steps with
  fine-tuning. The result is a smaller dense model that every backend runs faster.
"""

from __future__ import annotations

import math
import re
import zlib
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from effdl.compress import register_stage
from effdl.compress.base import ModelArtifact, Stage, StageConfig, StageContext
from effdl.compress.finetune import (
    FinetuneConfig,
    copy_module,
    example_args,
    finetune,
    heldout_metric,
    macs_of,
    param_count,
    train_batches,
)
from effdl.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from effdl.tasks import Task

DENSE_NOTE = (
    "unstructured sparsity: the zeros are stored and computed by dense backends (ONNX Runtime, OpenVINO CPU, "
    "TensorRT dense kernels), so latency does not improve; the gain is in compressed size"
)


# --- helpers shared by the pruning stages -------------------------------------------------------------


def _layer_types(kinds: list[str]) -> tuple[type, ...]:
    from torch import nn

    table: dict[str, tuple[type, ...]] = {"linear": (nn.Linear,), "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d)}
    return tuple(t for k in kinds for t in table[k])


def _excluded(name: str, patterns: list[str]) -> bool:
    return any(re.fullmatch(p, name) or re.search(p, name) for p in patterns)


def _check_patterns(patterns: list[str], field: str) -> None:
    for p in patterns:
        try:
            re.compile(p)
        except re.error as e:
            raise InputError(f"{field}: {p!r} is not a valid regular expression ({e})") from None


def prunable_layers(module: nn.Module, kinds: list[str], exclude: list[str]) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of every Linear / Conv layer of the given kinds whose name no ``exclude`` regex matches."""
    types = _layer_types(kinds)
    return [(n, m) for n, m in module.named_modules() if isinstance(m, types) and not _excluded(n, exclude)]


def output_layers(module: nn.Module, args: list[torch.Tensor]) -> list[nn.Module]:
    """The Linear / Conv layers whose output *is* a model output (classifier heads): their output width
    is fixed by the task, so structured pruning must never remove their output channels."""
    import torch
    from torch import nn

    produced: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, out: produced.append((mod, out)))
        for m in module.modules()
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)
    ]
    try:
        with torch.no_grad():
            out = module(*args)
    finally:
        for h in hooks:
            h.remove()
    outs = out if isinstance(out, tuple | list) else (out,)
    return [mod for mod, t in produced if any(t is o for o in outs)]


def weight_sparsity(module: nn.Module, layers: list[tuple[str, nn.Module]]) -> dict[str, Any]:
    """Fraction of exactly-zero weights per layer, over the pruned layers, and over all parameters."""
    per_layer: dict[str, float] = {}
    zeros = total = 0
    for name, layer in layers:
        w = layer.weight.detach()
        z = int((w == 0).sum())
        per_layer[name] = round(z / w.numel(), 4)
        zeros += z
        total += w.numel()
    all_zero = sum(int((p.detach() == 0).sum()) for p in module.parameters())
    all_total = param_count(module)
    return {
        "per_layer": per_layer,
        "pruned_layers": round(zeros / max(total, 1), 4),
        "all_parameters": round(all_zero / max(all_total, 1), 4),
        "zero_weights": zeros,
    }


def storage_sizes(module: nn.Module) -> dict[str, Any]:
    """Sizes of the parameters in three encodings: dense FP32, zlib-deflated dense (what a zip of the
    weights would take), and bitmap-sparse (non-zero values + one mask bit per element)."""
    import numpy as np

    dense = zipped = sparse = 0
    for p in module.parameters():
        a = p.detach().cpu().numpy().astype(np.float32, copy=False)
        dense += a.nbytes
        zipped += len(zlib.compress(a.tobytes(), 6))
        sparse += int(np.count_nonzero(a)) * a.itemsize + math.ceil(a.size / 8)
    return {
        "dense_fp32_bytes": dense,
        "zip_bytes": zipped,
        "sparse_bitmap_bytes": sparse,
        "method": "zip: zlib level 6 over each FP32 tensor; sparse: 4 bytes per non-zero + 1 bit per element",
    }


def cubic_schedule(final: float, steps: int, initial: float = 0.0) -> list[float]:
    """Zhu & Gupta (2017) gradual pruning: ``s_t = s_f + (s_i - s_f) * (1 - t/n)^3`` for ``t = 1..n``."""
    return [final + (initial - final) * (1 - t / steps) ** 3 for t in range(1, steps + 1)]


# --- prune-unstructured ---------------------------------------------------------------------------------


class UnstructuredConfig(StageConfig):
    """Options of ``prune-unstructured``."""

    sparsity: float = Field(0.5, gt=0, lt=1, description="Target fraction of zero weights in the pruned layers.")
    scope: Literal["global", "layer"] = Field(
        "global", description="global: one magnitude threshold over all layers; layer: the same fraction per layer."
    )
    schedule: Literal["oneshot", "gradual"] = Field(
        "oneshot", description="oneshot: prune once then fine-tune; gradual: Zhu & Gupta cubic schedule."
    )
    steps: int = Field(4, ge=1, description="Pruning steps of the gradual schedule (fine-tuning after each).")
    layers: list[Literal["linear", "conv"]] = Field(["linear", "conv"], description="Layer kinds to prune.")
    exclude: list[str] = Field(default_factory=list, description="Regexes of module names left dense.")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="Fine-tuning after each step.")


@register_stage
class PruneUnstructured(Stage):
    """Magnitude pruning of individual weights (torch.nn.utils.prune), masks made permanent."""

    name: ClassVar[str] = "prune-unstructured"
    kind: ClassVar[Literal["torch", "onnx"]] = "torch"
    Config: ClassVar[type[StageConfig]] = UnstructuredConfig
    default_output: ClassVar[str] = "fp32"
    summary: ClassVar[str] = "unstructured L1 magnitude pruning (global or per layer, one-shot or cubic schedule)"

    def apply(self, model: ModelArtifact, ctx: StageContext, output: str) -> tuple[ModelArtifact, dict[str, Any]]:
        import torch.nn.utils.prune as tprune

        cfg: UnstructuredConfig = self.config  # type: ignore[assignment]
        _check_patterns(cfg.exclude, "prune-unstructured.exclude")
        module = copy_module(model, self.name)
        layers = prunable_layers(module, cfg.layers, cfg.exclude)
        if not layers:
            raise InputError(f"prune-unstructured: no {'/'.join(cfg.layers)} layers to prune (exclude: {cfg.exclude})")
        size_before = storage_sizes(module)
        targets = [cfg.sparsity] if cfg.schedule == "oneshot" else cubic_schedule(cfg.sparsity, cfg.steps)
        params = [(m, "weight") for _, m in layers]
        history: list[dict[str, Any]] = []
        previous = 0.0
        for step, target in enumerate(targets, 1):
            if cfg.scope == "global":
                # A repeated global prune ranks only the weights still unpruned: give it the missing count.
                total = sum(m.weight.numel() for m, _ in params)
                done = sum(int((m.weight_mask == 0).sum()) for m, _ in params if hasattr(m, "weight_mask"))
                missing = max(0, round(target * total) - done)
                tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=missing)
            else:
                # A repeated per-layer prune applies ``amount`` to the weights still unpruned.
                amount = (target - previous) / (1 - previous)
                for m, name in params:
                    tprune.l1_unstructured(m, name, amount=amount)
            previous = target
            ctx.say(f"prune-unstructured step {step}/{len(targets)}: sparsity {target:.3f}, fine-tuning")
            ft = finetune(module, ctx.task, cfg.finetune, seed=ctx.seed + step)
            history.append({"step": step, "target_sparsity": round(target, 4), "finetune": ft})
        for m, name in params:
            tprune.remove(m, name)  # masks made permanent: plain dense weights with zeros, exportable as is
        sparsity = weight_sparsity(module, layers)
        size_after = storage_sizes(module)
        details = {
            "result": (
                f"{sparsity['pruned_layers']:.1%} of the weights of {len(layers)} layers zero "
                f"({sparsity['all_parameters']:.1%} of all parameters); zip {size_before['zip_bytes']:,} -> "
                f"{size_after['zip_bytes']:,} bytes; no speed-up on dense backends"
            ),
            "method": f"torch.nn.utils.prune L1 magnitude, {cfg.scope} scope, {cfg.schedule} schedule",
            "target_sparsity": cfg.sparsity,
            "sparsity": sparsity,
            "steps": history,
            "size_before": size_before,
            "size_after": size_after,
            "note": DENSE_NOTE,
        }
        return ModelArtifact(output, "torch", "fp32", module=module, lineage=[*model.lineage, self.name]), details


# --- prune-structured ------------------------------------------------------------------------------------


def zoo_attention_modules(module: nn.Module) -> list[nn.Module]:
    """Attention blocks of effdl's zoo (separate q/k/v/out projections, ``heads`` and ``head_dim`` attributes)."""
    from torch import nn

    return [
        m
        for m in module.modules()
        if all(isinstance(getattr(m, a, None), nn.Linear) for a in ("q_proj", "k_proj", "v_proj", "out_proj"))
        and isinstance(getattr(m, "heads", None), int)
        and isinstance(getattr(m, "head_dim", None), int)
    ]


def update_zoo_attention_heads(module: nn.Module) -> dict[str, int]:
    """After torch-pruning removed whole heads from the q/k/v projections, set each zoo attention's
    ``heads`` to the new count (its forward reshapes by ``heads``; ``head_dim`` stays, because only
    whole heads are removed). torch-pruning only edits the Linear layers; the zoo's hand-written
    attention keeps its head count in a plain attribute, hence this helper. Returns the heads per module."""
    counts: dict[str, int] = {}
    names = {id(m): n for n, m in module.named_modules()}
    for m in zoo_attention_modules(module):
        width = m.q_proj.out_features
        if width % m.head_dim or m.k_proj.out_features != width or m.v_proj.out_features != width:
            raise RuntimeError(
                f"{names[id(m)]}: q/k/v widths {width}/{m.k_proj.out_features}/{m.v_proj.out_features} are not "
                f"whole heads of {m.head_dim}; structured pruning broke the attention layout"
            )
        m.heads = width // m.head_dim
        counts[names[id(m)]] = m.heads
    return counts


def _layer_shapes(module: nn.Module) -> dict[str, list[int]]:
    from torch import nn

    shapes: dict[str, list[int]] = {}
    for n, m in module.named_modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            shapes[n] = [m.in_channels, m.out_channels]
        elif isinstance(m, nn.Linear):
            shapes[n] = [m.in_features, m.out_features]
    return shapes


def set_head_targets(pruner: Any, attn: list[nn.Module], initial: dict[nn.Module, int], fraction: float) -> None:
    """Tell torch-pruning how many heads to remove from each zoo attention in its next step.

    torch-pruning's local head pruning removes ``ceil(ratio * current_heads)`` heads per step, i.e. it
    applies the cumulative ratio to the heads that are left, which over-prunes (down to zero heads) in
    iterative pruning. This converts the wanted cumulative fraction of the *initial* heads into the
    per-step ratio that removes exactly the missing heads.
    """
    for a in attn:
        keep = max(1, round(initial[a] * (1 - fraction)))
        remove = a.heads - keep
        ratio = 0.0 if remove <= 0 else (remove - 0.5) / a.heads  # ceil(ratio * heads) == remove
        for proj in (a.q_proj, a.k_proj, a.v_proj):
            pruner.head_pruning_ratio_dict[proj] = [ratio] * (pruner.iterative_steps + 1)


class StructuredConfig(StageConfig):
    """Options of ``prune-structured``."""

    ratio: float = Field(0.5, gt=0, lt=1, description="Fraction of channels / neurons removed from each group.")
    head_ratio: float | None = Field(
        None, ge=0, lt=1, description="Fraction of attention heads removed (default: ratio; 0 keeps all heads)."
    )
    target_macs: float | None = Field(
        None, gt=0, lt=1, description="Prune until MACs <= this fraction of the input's MACs (replaces ratio)."
    )
    max_ratio: float = Field(0.9, gt=0, lt=1, description="No group loses more than this fraction (MAC mode).")
    importance: Literal["magnitude", "l1", "taylor"] = Field(
        "magnitude", description="magnitude (L2 of the group's weights), l1, or taylor (|weight x gradient|)."
    )
    taylor_batches: int = Field(4, ge=1, description="Train batches whose gradients feed Taylor importance.")
    steps: int = Field(1, ge=1, description="Iterative pruning steps, each followed by fine-tuning.")
    global_pruning: bool = Field(False, description="Rank groups globally (uneven widths) instead of per layer.")
    round_to: int | None = Field(None, ge=1, description="Keep channel counts multiples of this (SIMD-friendly).")
    ignore: list[str] = Field(
        default_factory=list, description="Regexes of module names never pruned (output layers always are kept)."
    )
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="Fine-tuning after each step.")

    @model_validator(mode="after")
    def _sane(self) -> StructuredConfig:
        if self.target_macs is not None and self.head_ratio is not None and self.head_ratio > self.max_ratio:
            raise ValueError("head_ratio must not exceed max_ratio")
        return self


def _importance(kind: str) -> Any:
    import torch_pruning as tp

    if kind == "magnitude":
        return tp.importance.MagnitudeImportance(p=2)
    if kind == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    return tp.importance.TaylorImportance()


def _taylor_gradients(module: nn.Module, task: Task, batches: int, batch_size: int, seed: int) -> None:
    """Accumulate ``task.loss`` gradients of a few train batches (eval mode: BN statistics untouched)."""
    module.eval()
    module.zero_grad(set_to_none=True)
    it = train_batches(task, batch_size, seed)
    for _ in range(batches):
        inputs, targets = next(it)
        task.loss(module(*inputs), targets).backward()  # type: ignore[arg-type]


@register_stage
class PruneStructured(Stage):
    """Dependency-aware removal of channels, heads and FFN neurons (torch-pruning), with fine-tuning."""

    name: ClassVar[str] = "prune-structured"
    kind: ClassVar[Literal["torch", "onnx"]] = "torch"
    Config: ClassVar[type[StageConfig]] = StructuredConfig
    default_output: ClassVar[str] = "fp32"
    summary: ClassVar[str] = "structured pruning of channels / heads / neurons (torch-pruning), fine-tuned"

    def apply(self, model: ModelArtifact, ctx: StageContext, output: str) -> tuple[ModelArtifact, dict[str, Any]]:
        try:
            import torch_pruning as tp
        except ImportError:
            raise InputError(
                "prune-structured needs torch-pruning", "pip install torch-pruning (it is an effdl dependency)"
            ) from None

        cfg: StructuredConfig = self.config  # type: ignore[assignment]
        _check_patterns(cfg.ignore, "prune-structured.ignore")
        task = ctx.task
        module = copy_module(model, self.name)
        args = example_args(task, 1)
        ignored = output_layers(module, args)
        ignored += [m for n, m in module.named_modules() if n and cfg.ignore and _excluded(n, cfg.ignore)]
        attn = zoo_attention_modules(module)
        num_heads: dict[nn.Module, int] = {}
        for a in attn:
            for proj in (a.q_proj, a.k_proj, a.v_proj):
                num_heads[proj] = a.heads
        head_ratio = cfg.ratio if cfg.head_ratio is None else cfg.head_ratio
        macs0, params0, shapes0 = macs_of(module, task), param_count(module), _layer_shapes(module)
        heads0 = {n: m.heads for n, m in module.named_modules() if m in attn}
        heads_init = {a: a.heads for a in attn}
        mac_mode = cfg.target_macs is not None
        if mac_mode and macs0 is None:
            raise InputError("prune-structured: target_macs needs MACs, but torch's FLOP counter cannot run this model")
        # MAC mode prunes in fine sub-steps up to max_ratio and stops each step once under its budget.
        sub_steps = 20 if mac_mode else cfg.steps
        module.eval()
        pruner = tp.pruner.BasePruner(
            module,
            args[0] if len(args) == 1 else tuple(args),
            importance=_importance(cfg.importance),
            pruning_ratio=cfg.max_ratio if mac_mode else cfg.ratio,
            iterative_steps=sub_steps,
            global_pruning=cfg.global_pruning,
            round_to=cfg.round_to,
            ignored_layers=ignored,
            num_heads=num_heads,
            prune_num_heads=bool(num_heads) and head_ratio > 0,
            prune_head_dims=False,
            head_pruning_ratio=head_ratio if num_heads else 0.0,  # per step: set_head_targets
        )

        head_target = min(head_ratio, cfg.max_ratio) if mac_mode else head_ratio

        def one_sub_step(seed: int) -> None:
            if attn and head_target > 0:
                # Heads follow the channel schedule (never past head_ratio), at least one head kept.
                channel_fraction = pruner.per_step_pruning_ratio[pruner.current_step + 1]
                set_head_targets(
                    pruner,
                    attn,
                    heads_init,
                    min(head_target, channel_fraction * head_target / (cfg.max_ratio if mac_mode else cfg.ratio)),
                )
            if cfg.importance == "taylor":
                _taylor_gradients(module, task, cfg.taylor_batches, cfg.finetune.batch_size, seed)
            pruner.step()
            module.zero_grad(set_to_none=True)
            update_zoo_attention_heads(module)

        history: list[dict[str, Any]] = []
        for step in range(1, cfg.steps + 1):
            if mac_mode:
                assert cfg.target_macs is not None and macs0 is not None
                budget = macs0 * (1 - step / cfg.steps * (1 - cfg.target_macs))
                while pruner.current_step < sub_steps and (macs_of(module, task) or 0) > budget:
                    one_sub_step(ctx.seed + pruner.current_step)
            else:
                one_sub_step(ctx.seed + step)
            macs = macs_of(module, task)
            ctx.say(f"prune-structured step {step}/{cfg.steps}: {macs or 0:,} MACs, fine-tuning")
            ft = finetune(module, task, cfg.finetune, seed=ctx.seed + step)
            history.append(
                {
                    "step": step,
                    "macs": macs,
                    "parameters": param_count(module),
                    "finetune": ft,
                    "heldout_metric": round(heldout_metric(module, task), 3),
                }
            )
        macs1 = macs_of(module, task)
        if mac_mode and macs1 is not None and macs0 and macs1 > cfg.target_macs * macs0 * 1.001:  # type: ignore[operator]
            ctx.say(f"prune-structured: max_ratio {cfg.max_ratio} stopped at {macs1 / macs0:.2f} of the MACs")
        shapes1 = _layer_shapes(module)
        heads1 = {n: m.heads for n, m in module.named_modules() if m in attn}
        channels = {n: {"before": shapes0[n], "after": shapes1[n]} for n in shapes1 if shapes1[n] != shapes0.get(n)}
        heads_text = ", ".join(f"{heads0[n]}->{heads1[n]}" for n in heads1)
        details = {
            "result": (
                f"MACs {macs0 or 0:,} -> {macs1 or 0:,}"
                + (f" ({macs1 / macs0:.0%})" if macs0 and macs1 else "")
                + f", params {params0:,} -> {param_count(module):,}"
                + (f", heads {heads_text}" if heads_text else "")
            ),
            "method": f"torch-pruning {getattr(tp, '__version__', '')} BasePruner, {cfg.importance} importance".strip(),
            "mode": f"target_macs {cfg.target_macs}" if mac_mode else f"ratio {cfg.ratio}",
            "head_ratio": head_ratio if num_heads else None,
            "macs_before": macs0,
            "macs_after": macs1,
            "mac_fraction": round(macs1 / macs0, 4) if macs0 and macs1 else None,
            "parameters_before": params0,
            "parameters_after": param_count(module),
            "ignored_layers": [n for n, m in module.named_modules() if m in ignored],
            "heads": {n: {"before": heads0[n], "after": heads1[n]} for n in heads1},
            "layers_changed": channels,
            "steps": history,
        }
        return ModelArtifact(output, "torch", "fp32", module=module, lineage=[*model.lineage, self.name]), details
