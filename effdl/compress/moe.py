"""Mixture-of-experts slimming (stage ``moe-slim``): expert pruning, top-k reduction, dynamic skipping of
low-weight secondary experts, expert merging, each optionally followed by logit distillation.

An MoE layer is any module with a ``router`` (``nn.Linear(dim, num_experts)``), an ``experts``
``nn.ModuleList`` of MLPs with ``fc1`` / ``fc2`` and an integer ``top_k`` (the zoo's
:class:`effdl.zoo.moe.MoEFeedForward`). Pruning drops experts and their router rows, so the softmax over
the remaining logits renormalises the routing by construction. Statistics (tokens per expert, mean
experts per token) come from the task's calibration split, never the held-out split.

No library covers MoE slimming of arbitrary torch modules (torch-pruning prunes channels, not experts;
the MoE pruning papers ship model-specific scripts), so the algorithms are written here.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from effdl.compress import register_stage
from effdl.compress.base import ModelArtifact, Stage, StageConfig, StageContext
from effdl.errors import InputError


def moe_layers(module: Any) -> list[tuple[str, Any]]:
    """``(name, layer)`` of every MoE layer in ``module`` (router + experts + top_k), in order."""
    return [
        (n, m)
        for n, m in module.named_modules()
        if hasattr(m, "router") and hasattr(m, "experts") and isinstance(getattr(m, "top_k", None), int)
    ]


def clone_module(module: Any) -> Any:
    """``copy.deepcopy`` of a module, minus any training-time ``aux_loss`` tensor left on its submodules
    (a non-leaf tensor from the last training forward, which deepcopy refuses); the original keeps it."""
    stash = [(m, m.aux_loss) for m in module.modules() if getattr(m, "aux_loss", None) is not None]
    for m, _ in stash:
        m.aux_loss = None
    try:
        return copy.deepcopy(module)
    finally:
        for m, v in stash:
            m.aux_loss = v


def _require_moe(module: Any) -> list[tuple[str, Any]]:
    layers = moe_layers(module)
    if not layers:
        raise InputError(
            "moe-slim: the model has no MoE layer (a module with `router`, `experts` and `top_k`)",
            "use a mixture-of-experts model such as the zoo's moe_transformer",
        )
    return layers


def _batches(task: Any, split: str, samples: int | None, batch: int = 64) -> list[list[Any]]:
    import torch

    data = task.split(split).take(samples)
    return [[torch.from_numpy(x[n]) for n in task.input_names] for x, _ in data.batches(batch)]


def capture_layer_inputs(module: Any, task: Any, samples: int | None = None) -> dict[str, Any]:
    """The flattened token inputs ``(tokens, dim)`` of every MoE layer over the calibration split."""
    import torch

    grabbed: dict[str, list[Any]] = {}
    hooks = []
    for name, layer in moe_layers(module):
        grabbed[name] = []
        hooks.append(
            layer.register_forward_pre_hook(
                lambda _m, args, name=name: grabbed[name].append(args[0].detach().reshape(-1, args[0].shape[-1]))
            )
        )
    module.eval()
    try:
        with torch.inference_mode():
            for args in _batches(task, "calibration", samples):
                module(*args)
    finally:
        for h in hooks:
            h.remove()
    return {n: torch.cat(v) for n, v in grabbed.items()}


def routing_counts(layer: Any, x: Any) -> np.ndarray:
    """Tokens routed to each expert of ``layer`` (non-zero routing weight) for the token inputs ``x``."""
    import torch

    with torch.inference_mode():
        return (layer.routing(x) > 0).sum(0).numpy().astype(np.int64)


def _layer_out(layer: Any, x: Any) -> Any:
    import torch

    with torch.inference_mode():
        return layer.forward_dense(x) if hasattr(layer, "forward_dense") else layer(x)


def prune_layer(layer: Any, keep: list[int]) -> None:
    """Keep only the experts ``keep`` (in that order) and their router rows; ``top_k`` is capped at their number."""
    import torch
    from torch import nn

    if not keep:
        raise InputError("moe-slim: an MoE layer must keep at least one expert")
    old = layer.router
    router = nn.Linear(old.in_features, len(keep), bias=old.bias is not None)
    with torch.no_grad():
        router.weight.copy_(old.weight[keep])
        if old.bias is not None:
            router.bias.copy_(old.bias[keep])
    layer.router = router
    layer.experts = nn.ModuleList(layer.experts[i] for i in keep)
    layer.num_experts = len(keep)
    layer.top_k = min(layer.top_k, len(keep))


def rank_by_reconstruction(layer: Any, x: Any, n_keep: int) -> tuple[list[int], list[float]]:
    """Greedy backward elimination: repeatedly drop the expert whose removal changes the layer's output on
    ``x`` least (mean squared error vs the unpruned layer). Returns the kept experts and the error after
    each removal."""
    import torch

    ref = _layer_out(layer, x)
    keep = list(range(layer.num_experts))
    errors: list[float] = []
    while len(keep) > n_keep:
        best: tuple[float, int] | None = None
        for e in keep:
            trial = clone_module(layer)
            prune_layer(trial, [i for i in keep if i != e])
            err = float(torch.mean((_layer_out(trial, x) - ref) ** 2))
            if best is None or err < best[0]:
                best = (err, e)
        assert best is not None
        keep.remove(best[1])
        errors.append(best[0])
    return keep, errors


def _expert_vector(expert: Any) -> Any:
    import torch

    return torch.cat([expert.fc1.weight.flatten(), expert.fc1.bias.flatten(), expert.fc2.weight.t().flatten()]).detach()


def merge_layer(layer: Any, n_experts: int, usage: np.ndarray) -> list[list[int]]:
    """Merge the most cosine-similar experts pairwise until ``n_experts`` remain.

    A merged expert's weights are the usage-weighted average of its members'. Its router row is the
    usage-weighted average of theirs too, so tokens that went to any member now go to the merge.
    Returns the groups of original experts behind each remaining expert.
    """
    import torch
    from torch import nn

    groups = [[i] for i in range(layer.num_experts)]
    weight = [float(u) + 1.0 for u in usage]  # +1: experts unseen in calibration still count a little
    experts = [clone_module(e) for e in layer.experts]
    rows = [layer.router.weight[i].detach().clone() for i in range(layer.num_experts)]
    while len(experts) > n_experts:
        vecs = torch.stack([_expert_vector(e) for e in experts])
        vecs = vecs / vecs.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sim = vecs @ vecs.t()
        sim.fill_diagonal_(-2.0)
        a, b = divmod(int(sim.argmax()), len(experts))
        wa, wb = weight[a] / (weight[a] + weight[b]), weight[b] / (weight[a] + weight[b])
        with torch.no_grad():
            for pa, pb in zip(experts[a].parameters(), experts[b].parameters(), strict=True):
                pa.mul_(wa).add_(pb, alpha=wb)
        rows[a] = wa * rows[a] + wb * rows[b]
        groups[a] += groups[b]
        weight[a] += weight[b]
        for lst in (experts, rows, groups, weight):
            del lst[b]
    router = nn.Linear(layer.router.in_features, len(experts), bias=False)
    with torch.no_grad():
        router.weight.copy_(torch.stack(rows))
    layer.router = router
    layer.experts = nn.ModuleList(experts)
    layer.num_experts = len(experts)
    layer.top_k = min(layer.top_k, len(experts))
    return groups


def layer_profile(layer: Any, x: Any) -> dict[str, Any]:
    """Per-layer record on the token inputs ``x``: tokens per expert, mean experts per token, active
    parameters and MACs per token (router + the experts a token actually runs through)."""
    counts = routing_counts(layer, x)
    tokens = int(x.shape[0])
    per_expert = [sum(p.numel() for p in e.parameters()) for e in layer.experts]
    mean_params = float(np.mean(per_expert)) if per_expert else 0.0
    experts_per_token = float(counts.sum() / max(tokens, 1))
    router_params = sum(p.numel() for p in layer.router.parameters())
    e0 = layer.experts[0]
    macs_expert = e0.fc1.in_features * e0.fc1.out_features + e0.fc2.in_features * e0.fc2.out_features
    # a linear router (zoo MoE) or an MLP one (moefy's): the multiply-accumulates of its Linear layers
    from torch import nn

    macs_router = sum(m.weight.numel() for m in layer.router.modules() if isinstance(m, nn.Linear))
    return {
        "experts": layer.num_experts,
        "top_k": layer.top_k,
        "skip_threshold": float(getattr(layer, "skip_threshold", 0.0)),
        "tokens": tokens,
        "tokens_per_expert": counts.tolist(),
        "experts_per_token": round(experts_per_token, 4),
        "parameters": router_params + sum(per_expert),
        "active_parameters_per_token": round(router_params + experts_per_token * mean_params, 1),
        "macs_per_token": round(macs_router + experts_per_token * macs_expert, 1),
    }


class DistillConfig(StageConfig):
    """Logit distillation from the unslimmed model (``ctx.teacher``) on the task's train split."""

    epochs: float = Field(1.0, gt=0, description="Passes over the train split (fractions allowed).")
    lr: float = Field(5e-4, gt=0, description="AdamW peak learning rate (cosine decay).")
    batch_size: int = Field(64, ge=1, description="Batch size.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature of the KL term.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the hard-label loss (1 - alpha: KL to teacher).")
    samples: int | None = Field(None, ge=1, description="Train samples used (default all).")
    hidden_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of a hidden-state term: relative MSE between the student's and the teacher's outputs "
        "of the stage's changed layers (moefy: each MoEfied FFN's transformer layer), padding left out.",
    )
    objective: Literal["auto", "logits", "outputs"] = Field(
        "auto",
        description="logits: KL at temperature T (+ alpha x label loss); outputs: the task's own loss towards the "
        "teacher's outputs (e.g. 1 - cosine for sentence embeddings); auto: logits when the train split has "
        "labels, else outputs.",
    )
    dropout: bool = Field(
        True,
        description="Train the student with its dropout (train mode). false: the student trains in eval mode, "
        "no dropout anywhere (BatchNorm keeps its running statistics); matching a deterministic teacher "
        "converges faster so (MoEfied MiniLM: held-out cosine 0.908 vs 0.899 after one epoch).",
    )


