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
from effdl.compress.moe import DistillConfig, distill
from effdl.errors import InputError


class MoefyConfig(StageConfig):
    """Options of the ``moefy`` stage."""

    num_experts: int = Field(8, ge=2, description="Experts per feed-forward layer (neuron clusters).")
    top_k: int = Field(2, ge=1, description="Experts each token runs through.")
    eval_samples: int | None = Field(1000, ge=1, description="Held-out samples scoring each step (None: all).")
    finetune: DistillConfig | None = Field(
        None, description="Activation-sparsity fine-tune with distillation from the dense model."
    )


@register_stage
class Moefy(Stage):
    """Turn each dense FFN into a routed mixture of neuron-cluster experts (MoEfication)."""

    name: ClassVar[str] = "moefy"
    kind: ClassVar[Literal["torch", "onnx"]] = "torch"
    Config: ClassVar[type[StageConfig]] = MoefyConfig
    default_output: ClassVar[str] = "fp32"
    summary: ClassVar[str] = "MoEfication: split FFNs into routed neuron-cluster experts, optional fine-tune"

    def apply(self, model: ModelArtifact, ctx: StageContext, output: str) -> tuple[ModelArtifact, dict[str, Any]]:
        from effdl.compress.moe_moefy_nn import _dense_mlps, moefy_mlp
        from effdl.export import torch_outputs

        cfg: MoefyConfig = self.config  # type: ignore[assignment]
        if cfg.top_k > cfg.num_experts:
            raise InputError(f"moefy: top_k={cfg.top_k} > num_experts={cfg.num_experts}")
        if model.kind != "torch":
            raise InputError("moefy is a torch stage; the model is ONNX")
        student = copy.deepcopy(model.module).eval()
        mlps = _dense_mlps(student)
        if not mlps:
            raise InputError("moefy: the model has no feed-forward module with `fc1`, `act` and `fc2`")
        held = ctx.task.split("heldout").take(cfg.eval_samples)

        def metric(m: Any) -> float:
            return float(ctx.task.score(torch_outputs(m, ctx.task, held.inputs), held.targets))

        layers = {}
        for parent, name, mlp in mlps:
            if mlp.fc1.out_features < cfg.num_experts:
                raise InputError(f"moefy: {name} has {mlp.fc1.out_features} neurons < {cfg.num_experts} experts")
            new = moefy_mlp(mlp, cfg.num_experts, cfg.top_k, ctx.seed)
            setattr(parent, name, new)
            layers[f"{type(parent).__name__}.{name}#{len(layers)}"] = {
                "neurons": mlp.fc1.out_features,
                "neurons_per_expert": [e.fc1.out_features for e in new.experts],
            }
        details: dict[str, Any] = {
            "layers": layers,
            "active_ffn_fraction": cfg.top_k / cfg.num_experts,
            "heldout_metric": {"dense": metric(model.module), "moefied": metric(student)},
        }
        if cfg.finetune is not None:
            if ctx.teacher is None:
                raise InputError("moefy: finetune needs the original torch model as teacher")
            details["finetune"] = distill(student, ctx.teacher, ctx.task, cfg.finetune, ctx.seed)
            details["heldout_metric"]["moefied_finetuned"] = metric(student)
        return ModelArtifact(output, "torch", module=student, lineage=[*model.lineage, self.name]), details
