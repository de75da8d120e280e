"""Torch modules and functions of MoEfication (imported by the ``moefy`` stage when it runs)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from effdl.errors import InputError


class _Expert(nn.Module):
    """A slice of a dense FFN's neurons: ``fc2(act(fc1(x)))`` with fc2 bias kept outside (added once)."""

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear, act: nn.Module) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = fc1, act, fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.fc2(self.act(self.fc1(x)))


class MoEfiedMLP(nn.Module):
    """A dense FFN split into neuron-cluster experts, routed top-k (weight 1 each) with sparse dispatch."""

    def __init__(self, experts: list[_Expert], router: nn.Linear, bias: torch.Tensor, top_k: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList(experts)
        self.router = router
        self.bias = nn.Parameter(bias.detach().clone())
        self.num_experts, self.top_k = len(experts), top_k

    def routing(self, x: torch.Tensor) -> torch.Tensor:
        """0/1 weights ``(..., num_experts)``: the ``top_k`` experts with the highest router scores."""
        logits = self.router(x)
        kth = logits.topk(self.top_k, dim=-1).values[..., -1:]
        return (logits >= kth).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        flat = x.reshape(-1, x.shape[-1])
        weights = self.routing(flat)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            idx = torch.nonzero(weights[:, e] > 0).squeeze(-1)
            out = out.index_add(0, idx, expert(flat.index_select(0, idx)))
        return (out + self.bias).reshape(x.shape)


def balanced_kmeans(vectors: np.ndarray, k: int, iters: int = 10, seed: int = 0) -> np.ndarray:
    """Cluster labels with exactly ``len(vectors) // k`` (or one more) members each.

    Plain k-means, then each iteration assigns (vector, centroid) pairs in order of increasing distance
    while the centroid has room; sklearn's KMeans has no size constraint.
    """
    from sklearn.cluster import KMeans

    n = len(vectors)
    if not 1 <= k <= n:
        raise InputError(f"moefy: cannot split {n} neurons into {k} experts")
    centroids = KMeans(k, n_init=3, random_state=seed).fit(vectors).cluster_centers_
    caps = np.full(k, n // k)
    caps[: n % k] += 1
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iters):
        d = ((vectors[:, None, :] - centroids[None]) ** 2).sum(-1)
        labels[:] = -1
        room = caps.copy()
        for flat in np.argsort(d, axis=None, kind="stable"):
            i, c = divmod(int(flat), k)
            if labels[i] < 0 and room[c] > 0:
                labels[i], room[c] = c, room[c] - 1
        new = np.stack([vectors[labels == c].mean(0) for c in range(k)])
        if np.allclose(new, centroids):
            break
        centroids = new
    return labels


def moefy_mlp(mlp: nn.Module, num_experts: int, top_k: int, seed: int = 0) -> MoEfiedMLP:
    """Split ``mlp`` (``fc1``, ``act``, ``fc2``) into ``num_experts`` neuron-cluster experts with a centroid router."""
    fc1, fc2 = mlp.fc1, mlp.fc2
    w = fc1.weight.detach()
    vecs = torch.nn.functional.normalize(w, dim=1).numpy()
    labels = balanced_kmeans(vecs, num_experts, seed=seed)
    experts: list[_Expert] = []
    router = nn.Linear(fc1.in_features, num_experts, bias=True)
    with torch.no_grad():
        for e in range(num_experts):
            idx = torch.from_numpy(np.flatnonzero(labels == e))
            a = nn.Linear(fc1.in_features, len(idx))
            a.weight.copy_(fc1.weight[idx])
            a.bias.copy_(fc1.bias[idx])
            b = nn.Linear(len(idx), fc2.out_features, bias=False)
            b.weight.copy_(fc2.weight[:, idx])
            experts.append(_Expert(a, b, copy.deepcopy(mlp.act)))
            router.weight[e] = fc1.weight[idx].sum(0)
            router.bias[e] = fc1.bias[idx].sum()
    return MoEfiedMLP(experts, router, fc2.bias, top_k)


def _dense_mlps(module: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    found = []
    for parent in module.modules():
        for child_name, child in parent.named_children():
            if (
                isinstance(getattr(child, "fc1", None), nn.Linear)
                and isinstance(getattr(child, "fc2", None), nn.Linear)
                and hasattr(child, "act")
                and not hasattr(parent, "router")
            ):
                found.append((parent, child_name, child))
    return found