def _trim_padding(args: list[Any], names: tuple[str, ...]) -> list[Any]:
    """Cut the trailing sequence positions that are padding in every row of the batch.

    Only for models fed an ``attention_mask`` (Hugging Face encoders): padded positions are masked out of
    attention and pooling, so dropping the all-padding tail leaves every real token's output unchanged
    and makes training on short sentences padded to 128 several times cheaper.
    """
    if "attention_mask" not in names:
        return args
    mask = args[names.index("attention_mask")]
    if mask.ndim != 2:
        return args
    used = mask.any(0).nonzero()
    keep = int(used.max()) + 1 if len(used) else mask.shape[1]
    return [a[:, :keep] if a.ndim >= 2 and a.shape[:2] == mask.shape else a for a in args]


def _hidden_loss(feats: dict[str, list[Any]], args: list[Any], names: tuple[str, ...]) -> Any:
    """Mean over the hooked modules of ``|s - t|^2 / |t|^2`` over the token positions (padding left out)."""
    import torch

    mask = args[names.index("attention_mask")] if "attention_mask" in names else None
    terms = []
    for s, t in zip(feats["student"], feats["teacher"], strict=True):
        t = t.detach()
        if mask is not None and tuple(mask.shape) == tuple(s.shape[:2]):
            keep = mask.reshape(-1) > 0
            s, t = s.reshape(-1, s.shape[-1])[keep], t.reshape(-1, t.shape[-1])[keep]
        terms.append(((s - t) ** 2).mean() / (t**2).mean().clamp_min(1e-12))
    return torch.stack(terms).mean()


