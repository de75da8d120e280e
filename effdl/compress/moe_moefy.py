"""MoEfication of dense transformers (stage ``moefy``; Zhang et al. 2022, "MoEfication").

Each feed-forward layer ``fc2(act(fc1(x)))`` (a module with ``fc1`` / ``fc2`` ``nn.Linear`` and ``act``,
as in the zoo's bert_classifier / gpt / vit blocks) is split into ``num_experts`` experts by partitioning
its intermediate neurons with balanced k-means on their (normalised) fc1 weight vectors. A router scores
each expert by its centroid: ``x . sum(w_i) + sum(b_i)`` over the expert's neurons, a linear proxy for
the expert's pre-activation mass. Each token runs through its ``top_k`` experts with weight 1, so with
``top_k == num_experts`` the layer equals the dense one exactly. An optional short fine-tune with
distillation from the dense model (``ctx.teacher``) adapts the model to the activation sparsity.

Written here because no library MoEfies arbitrary torch modules (the paper's code targets T5 / BERT
checkpoints only).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

from pydantic import Field

from effdl.compress import register_stage
from effdl.compress.base import ModelArtifact, Stage, StageConfig, StageContext
from effdl.compress.moe import DistillConfig, _trim_padding, distill
from effdl.errors import InputError


class SparsityFinetuneConfig(DistillConfig):
    """Activation-sparsity fine-tune of the dense model before the split: distillation from the dense model
    plus ``l1`` x the mean absolute FFN activation (as in MoEfication / D2DMoE), so that fewer neurons carry
    each token's output and the top-k experts keep more of it."""

    l1: float = Field(0.01, ge=0, description="Weight of the mean |activation| penalty over all FFN layers.")


class MoefyConfig(StageConfig):
    """Options of the ``moefy`` stage."""

    num_experts: int = Field(8, ge=2, description="Experts per feed-forward layer (neuron clusters).")
    top_k: int = Field(2, ge=1, description="Experts each token runs through.")
    clustering: Literal["kmeans", "coactivation"] = Field(
        "kmeans",
        description="Neuron partition: balanced k-means of fc1 weight vectors, or a balanced spectral partition "
        "of the neurons' co-activation graph on calibration tokens.",
    )
    router: Literal["centroid", "mlp"] = Field(
        "centroid",
        description="centroid: linear proxy of each expert's pre-activation; mlp: a small MLP trained on "
        "calibration tokens to predict each expert's activation mass.",
    )
    router_hidden: int = Field(128, ge=1, description="Hidden width of the MLP router.")
    router_epochs: int = Field(10, ge=1, description="Passes of MLP-router training over the calibration tokens.")
    router_target: Literal["activation", "output_norm"] = Field(
        "activation", description="What the MLP router predicts: sum of |activation| per expert, or its output norm."
    )
    calibration_split: Literal["calibration", "train"] = Field(
        "calibration", description="Split whose tokens drive co-activation clustering and router training."
    )
    calibration_samples: int | None = Field(200, ge=1, description="Samples of that split (None: all).")
    dispatch: Literal["gather", "split", "scatter"] = Field(
        "split", description="Sparse dispatch formulation of the MoE layers (see MoEfiedMLP)."
    )
    eval_samples: int | None = Field(1000, ge=1, description="Held-out samples scoring each step (None: all).")
    sparsity_finetune: SparsityFinetuneConfig | None = Field(
        None, description="Activation-sparsity fine-tune of the dense model (distillation + L1) before the split."
    )
    finetune: DistillConfig | None = Field(
        None, description="Fine-tune of the MoEfied model with distillation from the dense model."
    )


def capture_ffn_inputs(module: Any, fc1s: list[Any], task: Any, split: str, samples: int | None) -> list[Any]:
    """The token inputs ``(tokens, dim)`` of each ``fc1`` over ``split``; positions whose ``attention_mask`` is 0
    (padding, when the task has that input) are left out: they do not reach the model's output."""
    import torch

    grabbed: list[list[Any]] = [[] for _ in fc1s]
    mask: list[Any] = [None]

    def hook(i: int) -> Any:
        def grab(_m: Any, args: tuple[Any, ...]) -> None:
            x = args[0].detach()
            keep = mask[0]
            flat = x.reshape(-1, x.shape[-1])
            if keep is not None and tuple(keep.shape) == tuple(x.shape[:-1]):
                flat = flat[keep.reshape(-1) > 0]
            grabbed[i].append(flat)

        return grab

    hooks = [fc1.register_forward_pre_hook(hook(i)) for i, fc1 in enumerate(fc1s)]
    data = task.split(split).take(samples)
    mask_at = task.input_names.index("attention_mask") if "attention_mask" in task.input_names else None
    try:
        with torch.inference_mode():
            for x, _ in data.batches(64):
                args = _trim_padding([torch.from_numpy(x[n]) for n in task.input_names], task.input_names)
                mask[0] = None if mask_at is None else args[mask_at]
                module.eval()(*args)
    finally:
        for h in hooks:
            h.remove()
    return [torch.cat(g) for g in grabbed]


def _active_fraction(sites: list[Any], tokens: list[Any]) -> float:
    import torch

    with torch.inference_mode():
        fr = [float((s.act(s.fc1(x)) > 0).float().mean()) for s, x in zip(sites, tokens, strict=True)]
    return round(sum(fr) / len(fr), 4)


