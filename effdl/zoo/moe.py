"""Mixture-of-experts transformer: top-k routed expert feed-forward networks (Shazeer et al. 2017; Fedus et al.
2022's load-balancing loss).

Every MoE layer has a ``router`` (``nn.Linear(dim, num_experts)``) and ``experts.{i}.fc1`` / ``.fc2``, so
MoE sparsification (expert pruning, merging, top-k reduction) can address them by name.
"""

from __future__ import annotations

import torch
from torch import nn

from effdl.zoo.registry import TrainRecipe, register_model
from effdl.zoo.transformer import MLP, Block


class MoEFeedForward(nn.Module):
    """Top-k routed mixture of expert MLPs, in a dense formulation.

    Routing weights are the softmax of the router logits restricted to each token's top-k experts
    (the others get exactly zero weight); the output is the weighted sum of *every* expert's output.
    Computing all experts and masking keeps the forward a static graph that both ONNX exporters and
    every backend handle; it costs ``num_experts / top_k`` times the FLOPs of sparse dispatch. Sparse
    (gather/scatter) dispatch is left to the later MoE-sparsification work.
    """

    def __init__(self, dim: int, hidden: int, num_experts: int = 8, top_k: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must lie in 1..num_experts={num_experts}, got {top_k}")
        self.num_experts, self.top_k = num_experts, top_k
        self.router = nn.Linear(dim, num_experts, bias=False)
        self.experts = nn.ModuleList(MLP(dim, hidden, dropout) for _ in range(num_experts))
        self.aux_loss: torch.Tensor | None = None

    def routing(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token expert weights ``(..., num_experts)``: zero outside the top-k, summing to 1."""
        logits = self.router(x)
        kth = logits.topk(self.top_k, dim=-1).values[..., -1:]
        keep = (logits >= kth).to(logits.dtype)
        # exp(l - max) masked and renormalised: the softmax over the top-k without infinities in the graph.
        e = torch.exp(logits - logits.max(-1, keepdim=True).values) * keep
        weights = e / e.sum(-1, keepdim=True)
        if self.training:
            # Switch-Transformer balance loss: num_experts * sum_e (token share of e) * (mean router prob of e).
            probs = logits.softmax(-1).flatten(0, -2)
            share = keep.flatten(0, -2).mean(0) / self.top_k
            self.aux_loss = self.num_experts * (share * probs.mean(0)).sum()
        return weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        weights = self.routing(x)
        outputs = torch.stack([expert(x) for expert in self.experts], dim=-2)  # (..., num_experts, dim)
        return (weights.unsqueeze(-1) * outputs).sum(-2)


class MoEClassifier(nn.Module):
    """BERT-style encoder classifier whose blocks use :class:`MoEFeedForward` as their feed-forward layer."""

    def __init__(
        self,
        vocab_size: int = 16,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        expert_hidden: int = 128,
        num_experts: int = 8,
        top_k: int = 2,
        num_classes: int = 4,
        max_len: int = 128,
        balance_coef: float = 0.01,
    ) -> None:
        super().__init__()
        self.balance_coef = balance_coef
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(max_len + 1, dim) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(
            Block(dim, heads, max_len=max_len + 1, mlp=MoEFeedForward(dim, expert_hidden, num_experts, top_k))
            for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def moe_layers(self) -> list[MoEFeedForward]:
        """The model's MoE feed-forward layers, in order."""
        return [m for m in self.modules() if isinstance(m, MoEFeedForward)]

    def extra_loss(self) -> torch.Tensor:
        """``balance_coef`` times the summed load-balancing losses of the last training-mode forward."""
        losses = [m.aux_loss for m in self.moe_layers() if m.aux_loss is not None]
        return self.balance_coef * torch.stack(losses).sum() if losses else torch.zeros(())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), self.embed(tokens)], 1)
        x = x + self.pos[: x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x)[:, 0])


@register_model(
    "moe_transformer",
    family="moe",
    task="seq_majority",
    defaults={
        "vocab_size": 16,
        "dim": 64,
        "depth": 2,
        "heads": 4,
        "expert_hidden": 128,
        "num_experts": 8,
        "top_k": 2,
        "num_classes": 4,
        "max_len": 128,
    },  # fmt: skip
    tiny={"dim": 16, "depth": 1, "heads": 2, "expert_hidden": 8, "num_experts": 4, "top_k": 2},
    train=TrainRecipe(epochs=5, lr=2e-3, batch_size=64, grad_clip=1.0, weight_decay=0.01),
)
def moe_transformer(
    vocab_size: int = 16,
    dim: int = 64,
    depth: int = 2,
    heads: int = 4,
    expert_hidden: int = 128,
    num_experts: int = 8,
    top_k: int = 2,
    num_classes: int = 4,
    max_len: int = 128,
) -> nn.Module:
    """MoE transformer classifier: 8 expert FFNs per block, top-2 routing (dense-masked forward)."""
    return MoEClassifier(vocab_size, dim, depth, heads, expert_hidden, num_experts, top_k, num_classes, max_len)
