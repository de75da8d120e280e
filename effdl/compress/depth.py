"""Depth pruning: ``prune-depth`` removes whole residual blocks, then fine-tunes.

Channel pruning (``prune-structured``) keeps every layer and makes each one narrower. At batch 1 on a CPU
with AMX or VNNI kernels, a narrow layer does not cost proportionally less: the INT8 kernels work on blocks
of 16-64 channels and each layer has a fixed cost per call, so a quarter of the MACs can take half the time
(see docs/pruning.md). Removing whole blocks keeps the remaining layers' kernels as efficient as before, the
observation behind depth pruning of Transformers (Kim et al. 2024, "Shortened LLaMA"; Men et al. 2024,
"ShortGPT"). The two compose: ``prune-depth`` then ``prune-structured``, then ``distill`` and ``quantize``.

A removable block is a residual block whose output is its input plus a branch: the zoo's ``BasicBlock``
(ResNets; a block with a projection shortcut becomes ``ReLU(shortcut(x))``, its branch is dropped) and the
zoo's Transformer ``Block`` (becomes the identity). Blocks are removed greedily, one per round, then the
model is fine-tuned on the task. The default ranking removes each remaining candidate in turn from a copy,
fine-tunes the copy briefly (``probe_steps``) and keeps the removal with the lowest task loss on calibration
samples: one-shot criteria (the ``reconstruction`` ranking: the relative squared output change, as in
block-influence ranking) mis-rank blocks whose work the next block easily takes over. On the default
resnet8 the full-resolution first block changes the outputs most when bypassed (relative error 1.0 vs
0.45 for the last block) yet, removed and fine-tuned, costs less accuracy (99.0% vs 98.4% after the full
recipe) and saves more time.

No library does this for arbitrary torch modules (torch-pruning removes channels, not blocks), hence the
few lines here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from effdl.compress import register_stage
from effdl.compress.base import ModelArtifact, Stage, StageConfig, StageContext
from effdl.compress.finetune import FinetuneConfig, copy_module, finetune, heldout_metric, macs_of, param_count
from effdl.compress.prune import _check_patterns
from effdl.errors import InputError

if TYPE_CHECKING:
    from torch import nn


def _skip_module(block: nn.Module) -> nn.Module:
    """What replaces ``block`` when it is removed: the identity, or its projection shortcut (then ReLU)."""
    from torch import nn

    from effdl.compress.depth_nn import SkippedBlock

    shortcut = getattr(block, "shortcut", None)
    return SkippedBlock(None if shortcut is None or isinstance(shortcut, nn.Identity) else shortcut)


def residual_blocks(module: nn.Module) -> list[str]:
    """Names of the blocks ``prune-depth`` can remove, in model order (zoo ``BasicBlock`` and ``Block``)."""
    from effdl.zoo.cnn import BasicBlock
    from effdl.zoo.transformer import Block

    return [name for name, sub in module.named_modules() if name and isinstance(sub, BasicBlock | Block)]


def _replace(module: nn.Module, name: str, new: nn.Module) -> nn.Module:
    parent_name, _, child = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    old = parent.get_submodule(child)
    setattr(parent, child, new)  # also for ModuleList / Sequential items, whose names are "0", "1", ...
    return old


class DepthConfig(StageConfig):
    """Options of ``prune-depth``."""

    blocks: int = Field(1, ge=1, description="Residual blocks removed.")
    only: list[str] = Field(
        default_factory=list, description="Regexes: only blocks whose module name matches one are candidates."
    )
    ranking: Literal["finetuned", "reconstruction", "last"] = Field(
        "finetuned",
        description="finetuned: greedily drop the block after whose removal and a short probe fine-tune "
        "(probe_steps) the calibration loss is lowest; reconstruction: the block whose removal changes the "
        "outputs least, without training; last: the last candidates (a fixed choice, for comparison).",
    )
    probe_steps: int = Field(
        50, ge=1, description="Fine-tuning steps of each candidate's probe (ranking finetuned), one epoch at most."
    )
    per_mac: bool = Field(
        False,
        description="Rank by score increase per MAC the removal saves (benefit / cost) instead of by score alone: "
        "prefers removing expensive blocks, e.g. a ResNet's full-resolution stage.",
    )
    calibration_samples: int = Field(200, ge=1, description="Calibration samples scoring each removal.")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="Fine-tuning after the removal.")


def _calibration_loss(module: nn.Module, task: Any, data: Any) -> float:
    """The task loss of ``module`` on a labelled split."""
    import torch

    from effdl.export import torch_outputs

    out = torch.from_numpy(torch_outputs(module, task, data.inputs)[0])
    return round(float(task.loss(out, torch.from_numpy(data.targets))), 6)


@register_stage
class PruneDepth(Stage):
    """Removal of whole residual blocks (depth pruning), ranked by a probe fine-tune or the output change."""

    name: ClassVar[str] = "prune-depth"
    kind: ClassVar[Literal["torch", "onnx"]] = "torch"
    Config: ClassVar[type[StageConfig]] = DepthConfig
    default_output: ClassVar[str] = "fp32"
    summary: ClassVar[str] = "depth pruning: removes whole residual blocks, fine-tuned"

    def apply(self, model: ModelArtifact, ctx: StageContext, output: str) -> tuple[ModelArtifact, dict[str, Any]]:
        import copy

        import numpy as np

        from effdl.export import torch_outputs

        cfg: DepthConfig = self.config  # type: ignore[assignment]
        _check_patterns(cfg.only, "prune-depth.only")
        module = copy_module(model, self.name)
        candidates = [n for n in residual_blocks(module) if not cfg.only or any(re.search(p, n) for p in cfg.only)]
        if len(candidates) < cfg.blocks:
            raise InputError(
                f"prune-depth: blocks {cfg.blocks} asks for more than the {len(candidates)} removable residual "
                f"blocks of this model ({', '.join(candidates) or 'none'})",
                "removable blocks are the zoo's ResNet BasicBlocks and Transformer Blocks; lower `blocks` or "
                "widen `only`",
            )
        task = ctx.task
        data = task.split("calibration").take(cfg.calibration_samples)
        module.eval()
        reference = torch_outputs(module, task, data.inputs)[0].astype(np.float64)
        norm = float(np.mean(reference**2)) or 1.0

        def change(m: nn.Module = module) -> float:  # relative squared error of the output vs the unpruned model's
            return round(float(np.mean((torch_outputs(m, task, data.inputs)[0] - reference) ** 2)) / norm, 6)

        def without(name: str) -> nn.Module:
            """A copy of the current model with block ``name`` removed."""
            trial = copy.deepcopy(module)
            _replace(trial, name, _skip_module(trial.get_submodule(name)))
            return trial

        def probe(name: str) -> float:
            """Calibration loss (or, without labels, output change) after removing ``name`` and a short fine-tune."""
            trial = without(name)
            probe_cfg = cfg.finetune.model_copy(update={"epochs": 1.0, "max_steps": cfg.probe_steps})
            finetune(trial, task, probe_cfg, seed=ctx.seed)
            if data.targets is None:
                return change(trial)
            return _calibration_loss(trial, task, data)

        macs0, params0 = macs_of(module, task), param_count(module)
        metric0 = heldout_metric(module, task)
        removed: list[dict[str, Any]] = []
        per_mac: dict[int, dict[str, Any]] = {}
        if cfg.per_mac and macs0 is None:
            raise InputError("prune-depth: per_mac needs MACs, but torch's FLOP counter cannot run this model")
        base_score = 0.0  # the unpruned model's score: what each removal's score increase is measured from
        if cfg.per_mac and cfg.ranking == "finetuned" and data.targets is not None:
            base_score = _calibration_loss(module, task, data)
        macs_now = macs0

        def saved_macs(name: str) -> int:
            return max(1, (macs_now or 0) - (macs_of(without(name), task) or 0))

        for round_ in range(cfg.blocks):
            scores: dict[str, float] = {}
            if cfg.ranking == "last":
                choice = candidates[-1]
            else:
                for name in candidates:
                    if cfg.ranking == "finetuned":
                        scores[name] = probe(name)
                    else:
                        block = _replace(module, name, _skip_module(module.get_submodule(name)))
                        scores[name] = change()
                        _replace(module, name, block)
                if cfg.per_mac:
                    cost = {n: saved_macs(n) for n in candidates}
                    ranked = {n: (scores[n] - base_score) / cost[n] for n in candidates}
                    per_mac[round_] = {
                        n: {"saved_macs": cost[n], "score_per_mmac": round(1e6 * v, 6)} for n, v in ranked.items()
                    }
                    choice = min(ranked, key=ranked.__getitem__)
                else:
                    choice = min(scores, key=scores.__getitem__)
            _replace(module, choice, _skip_module(module.get_submodule(choice)))
            candidates.remove(choice)
            macs_now = macs_of(module, task)
            removed.append(
                {"block": choice, "score": scores.get(choice), "scores": scores, "per_mac": per_mac.get(round_)}
            )
            ctx.say(f"prune-depth: removed {choice} (round {round_ + 1}/{cfg.blocks})")
        metric_removed = heldout_metric(module, task)
        ctx.say(f"prune-depth: fine-tuning without {', '.join(r['block'] for r in removed)}")
        ft = finetune(module, task, cfg.finetune, seed=ctx.seed)
        macs1 = macs_of(module, task)
        details = {
            "result": (
                f"removed {', '.join(r['block'] for r in removed)}; MACs {macs0 or 0:,} -> {macs1 or 0:,}"
                + (f" ({macs1 / macs0:.0%})" if macs0 and macs1 else "")
                + f", params {params0:,} -> {param_count(module):,}"
            ),
            "method": f"greedy block removal, {cfg.ranking} ranking on {len(data)} calibration samples"
            + (f" ({cfg.probe_steps} probe fine-tuning steps per candidate)" if cfg.ranking == "finetuned" else "")
            + (", per MAC saved" if cfg.per_mac else ""),
            "score": {
                "finetuned": "task loss on the calibration samples after the removal and the probe fine-tune "
                "(relative squared output error where the task has no labels)",
                "reconstruction": "relative squared error of the output against the unpruned model's",
                "last": None,
            }[cfg.ranking],
            "removed": removed,
            "macs_before": macs0,
            "macs_after": macs1,
            "parameters_before": params0,
            "parameters_after": param_count(module),
            "heldout_metric": {
                "before": round(metric0, 3),
                "blocks_removed": round(metric_removed, 3),
                "finetuned": round(heldout_metric(module, task), 3),
            },
            "finetune": ft,
        }
        return ModelArtifact(output, "torch", "fp32", module=module, lineage=[*model.lineage, self.name]), details