@register_stage
class Moefy(Stage):
    """Turn each dense FFN into a routed mixture of neuron-cluster experts (MoEfication)."""

    name: ClassVar[str] = "moefy"
    kind: ClassVar[Literal["torch", "onnx"]] = "torch"
    Config: ClassVar[type[StageConfig]] = MoefyConfig
    default_output: ClassVar[str] = "fp32"
    summary: ClassVar[str] = "MoEfication: split FFNs into routed neuron-cluster experts, optional fine-tunes"

    def apply(self, model: ModelArtifact, ctx: StageContext, output: str) -> tuple[ModelArtifact, dict[str, Any]]:
        import numpy as np
        import torch

        from effdl.compress.moe_moefy_nn import (
            coactivation_labels,
            dense_ffns,
            expert_mass,
            moefy_mlp,
            router_recall,
            split_mlp,
            train_mlp_router,
        )
        from effdl.export import torch_outputs

        cfg: MoefyConfig = self.config  # type: ignore[assignment]
        if cfg.top_k > cfg.num_experts:
            raise InputError(f"moefy: top_k={cfg.top_k} > num_experts={cfg.num_experts}")
        if model.kind != "torch":
            raise InputError("moefy is a torch stage; the model is ONNX")
        student = copy.deepcopy(model.module).eval()
        if not dense_ffns(student):
            raise InputError(
                "moefy: the model has no feed-forward module with `fc1`, `act` and `fc2` "
                "(nor a Hugging Face BERT-style `intermediate` / `output` pair)"
            )
        if (cfg.finetune or cfg.sparsity_finetune) is not None and ctx.teacher is None:
            raise InputError("moefy: finetune / sparsity_finetune need the original torch model as teacher")
        held = ctx.task.split("heldout").take(cfg.eval_samples)
        dense_out = torch_outputs(model.module, ctx.task, held.inputs)

        def scores(m: Any) -> dict[str, float]:
            out = dense_out if m is model.module else torch_outputs(m, ctx.task, held.inputs)
            return {"metric": float(ctx.task.score(out, held.targets)), **ctx.task.agreement(dense_out, out)}

        details: dict[str, Any] = {"config": cfg.model_dump(exclude={"finetune", "sparsity_finetune"})}
        heldout: dict[str, Any] = {"dense": scores(model.module)}
        sites = dense_ffns(student)
        tokens = capture_ffn_inputs(
            student, [s.fc1 for s in sites], ctx.task, cfg.calibration_split, cfg.calibration_samples
        )
        details["active_fraction"] = {"dense": _active_fraction(sites, tokens)}
        if cfg.sparsity_finetune is not None:
            sf = cfg.sparsity_finetune
            penalties: list[Any] = []
            hooks = [s.act.register_forward_hook(lambda _m, _a, out: penalties.append(out.abs().mean())) for s in sites]

            def l1() -> Any:
                value = sf.l1 * torch.stack(penalties).mean() if penalties else torch.zeros(())
                penalties.clear()
                return value

            ctx.say(f"moefy: activation-sparsity fine-tune ({sf.epochs} epochs, l1={sf.l1})")
            try:
                details["sparsity_finetune"] = distill(
                    student,
                    ctx.teacher,
                    ctx.task,
                    sf,
                    ctx.seed,
                    extra_loss=l1,
                    hidden=[s.name for s in sites],
                    progress=ctx.say,
                )
            finally:
                for h in hooks:
                    h.remove()
            heldout["dense_sparsified"] = scores(student)
            sites = dense_ffns(student)
            tokens = capture_ffn_inputs(
                student, [s.fc1 for s in sites], ctx.task, cfg.calibration_split, cfg.calibration_samples
            )
            details["active_fraction"]["dense_sparsified"] = _active_fraction(sites, tokens)
        layers: dict[str, Any] = {}
        for site, x in zip(sites, tokens, strict=True):
            n = site.fc1.out_features
            if n < cfg.num_experts:
                raise InputError(f"moefy: {site.name} has {n} neurons < {cfg.num_experts} experts")
            if cfg.clustering == "coactivation":
                with torch.inference_mode():
                    active = (site.act(site.fc1(x)) > 0).numpy()
                moe = split_mlp(site, coactivation_labels(active, cfg.num_experts, ctx.seed), cfg.top_k)
            else:
                moe = moefy_mlp(site, cfg.num_experts, cfg.top_k, ctx.seed)
            moe.dispatch = cfg.dispatch
            rec: dict[str, Any] = {"neurons": n, "neurons_per_expert": [e.fc1.out_features for e in moe.experts]}
            if cfg.router == "mlp":
                rec["router"] = train_mlp_router(
                    moe, x, cfg.router_hidden, cfg.router_epochs, cfg.router_target, ctx.seed
                )
            else:
                rec["router"] = {"recall_centroid": round(router_recall(moe, x, expert_mass(moe, x)), 4)}
            with torch.inference_mode():
                rec["tokens_per_expert"] = np.bincount(moe.selected(x).reshape(-1).numpy(), minlength=moe.num_experts)
            rec["tokens_per_expert"] = rec["tokens_per_expert"].tolist()
            site.install(moe)
            layers[site.name] = rec
        details["layers"] = layers
        details["active_ffn_fraction"] = cfg.top_k / cfg.num_experts
        heldout["moefied"] = scores(student)
        if cfg.finetune is not None:
            ctx.say(f"moefy: fine-tuning the MoEfied model ({cfg.finetune.epochs} epochs)")
            details["finetune"] = distill(
                student, ctx.teacher, ctx.task, cfg.finetune, ctx.seed, hidden=[s.name for s in sites], progress=ctx.say
            )
            heldout["moefied_finetuned"] = scores(student)
        details["heldout"] = heldout
        details["heldout_metric"] = {k: v["metric"] for k, v in heldout.items()}
        return ModelArtifact(output, "torch", module=student, lineage=[*model.lineage, self.name]), details
