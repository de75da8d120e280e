"""Graph neural networks on fixed-size graphs given as node features and a dense adjacency matrix.

Dense batched matmuls (``adj @ x``) rather than ``edge_index`` scatter: for the task's small fixed-size
graphs they are as fast, export to plain ``MatMul`` and run the same on every backend.
"""

from __future__ import annotations

import torch
from torch import nn

from effdl.zoo.registry import TrainRecipe, register_model


class GCNLayer(nn.Module):
    """Graph convolution (Kipf & Welling 2017): ``D^-1/2 (A + I) D^-1/2 X W``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.linear = nn.Linear(cin, cout)

    @staticmethod
    def normalize(adj: torch.Tensor) -> torch.Tensor:
        """Symmetrically normalised adjacency with self loops, ``(B, N, N)``."""
        a = adj + torch.eye(adj.shape[-1], dtype=adj.dtype, device=adj.device)
        d = a.sum(-1).rsqrt()
        return d.unsqueeze(-1) * a * d.unsqueeze(-2)

    def forward(self, x: torch.Tensor, norm_adj: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return norm_adj @ self.linear(x)


class SAGELayer(nn.Module):
    """GraphSAGE layer with the mean aggregator (Hamilton et al. 2017): ``W_self x + W_neigh mean(neighbours)``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.self_linear = nn.Linear(cin, cout)
        self.neigh_linear = nn.Linear(cin, cout, bias=False)

    @staticmethod
    def normalize(adj: torch.Tensor) -> torch.Tensor:
        """Row-normalised adjacency (mean over neighbours; isolated nodes aggregate zeros)."""
        return adj / adj.sum(-1, keepdim=True).clamp(min=1.0)

    def forward(self, x: torch.Tensor, mean_adj: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.self_linear(x) + self.neigh_linear(mean_adj @ x)


class GraphNet(nn.Module):
    """A stack of GCN or GraphSAGE layers with ReLU and dropout; per-node class logits ``(B, N, classes)``."""

    def __init__(
        self,
        layer: str = "gcn",
        in_features: int = 8,
        hidden: int = 32,
        layers: int = 3,
        num_classes: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        layer_cls = {"gcn": GCNLayer, "sage": SAGELayer}.get(layer)
        if layer_cls is None:
            raise ValueError(f"layer must be 'gcn' or 'sage', got {layer!r}")
        if layers < 1:
            raise ValueError(f"layers must be at least 1, got {layers}")
        self.layer_cls = layer_cls
        dims = [in_features] + [hidden] * (layers - 1) + [num_classes]
        self.layers = nn.ModuleList(layer_cls(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:  # noqa: D102
        norm = self.layer_cls.normalize(adj)
        for i, layer in enumerate(self.layers):
            x = layer(self.dropout(x), norm)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x


@register_model(
    "gcn",
    family="gnn",
    task="sbm_nodes",
    defaults={"in_features": 8, "hidden": 32, "layers": 3, "num_classes": 4},
    tiny={"hidden": 8},
    train=TrainRecipe(epochs=20, lr=1e-2, batch_size=32),
)
def gcn(in_features: int = 8, hidden: int = 32, layers: int = 3, num_classes: int = 4) -> nn.Module:
    """Graph convolutional network (3 GCN layers) for node classification."""
    return GraphNet("gcn", in_features, hidden, layers, num_classes)


@register_model(
    "graphsage",
    family="gnn",
    task="sbm_nodes",
    defaults={"in_features": 8, "hidden": 32, "layers": 3, "num_classes": 4},
    tiny={"hidden": 8},
    train=TrainRecipe(epochs=20, lr=1e-2, batch_size=32),
)
def graphsage(in_features: int = 8, hidden: int = 32, layers: int = 3, num_classes: int = 4) -> nn.Module:
    """GraphSAGE network (3 mean-aggregator layers) for node classification."""
    return GraphNet("sage", in_features, hidden, layers, num_classes)
