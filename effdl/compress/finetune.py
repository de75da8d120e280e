"""Shared helpers of the torch compression stages: copying the module, fine-tuning it on the task's
train split, and scoring it on the held-out split.

Pruning, 2:4 sparsity and distillation all need the same short training loop (AdamW, cosine
schedule, ``task.loss`` on the train split, optionally a different loss or a hook after every
optimizer step), so it lives here once.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from effdl.compress.base import ModelArtifact, StageConfig
from effdl.errors import InputError

if TYPE_CHECKING:
    import torch

    from effdl.tasks import Task

#: ``loss_fn(module, inputs, targets) -> loss``; the default is ``task.loss(module(*inputs), targets)``.
LossFn = Callable[["torch.nn.Module", list["torch.Tensor"], "torch.Tensor | None"], "torch.Tensor"]


class FinetuneConfig(StageConfig):
    """How a torch stage fine-tunes the model on the task's train split (AdamW, cosine learning rate)."""

    epochs: float = Field(1.0, ge=0, description="Passes over the train split (fractions allowed; 0 = no training).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (None: no cap).")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate (cosine decay to 5% of it).")
    batch_size: int = Field(64, ge=1, description="Samples per optimizer step.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    grad_clip: float | None = Field(1.0, gt=0, description="Clip the gradients' global L2 norm (None: no clipping).")


def copy_module(model: ModelArtifact, stage: str) -> torch.nn.Module:
    """A trainable deep copy of ``model.module``, so the stage never changes the input (it may be the teacher)."""
    import torch

    if model.kind != "torch" or not isinstance(model.module, torch.nn.Module):
        raise InputError(
            f"{stage}: needs a torch nn.Module to work on, got a {model.kind} model {model.name!r}",
            "load the checkpoint as safetensors/state_dict + architecture (a .pt2 program cannot be trained)",
        )
    module = copy.deepcopy(model.module)
    for p in module.parameters():
        p.requires_grad_(True)
    return module.eval()


def train_batches(task: Task, batch_size: int, seed: int) -> Iterator[tuple[list[torch.Tensor], torch.Tensor | None]]:
    """Endless shuffled batches of the train split as torch tensors (a new permutation every epoch)."""
    import torch

    data = task.split("train")
    if len(data) == 0:
        raise InputError(f"task {task.name!r} has an empty train split: cannot fine-tune")
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(data))
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            inputs = [torch.from_numpy(data.inputs[n][idx]) for n in task.input_names]
            targets = torch.from_numpy(data.targets[idx]) if data.targets is not None else None
            yield inputs, targets


def steps_for(task: Task, cfg: FinetuneConfig) -> int:
    """Optimizer steps that ``cfg`` asks for on ``task``'s train split."""
    per_epoch = max(1, math.ceil(len(task.split("train")) / cfg.batch_size))
    steps = math.ceil(cfg.epochs * per_epoch)
    return min(steps, cfg.max_steps) if cfg.max_steps is not None else steps


def finetune(
    module: torch.nn.Module,
    task: Task,
    cfg: FinetuneConfig,
    *,
    seed: int = 0,
    loss_fn: LossFn | None = None,
    extra_params: Iterable[torch.nn.Parameter] = (),
    after_step: Callable[[], None] | None = None,
    before_step: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train ``module`` in place for ``cfg``'s budget; returns steps, mean loss of the last 20 steps and seconds.

    ``loss_fn`` replaces the task loss (distillation); ``extra_params`` are trained alongside (e.g. hint
    projections); ``before_step`` runs after ``backward()`` and before the optimizer step (e.g. to mask
    gradients); ``after_step`` runs after each optimizer step (e.g. to re-apply fixed sparsity masks).
    """
    import torch

    steps = steps_for(task, cfg)
    start = time.perf_counter()
    if steps == 0:
        return {"steps": 0, "final_loss": None, "seconds": 0.0}
    torch.manual_seed(seed)
    params = [p for p in module.parameters() if p.requires_grad] + list(extra_params)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=0.05 * cfg.lr)
    extra_loss = getattr(module, "extra_loss", None)
    losses: list[float] = []
    module.train()
    batches = train_batches(task, cfg.batch_size, seed)
    for _ in range(steps):
        inputs, targets = next(batches)
        if loss_fn is None:
            loss = task.loss(module(*inputs), targets)  # type: ignore[arg-type]
        else:
            loss = loss_fn(module, inputs, targets)
        if callable(extra_loss):
            loss = loss + extra_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if before_step is not None:
            before_step()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        if after_step is not None:
            after_step()
        losses.append(float(loss.detach()))
    module.eval()
    return {
        "steps": steps,
        "final_loss": float(np.mean(losses[-20:])),
        "seconds": round(time.perf_counter() - start, 2),
    }


def heldout_metric(module: torch.nn.Module, task: Task, samples: int | None = None) -> float:
    """The task metric of ``module`` on (the first ``samples`` of) the held-out split, in eval mode."""
    from effdl.export import torch_outputs

    held = task.split("heldout").take(samples)
    module.eval()
    return float(task.score(torch_outputs(module, task, held.inputs), held.targets))


def example_args(task: Task, batch: int = 1) -> list[torch.Tensor]:
    """One batch of the task's calibration inputs as torch tensors (for tracing and MAC counting)."""
    import torch

    ex = task.example_inputs(batch)
    return [torch.from_numpy(ex[n]) for n in task.input_names]


def macs_of(module: torch.nn.Module, task: Task) -> int | None:
    """MACs of one sample (torch's FLOP counter / 2), None when the counter cannot run the module."""
    from effdl.zoo.profile import count_macs

    try:
        return count_macs(module, task.example_inputs(1), task.input_names)
    except Exception:  # some custom modules trip torch's FLOP counter; MACs are then unknown
        return None


def param_count(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))
