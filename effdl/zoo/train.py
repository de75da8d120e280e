"""Reproducible training of zoo models on their task (``effdl zoo train``)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effdl.tasks import Task, get_task
from effdl.zoo.registry import TrainRecipe, ZooEntry


@dataclass
class TrainResult:
    model: torch.nn.Module
    task: Task
    config: dict[str, Any]
    metric: float
    seconds: float
    epochs: int


def evaluate_torch(model: torch.nn.Module, task: Task, split: str = "heldout", batch_size: int = 256) -> float:
    """The task metric of a torch model on a split (eval mode, no grad)."""
    model.eval()
    outs: list[list[np.ndarray]] = []
    data = task.split(split)  # type: ignore[arg-type]
    with torch.inference_mode():
        for inputs, _ in data.batches(batch_size):
            y = model(*[torch.from_numpy(inputs[n]) for n in task.input_names])
            ys = y if isinstance(y, tuple | list) else (y,)
            outs.append([t.numpy() for t in ys])
    merged = [np.concatenate([o[i] for o in outs]) for i in range(len(outs[0]))]
    return task.score(merged, data.targets)


def train_entry(
    entry: ZooEntry,
    *,
    overrides: dict[str, Any] | None = None,
    epochs: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
    task_options: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``entry`` on its task from a fixed seed; returns the model and its held-out metric.

    ``task_options`` update the entry's own task options (e.g. ``{"n_train": 256}`` for a quick run).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = entry.config(**(overrides or {}))
    model = entry.build(**(overrides or {}))
    task = get_task(entry.task, **{**entry.task_options, **(task_options or {})})
    recipe: TrainRecipe = entry.train
    n_epochs = recipe.epochs if epochs is None else epochs
    start = time.perf_counter()
    if entry.train_fn is not None:
        entry.train_fn(model, task, recipe, n_epochs, rng, progress)
    else:
        supervised_loop(model, task, recipe, n_epochs, rng, progress)
    metric = evaluate_torch(model, task)
    return TrainResult(model.eval(), task, config, metric, time.perf_counter() - start, n_epochs)


def supervised_loop(
    model: torch.nn.Module,
    task: Task,
    recipe: TrainRecipe,
    n_epochs: int,
    rng: np.random.Generator,
    progress: Callable[[int, int, float], None] | None = None,
) -> None:
    """The generic loop: AdamW with a one-cycle schedule on ``task.loss`` of the train split.

    A model may add a regulariser (a VAE's KL term, an MoE's load-balancing loss) by defining
    ``extra_loss()``, called after each forward pass in training mode and added to the task loss.
    """
    data = task.split("train")
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = max(1, -(-len(data) // recipe.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=max(1, n_epochs * steps_per_epoch))
    extra_loss = getattr(model, "extra_loss", None)
    for epoch in range(n_epochs):
        model.train()
        order = rng.permutation(len(data))
        total = 0.0
        for i in range(0, len(order), recipe.batch_size):
            idx = order[i : i + recipe.batch_size]
            inputs = [torch.from_numpy(data.inputs[n][idx]) for n in task.input_names]
            targets = torch.from_numpy(data.targets[idx]) if data.targets is not None else None
            loss = task.loss(model(*inputs), targets)  # type: ignore[arg-type]
            if callable(extra_loss):
                loss = loss + extra_loss()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if progress:
            progress(epoch + 1, n_epochs, total / len(order))


def save_trained(result: TrainResult, entry: ZooEntry, path: str | Path, *, seed: int = 0) -> Path:
    """Write a trained zoo model as ``effdl zoo train`` does: safetensors + JSON sidecar with how it was trained."""
    from effdl.sources import save_checkpoint

    return save_checkpoint(
        result.model,
        path,
        arch=entry.name,
        config=result.config,
        task=entry.task,
        task_options=entry.task_options,
        extra={
            "trained": {
                "metric": result.task.metric.name,
                "value": result.metric,
                "unit": result.task.metric.unit,
                "split": "heldout",
                "epochs": result.epochs,
                "seed": seed,
                "seconds": round(result.seconds, 1),
                "recipe": dataclasses.asdict(entry.train),
            }
        },
    )


def trained_with_defaults(path: str | Path, entry: ZooEntry, *, seed: int = 0) -> bool:
    """Whether ``path`` (with its JSON sidecar) holds ``entry`` trained at its default size and recipe from ``seed``.

    Used to reuse a cached checkpoint: the architecture, config, task and its options, epochs and seed recorded
    by :func:`save_trained` must all equal what training ``entry`` now would use, and so must the training
    recipe (lr, batch size, ...) where the sidecar records it (checkpoints written before it did are accepted).
    """
    p = Path(path)
    side = p.with_suffix(".json")
    if not (p.is_file() and side.is_file()):
        return False
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        return False
    trained = meta.get("trained") or {}
    return (
        meta.get("arch") == entry.name
        and meta.get("config") == json.loads(json.dumps(entry.config()))
        and meta.get("task") == entry.task
        and (meta.get("task_options") or {}) == json.loads(json.dumps(entry.task_options))
        and trained.get("epochs") == entry.train.epochs
        and trained.get("seed") == seed
        and trained.get("recipe", dataclasses.asdict(entry.train)) == dataclasses.asdict(entry.train)
    )