def _lengths(data: Any, names: tuple[str, ...]) -> np.ndarray | None:
    """Real tokens per sample when the task feeds an ``attention_mask`` (padded sequences), else None."""
    if "attention_mask" not in names:
        return None
    mask = data.inputs["attention_mask"]
    return mask.reshape(len(mask), -1).sum(1) if mask.ndim == 2 else None


def _epoch_batches(order: np.ndarray, lengths: np.ndarray | None, batch_size: int, rng: Any) -> list[np.ndarray]:
    """One epoch's batches of ``order``. With sequence ``lengths``, samples are grouped by length within chunks
    of 50 batches (the batches then shuffled): a batch is trimmed to its longest sentence, so on sentences of
    5 to 120 tokens random batches pay for ~3x the real tokens, length-grouped ones for about the real ones."""
    if lengths is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[np.ndarray] = []
    chunk = batch_size * 50
    for i in range(0, len(order), chunk):
        part = order[i : i + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


CACHE_BYTES = 256 * 2**20  # teacher outputs larger than this are recomputed per batch instead of kept


def _teacher_outputs(teacher: Any, data: Any, batch_args: Callable[[np.ndarray], list[Any]], lengths: Any) -> Any:
    """The teacher's first output for every sample, computed once (the teacher is frozen), when it is one row
    per sample whatever the batch's trimmed length and fits :data:`CACHE_BYTES`; None (compute per batch)
    otherwise."""
    import torch

    order = np.arange(len(data)) if lengths is None else np.argsort(lengths, kind="stable")
    outs = []
    with torch.no_grad():
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            out = teacher(*batch_args(idx))
            out = out[0] if isinstance(out, tuple | list) else out
            if lengths is not None and out.ndim != 2:  # per-token outputs: their length follows the trimming
                return None
            if out[0].numel() * out.element_size() * len(data) > CACHE_BYTES:
                return None
            outs.append((idx, out.detach()))
    first = outs[0][1]
    full = first.new_empty((len(data), *first.shape[1:]))
    for idx, out in outs:
        full[torch.from_numpy(idx)] = out
    return full


def distill(
    student: Any,
    teacher: Any,
    task: Any,
    cfg: DistillConfig,
    seed: int = 0,
    extra_loss: Callable[[], Any] | None = None,
    hidden: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``student`` in place towards ``teacher``'s outputs (see ``DistillConfig.objective``).

    ``extra_loss`` (optional) is called after each student forward and its value added to the loss (e.g. an
    activation-sparsity penalty read from forward hooks). ``hidden``: names of modules present in both
    models whose outputs are matched when ``cfg.hidden_weight > 0``. ``progress`` (optional) gets a line
    (step, mean loss, elapsed and remaining time) about every 10% of the steps."""
    import torch
    import torch.nn.functional as F

    feats: dict[str, list[Any]] = {"student": [], "teacher": []}
    hooks = []
    if cfg.hidden_weight > 0 and hidden:
        for side, model in (("student", student), ("teacher", teacher)):
            for name in hidden:
                try:
                    sub = model.get_submodule(name)
                except AttributeError as e:
                    raise InputError(f"distill: hidden-state module {name!r} is not in the {side}") from e
                hooks.append(
                    sub.register_forward_hook(
                        lambda _m, _a, out, side=side: feats[side].append(out[0] if isinstance(out, tuple) else out)
                    )
                )

    data = task.split("train").take(cfg.samples)
    objective = cfg.objective
    if objective == "auto":
        objective = "logits" if data.targets is not None else "outputs"
    rng = np.random.default_rng(seed)
    steps_per_epoch = max(1, -(-len(data) // cfg.batch_size))
    total = max(1, round(cfg.epochs * steps_per_epoch))
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    teacher.eval()
    lengths = _lengths(data, task.input_names)

    def batch_args(idx: np.ndarray) -> list[Any]:
        return _trim_padding([torch.from_numpy(data.inputs[n][idx]) for n in task.input_names], task.input_names)

    cached = None if hooks else _teacher_outputs(teacher, data, batch_args, lengths)
    t = cfg.temperature
    losses: list[float] = []
    start = time.perf_counter()
    step = 0
    try:
        while step < total:
            for idx in _epoch_batches(rng.permutation(len(data)), lengths, cfg.batch_size, rng):
                if step >= total:
                    break
                args = batch_args(idx)
                if cached is not None:
                    t_out = cached[torch.from_numpy(idx)]
                else:
                    with torch.no_grad():
                        t_out = teacher(*args)
                student.train(cfg.dropout)
                s_out = student(*args)
                s_logits = s_out[0] if isinstance(s_out, tuple | list) else s_out
                t_logits = t_out[0] if isinstance(t_out, tuple | list) else t_out
                if objective == "outputs":
                    loss = task.loss(s_out, t_logits)
                else:
                    kd = F.kl_div(
                        F.log_softmax(s_logits / t, -1),
                        F.log_softmax(t_logits / t, -1),
                        log_target=True,
                        reduction="batchmean",
                    ) * (t * t)
                    loss = (1 - cfg.alpha) * kd
                    if cfg.alpha > 0 and data.targets is not None:
                        loss = loss + cfg.alpha * task.loss(s_out, torch.from_numpy(data.targets[idx]))
                if extra_loss is not None:
                    loss = loss + extra_loss()
                if feats["student"]:
                    loss = loss + cfg.hidden_weight * _hidden_loss(feats, args, task.input_names)
                feats["student"].clear()
                feats["teacher"].clear()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                step += 1
                if progress is not None and total >= 10 and step % max(1, total // 10) == 0 and step < total:
                    spent = time.perf_counter() - start
                    progress(
                        f"  distill step {step}/{total}: loss {np.mean(losses[-max(1, total // 10) :]):.4f}, "
                        f"{spent:.0f} s spent, about {spent / step * (total - step):.0f} s to go"
                    )
    finally:
        for h in hooks:
            h.remove()
    student.eval()
    return {
        "steps": total,
        "seconds": round(time.perf_counter() - start, 2),
        "loss_first": round(float(np.mean(losses[:10])), 5),
        "loss_last": round(float(np.mean(losses[-10:])), 5),
        "objective": objective,
        "config": cfg.model_dump(),
    }


class MoESlimConfig(StageConfig):
    """Options of the ``moe-slim`` stage. Operations run in this order: merge, prune, top-k, skipping."""

    keep_experts: int | None = Field(None, ge=1, description="Experts kept per MoE layer (pruning).")
    keep_fraction: float | None = Field(None, gt=0, le=1, description="Fraction of experts kept per layer.")
    ranking: Literal["frequency", "reconstruction"] = Field(
        "reconstruction",
        description="Pruning order: routing frequency on calibration data, or greedy output reconstruction loss.",
    )
    merge_to: int | None = Field(None, ge=1, description="Merge cosine-similar experts until this many remain.")
    top_k: int | None = Field(None, ge=1, description="New number of experts per token (e.g. 2 -> 1).")
    skip_threshold: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Skip secondary experts whose routing weight is below this (0: never); on MoEfied layers the "
        "weight is the softmax of the token's top-k router scores.",
    )
    dispatch: Literal["sparse", "dense", "ort_moe"] | None = Field(
        None,
        description="Forward formulation of the slimmed layers (None: keep the model's); ort_moe exports ONNX "
        "Runtime's com.microsoft.MoE (ORT only, GELU tanh approximation, no skipping).",
    )
    calibration_samples: int | None = Field(200, ge=1, description="Calibration samples for routing statistics.")
    distill: DistillConfig | None = Field(None, description="Logit distillation from the unslimmed model afterwards.")

    @model_validator(mode="after")
    def _one_keep(self) -> MoESlimConfig:
        if self.keep_experts is not None and self.keep_fraction is not None:
            raise ValueError("give keep_experts or keep_fraction, not both")
        return self


@register_stage
class MoESlim(Stage):
    """Expert pruning / merging, top-k reduction and low-weight expert skipping, with optional distillation."""

    name: ClassVar[str] = "moe-slim"
    kind: ClassVar[Literal["torch", "onnx"]] = "torch"
    Config: ClassVar[type[StageConfig]] = MoESlimConfig
    default_output: ClassVar[str] = "fp32"
    summary: ClassVar[str] = "slim MoE layers (prune / merge experts, top-k, skipping), optional distillation"

    def apply(self, model: ModelArtifact, ctx: StageContext, output: str) -> tuple[ModelArtifact, dict[str, Any]]:
        cfg: MoESlimConfig = self.config  # type: ignore[assignment]
        if model.kind != "torch":
            raise InputError("moe-slim is a torch stage; the model is ONNX")
        student = clone_module(model.module).eval()
        layers = _require_moe(student)
        inputs = capture_layer_inputs(student, ctx.task, cfg.calibration_samples)
        details: dict[str, Any] = {"layers": {}, "config": cfg.model_dump(exclude={"distill"})}
        from torch import nn

        changes_experts = cfg.merge_to is not None or cfg.keep_experts is not None or cfg.keep_fraction is not None
        for name, layer in layers:
            if changes_experts and not isinstance(layer.router, nn.Linear):
                raise InputError(
                    f"moe-slim: pruning or merging experts rewrites the router's rows, and layer {name!r} has a "
                    f"{type(layer.router).__name__} router, not a Linear one (moefy's `router: mlp`); "
                    "top_k works on it, or MoEfy with `router: centroid`"
                )
            rec: dict[str, Any] = {"before": layer_profile(layer, inputs[name])}
            x = inputs[name]
            if cfg.merge_to is not None and cfg.merge_to < layer.num_experts:
                rec["merged_groups"] = merge_layer(layer, cfg.merge_to, routing_counts(layer, x))
            n = layer.num_experts
            n_keep = cfg.keep_experts if cfg.keep_experts is not None else n
            if cfg.keep_fraction is not None:
                n_keep = max(1, round(cfg.keep_fraction * n))
            if n_keep > n:
                raise InputError(f"moe-slim: keep_experts={n_keep} but layer {name!r} has only {n} experts")
            if n_keep < n:
                if cfg.ranking == "frequency":
                    counts = routing_counts(layer, x)
                    keep = sorted(np.argsort(-counts, kind="stable")[:n_keep].tolist())
                    rec["ranking_scores"] = counts.tolist()
                else:
                    keep, errors = rank_by_reconstruction(layer, x, n_keep)
                    keep = sorted(keep)
                    rec["reconstruction_mse_per_removal"] = [round(e, 8) for e in errors]
                prune_layer(layer, keep)
                rec["experts_kept"] = keep
            else:
                rec["experts_kept"] = list(range(n))
            if cfg.top_k is not None:
                if cfg.top_k > layer.num_experts:
                    raise InputError(f"moe-slim: top_k={cfg.top_k} > {layer.num_experts} experts left in {name!r}")
                layer.top_k = cfg.top_k
            for key, value in (("skip_threshold", cfg.skip_threshold), ("dispatch", cfg.dispatch)):
                if value is None or (key == "skip_threshold" and value == 0 and not hasattr(layer, key)):
                    continue
                if not hasattr(layer, key):
                    raise InputError(
                        f"moe-slim: {key} is set, but layer {name!r} ({type(layer).__name__}) has no {key}"
                    )
                setattr(layer, key, value)
            details["layers"][name] = rec
        if cfg.distill is not None:
            if ctx.teacher is None:
                raise InputError("moe-slim: distill needs the original torch model as teacher")
            ctx.say(f"moe-slim: distilling from the unslimmed model ({cfg.distill.epochs} epochs)")
            details["distill"] = distill(student, ctx.teacher, ctx.task, cfg.distill, ctx.seed, progress=ctx.say)
        after = capture_layer_inputs(student, ctx.task, cfg.calibration_samples)
        for name, layer in moe_layers(student):
            details["layers"][name]["after"] = layer_profile(layer, after[name])
        details["active_parameters_per_token"] = {
            k: sum(r[k]["active_parameters_per_token"] for r in details["layers"].values()) for k in ("before", "after")
        }
        details["moe_macs_per_token"] = {
            k: sum(r[k]["macs_per_token"] for r in details["layers"].values()) for k in ("before", "after")
        }
        return (
            ModelArtifact(output, "torch", module=student, lineage=[*model.lineage, self.name]),
            details,
        )
