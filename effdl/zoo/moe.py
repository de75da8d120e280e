"""Mixture-of-experts transformer: top-k routed expert feed-forward networks (Shazeer et al. 2017; Fedus et al.
2022's load-balancing loss).

Every MoE layer has a ``router`` (``nn.Linear(dim, num_experts)``) and ``experts.{i}.fc1`` / ``.fc2``, so
MoE sparsification (expert pruning, merging, top-k reduction) can address them by name.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from effdl.zoo.registry import TrainRecipe, register_model
from effdl.zoo.transformer import MLP, Block

Dispatch = Literal["dense", "sparse", "ort_moe"]
DISPATCHES: tuple[str, ...] = ("dense", "sparse", "ort_moe")


class _OrtMoE(torch.autograd.Function):
    """Exports as ONNX Runtime's ``com.microsoft.MoE`` (TorchScript exporter); runs the sparse dispatch in torch.

    ORT's operator takes the router logits, applies the softmax, keeps each token's top-k and renormalises
    them (``normalize_routing_weights=1``): the zoo layer's routing without skipping. Its ``gelu`` is the
    tanh approximation (measured: 2e-4 from the exact GELU the experts use), so the torch side computes
    that too and the export matches it; the change from the exact-GELU model is a model change that the
    metric shows. Expert weights are
    stacked ``(experts, out, in)``, the ``nn.Linear`` layout that ORT >= 1.22 expects (a transposed stack
    is accepted silently and computes garbage; the tests compare with torch).
    """

    @staticmethod
    def forward(ctx, flat, logits, w1, b1, w2, b2, k):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN205
        top = logits.topk(k, dim=-1)
        weights = top.values.softmax(-1)  # softmax over the top-k = full softmax restricted and renormalised
        out = torch.zeros_like(flat)
        for j in range(k):
            e = top.indices[:, j]
            h = torch.nn.functional.gelu(torch.einsum("td,tod->to", flat, w1[e]) + b1[e], approximate="tanh")
            out = out + weights[:, j : j + 1] * (torch.einsum("th,toh->to", h, w2[e]) + b2[e])
        return out

    @staticmethod
    def symbolic(g, flat, logits, w1, b1, w2, b2, k):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN205
        return g.op(
            "com.microsoft::MoE",
            flat,
            logits,
            w1,
            b1,
            w2,
            b2,
            k_i=k,
            activation_type_s="gelu",
            normalize_routing_weights_i=1,
        )


class MoEFeedForward(nn.Module):
    """Top-k routed mixture of expert MLPs, in a dense-masked or a sparse (gather/scatter) formulation.

    Routing weights are the softmax of the router logits restricted to each token's top-k experts
    (the others get exactly zero weight); tokens whose weight for an expert falls below ``skip_threshold``
    skip that expert (dynamic skipping of low-weight secondary experts; the kept weights are renormalised).

    - ``dispatch="dense"``: every expert runs on every token and the outputs are summed with the (mostly
      zero) weights: ``num_experts / top_k`` times the FLOPs of the routed computation.
    - ``dispatch="sparse"``: for each expert, the flattened tokens routed to it are gathered
      (``nonzero`` + ``index_select``: ONNX NonZero + Gather), run through that expert, scaled by their
      routing weight and scattered back with ``index_add`` (ONNX ScatterND/ScatterElements). The Python
      loop runs over the experts, not over data, so every expert is in an exported graph whatever the
      example input routed, and token counts (batch and sequence) stay dynamic.

    Both give the same outputs (up to float summation order).
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        num_experts: int = 8,
        top_k: int = 2,
        dropout: float = 0.0,
        dispatch: Dispatch = "sparse",
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must lie in 1..num_experts={num_experts}, got {top_k}")
        if dispatch not in DISPATCHES:
            raise ValueError(f"dispatch must be one of {DISPATCHES}, got {dispatch!r}")
        self.num_experts, self.top_k, self.dispatch = num_experts, top_k, dispatch
        self.skip_threshold = 0.0
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
        if self.skip_threshold > 0:
            # Drop secondary experts whose weight is below the threshold; the top-1 expert always stays
            # (its weight is >= 1/top_k >= any threshold < 1/top_k, and the max is kept explicitly).
            top = weights >= weights.max(-1, keepdim=True).values
            weights = weights * ((weights >= self.skip_threshold) | top).to(weights.dtype)
            weights = weights / weights.sum(-1, keepdim=True)
        if self.training:
            # Switch-Transformer balance loss: num_experts * sum_e (token share of e) * (mean router prob of e).
            probs = logits.softmax(-1).flatten(0, -2)
            share = keep.flatten(0, -2).mean(0) / self.top_k
            self.aux_loss = self.num_experts * (share * probs.mean(0)).sum()
        return weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.dispatch == "ort_moe":
            return self.forward_ort_moe(x)
        return self.forward_sparse(x) if self.dispatch == "sparse" else self.forward_dense(x)

    def forward_ort_moe(self, x: torch.Tensor) -> torch.Tensor:
        """One ``com.microsoft.MoE`` node per layer in ONNX (TorchScript exporter), GELU's tanh approximation in
        the experts (what that operator computes), every expert computed on its tokens only in torch too.

        Only ONNX Runtime runs that operator (OpenVINO does not read it); no skipping threshold."""
        if self.skip_threshold > 0:
            raise ValueError("dispatch='ort_moe' has no dynamic skipping (com.microsoft.MoE cannot express it)")
        flat = x.reshape(-1, x.shape[-1])
        w1 = torch.stack([e.fc1.weight for e in self.experts])
        b1 = torch.stack([e.fc1.bias for e in self.experts])
        w2 = torch.stack([e.fc2.weight for e in self.experts])
        b2 = torch.stack([e.fc2.bias for e in self.experts])
        return _OrtMoE.apply(flat, self.router(flat), w1, b1, w2, b2, self.top_k).reshape(x.shape)

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert on every token, outputs weighted by the (top-k masked) routing weights."""
        weights = self.routing(x)
        outputs = torch.stack([expert(x) for expert in self.experts], dim=-2)  # (..., num_experts, dim)
        return (weights.unsqueeze(-1) * outputs).sum(-2)

    def forward_sparse(self, x: torch.Tensor) -> torch.Tensor:
        """Each expert only on the tokens routed to it (gather -> expert -> weighted scatter-add)."""
        flat = x.reshape(-1, x.shape[-1])
        weights = self.routing(flat)  # (tokens, num_experts)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            idx = torch.nonzero(weights[:, e] > 0).squeeze(-1)  # the tokens routed to expert e
            y = expert(flat.index_select(0, idx)) * weights.index_select(0, idx)[:, e : e + 1]
            out = out.index_add(0, idx, y)  # indices are unique within one expert
        return out.reshape(x.shape)


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
        dispatch: Dispatch = "sparse",
    ) -> None:
        super().__init__()
        self.balance_coef = balance_coef
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(max_len + 1, dim) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(
            Block(
                dim,
                heads,
                max_len=max_len + 1,
                mlp=MoEFeedForward(dim, expert_hidden, num_experts, top_k, dispatch=dispatch),
            )
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
    dispatch: Dispatch = "sparse",
) -> nn.Module:
    """MoE transformer classifier: 8 expert FFNs per block, top-2 routing (sparse gather/scatter dispatch)."""
    return MoEClassifier(
        vocab_size, dim, depth, heads, expert_hidden, num_experts, top_k, num_classes, max_len, dispatch=dispatch
    )
