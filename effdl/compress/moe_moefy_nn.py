"""Torch modules and functions of MoEfication (imported by the ``moefy`` stage when it runs)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

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


class _SplitRows(torch.autograd.Function):
    """Rows of ``x`` in consecutive chunks of ``sizes`` rows, exported as one ONNX ``Split`` whose ``split`` input
    is computed at run time (torch's exporters would bake a traced ``sizes.tolist()`` into constants)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, sizes: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:  # noqa: D102
        with warnings.catch_warnings():  # the exporter records ``symbolic``, not this body: tolist() is not traced
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return tuple(torch.split(x, sizes.tolist()))

    @staticmethod
    def symbolic(g: object, x: Any, sizes: object, n: int) -> object:  # noqa: D102
        outs = g.op("Split", x, sizes, axis_i=0, outputs=n)  # type: ignore[attr-defined]
        # Each chunk is (rows, width) like x: with that rank known the experts' Linear layers export as Gemm on
        # their own weight initializers (unknown rank: MatMul on a transposed copy, renamed onnx::MatMul_*).
        width = x.type().varyingSizes()[-1]
        for out in outs if n > 1 else (outs,):
            out.setType(x.type().with_sizes([None, width]))
        return outs


class MoEfiedMLP(nn.Module):
    """A dense FFN split into neuron-cluster experts, routed top-k (weight 1 each) with sparse dispatch.

    ``dispatch="gather"``: the ``tokens x top_k`` assignments are grouped per expert (NonZero of
    the assignments equal to the expert, Gather of their tokens), each expert runs on its rows, the
    outputs are concatenated and put back in assignment order by one Gather with the inverse permutation,
    then each token's ``top_k`` rows are summed. No scatter: ONNX Runtime's ScatterElements (what
    ``index_add`` exports to) copies the whole output and expands the indices per call, and costs more than
    the experts at 128 tokens. ``dispatch="split"`` (default): the assignments are sorted by expert once (argsort),
    their tokens gathered once, and one ONNX ``Split`` whose sizes (tokens per expert) are computed at run
    time cuts them into the experts' inputs; the outputs go back by the inverse permutation as in
    ``gather``. Same result, a third fewer nodes (no NonZero / Gather per expert). ``dispatch="scatter"``:
    per expert NonZero, Gather, expert, ``index_add`` (the zoo MoE's formulation), kept for comparison. All
    three keep every expert in the exported graph.

    ``skip_threshold`` (0: off; set by ``moe-slim``): dynamic skipping of secondary experts. A token's
    selected experts get the softmax of their router scores as weights (the zoo MoE's routing weights); a
    secondary expert whose weight is below the threshold is skipped (the token's best expert always runs).
    The expert outputs themselves keep weight 1, as without skipping. Skipped assignments go to a null group
    after the last expert, whose rows contribute zero.
    """

    def __init__(
        self, experts: list[_Expert], router: nn.Module, bias: torch.Tensor, top_k: int, dispatch: str = "split"
    ) -> None:
        super().__init__()
        self.experts = nn.ModuleList(experts)
        self.router = router
        self.bias = nn.Parameter(bias.detach().clone())
        self.num_experts, self.top_k = len(experts), top_k
        self.dim = int(bias.shape[0])  # a Python int: a constant in the exported graph, not a Shape/Gather chain
        if dispatch not in ("gather", "split", "scatter"):
            raise InputError(f"MoEfiedMLP: dispatch {dispatch!r} is not one of gather, split, scatter")
        self.dispatch = dispatch
        self.skip_threshold = 0.0

    def selected(self, x: torch.Tensor) -> torch.Tensor:
        """Indices ``(..., top_k)`` of the experts with the highest router scores (before any skipping)."""
        return self.router(x).topk(self.top_k, dim=-1).indices

    @property
    def skipping(self) -> bool:
        """Whether secondary experts can be skipped (a threshold is set and there is more than one per token)."""
        return self.skip_threshold > 0 and self.top_k > 1

    def assignments(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., top_k)`` expert of each of a token's ``top_k`` assignments, best first; ``num_experts`` marks
        a secondary expert skipped by ``skip_threshold``."""
        top = self.router(x).topk(self.top_k, dim=-1)
        if not self.skipping:
            return top.indices
        weights = torch.softmax(top.values, dim=-1)
        secondary = torch.arange(self.top_k, device=x.device) > 0  # the best expert always runs
        return torch.where((weights < self.skip_threshold) & secondary, self.num_experts, top.indices)

    def routing(self, x: torch.Tensor) -> torch.Tensor:
        """0/1 weights ``(..., num_experts)``: the experts each token runs through (the ``top_k`` with the
        highest router scores, less the skipped ones)."""
        sel = self.assignments(x)
        ones = torch.zeros(*x.shape[:-1], self.num_experts + 1, dtype=x.dtype).scatter(-1, sel, 1.0)
        return ones[..., : self.num_experts]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        flat = x.reshape(-1, self.dim)
        if self.dispatch == "scatter":
            weights = self.routing(flat)
            out = torch.zeros_like(flat)
            for e, expert in enumerate(self.experts):
                idx = torch.nonzero(weights[:, e] > 0).squeeze(-1)
                out = out.index_add(0, idx, expert(flat.index_select(0, idx)))
            return (out + self.bias).reshape_as(x)
        assign = self.assignments(flat).reshape(-1)  # assignment a = (token a // top_k, its expert)
        groups = self.num_experts + int(self.skipping)  # the null group of skipped assignments last
        if self.dispatch == "split":
            order = torch.argsort(assign)  # assignments grouped by expert
            sizes = (assign.unsqueeze(1) == torch.arange(groups, device=assign.device)).sum(0)
            # order >= 0, so truncation is floor: one integer Div in ONNX (rounding_mode="floor" exports ~6 ops)
            rows_in = flat.index_select(0, torch.div(order, self.top_k, rounding_mode="trunc"))
            if torch.onnx.is_in_onnx_export():
                chunks = _SplitRows.apply(rows_in, sizes, groups)
            else:
                chunks = torch.split(rows_in, sizes.tolist())
            outs = [expert(c) for expert, c in zip(self.experts, chunks[: self.num_experts], strict=True)]
            ys = torch.cat(outs + ([chunks[-1] * 0.0] if self.skipping else []))  # skipped rows add nothing
            out = ys.index_select(0, torch.argsort(order)).reshape(-1, self.top_k, self.dim).sum(1)
            return (out + self.bias).reshape_as(x)
        # row a of `rep` is token a // top_k: one Expand per layer instead of an integer division per expert
        rep = flat.unsqueeze(1).expand(-1, self.top_k, -1).reshape(-1, flat.shape[-1])
        rows, outs = [], []
        for e, expert in enumerate(self.experts):
            idx = torch.nonzero(assign == e).squeeze(-1)
            rows.append(idx)
            outs.append(expert(rep.index_select(0, idx)))
        if self.skipping:
            idx = torch.nonzero(assign == self.num_experts).squeeze(-1)
            rows.append(idx)
            outs.append(rep.index_select(0, idx) * 0.0)  # skipped assignments add nothing
        inverse = torch.argsort(torch.cat(rows))
        out = torch.cat(outs).index_select(0, inverse).reshape(flat.shape[0], self.top_k, -1).sum(1)
        return (out + self.bias).reshape_as(x)


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


def coactivation_labels(active: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Balanced partition of neurons by co-activation: ``active`` is ``(tokens, neurons)`` booleans.

    The graph's edge weight between two neurons is their co-activation count normalised by
    ``sqrt(count_i * count_j)``; the partition is spectral (the top ``k`` eigenvectors of the normalised
    affinity ``D^-1/2 W D^-1/2``, rows unit-normalised) followed by balanced k-means on that embedding.
    MoEfication partitions this graph with METIS; spectral partitioning needs no extra dependency, and
    sklearn's SpectralClustering cannot make equal-size clusters.
    """
    b = active.astype(np.float32)
    c = (b.T @ b).astype(np.float64)  # float32 counts are exact up to 2^24 tokens
    freq = np.diag(c).copy()
    w = c / np.sqrt(np.outer(freq, freq)).clip(1e-12)
    np.fill_diagonal(w, 0.0)
    d = 1.0 / np.sqrt(w.sum(1).clip(1e-12))
    _, vecs = np.linalg.eigh(d[:, None] * w * d[None, :])
    emb = vecs[:, -k:]
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
    return balanced_kmeans(emb, k, seed=seed)


def split_mlp(mlp: nn.Module, labels: np.ndarray, top_k: int) -> MoEfiedMLP:
    """Experts from the neuron partition ``labels`` of ``mlp`` (``fc1``, ``act``, ``fc2``), with a centroid router:
    expert ``e`` scores ``x . sum(w_i) + sum(b_i)`` over its neurons."""
    fc1, fc2 = mlp.fc1, mlp.fc2
    num_experts = int(labels.max()) + 1
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


def moefy_mlp(mlp: nn.Module, num_experts: int, top_k: int, seed: int = 0) -> MoEfiedMLP:
    """Split ``mlp`` (``fc1``, ``act``, ``fc2``) into ``num_experts`` neuron-cluster experts (balanced k-means of
    the normalised fc1 weight vectors) with a centroid router."""
    vecs = torch.nn.functional.normalize(mlp.fc1.weight.detach(), dim=1).numpy()
    return split_mlp(mlp, balanced_kmeans(vecs, num_experts, seed=seed), top_k)


class MLPRouter(nn.Module):
    """Router ``Linear(dim, hidden) -> ReLU -> Linear(hidden, experts)`` predicting each expert's activation mass."""

    def __init__(self, in_features: int, hidden: int, num_experts: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, num_experts
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net(x)


def expert_mass(moe: MoEfiedMLP, x: torch.Tensor, target: str = "activation", chunk: int = 4096) -> torch.Tensor:
    """``(tokens, experts)``: each expert's activation mass (sum of ``|act|`` over its neurons) or output L2 norm."""
    cols = []
    with torch.inference_mode():
        for i in range(0, len(x), chunk):
            xs = x[i : i + chunk]
            row = []
            for expert in moe.experts:
                h = expert.act(expert.fc1(xs))
                row.append(h.abs().sum(-1) if target == "activation" else expert.fc2(h).norm(dim=-1))
            cols.append(torch.stack(row, -1))
    return torch.cat(cols)


def router_recall(moe: MoEfiedMLP, x: torch.Tensor, mass: torch.Tensor) -> float:
    """Fraction of each token's ``top_k`` highest-mass experts that the router selects (1.0: oracle routing)."""
    with torch.inference_mode():
        best = mass.topk(moe.top_k, dim=-1).indices
        picked = torch.zeros_like(mass, dtype=torch.bool).scatter(-1, moe.selected(x), True)
        return float(picked.gather(-1, best).float().mean())


def train_mlp_router(
    moe: MoEfiedMLP, x: torch.Tensor, hidden: int = 128, epochs: int = 10, target: str = "activation", seed: int = 0
) -> dict[str, float]:
    """Replace ``moe``'s router by an :class:`MLPRouter` regressed (MSE) on each expert's mass for the tokens ``x``.

    A tenth of the tokens is held out to report the router recall of the centroid router and of the MLP.
    """
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=gen)
    n_val = max(1, len(x) // 10)
    val, fit = order[:n_val], order[n_val:]
    if len(fit) == 0:
        raise InputError("moefy: router training needs at least 2 calibration tokens")
    mass = expert_mass(moe, x, target)
    scale = float(mass.mean().clamp_min(1e-12))
    centroid_recall = router_recall(moe, x[val], mass[val])
    torch.manual_seed(seed)
    router = MLPRouter(x.shape[-1], hidden, moe.num_experts)
    opt = torch.optim.Adam(router.parameters(), lr=1e-3)
    batch = 256
    steps = max(1, epochs * -(-len(fit) // batch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses: list[float] = []
    step = 0
    while step < steps:
        perm = fit[torch.randperm(len(fit), generator=gen)]
        for i in range(0, len(perm), batch):
            if step >= steps:
                break
            idx = perm[i : i + batch]
            loss = torch.nn.functional.mse_loss(router(x[idx]), mass[idx] / scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step += 1
    moe.router = router.eval()
    return {
        "steps": steps,
        "loss_first": round(float(np.mean(losses[:20])), 5),
        "loss_last": round(float(np.mean(losses[-20:])), 5),
        "recall_centroid": round(centroid_recall, 4),
        "recall_mlp": round(router_recall(moe, x[val], mass[val]), 4),
    }


class FFNSite(NamedTuple):
    """One dense feed-forward network found in a model, and how to put its MoEfied replacement in place."""

    name: str  # module path of the FFN (or of the transformer layer holding a split FFN)
    fc1: nn.Linear
    act: nn.Module
    fc2: nn.Linear
    install: Callable[[nn.Module], None]


def _set(parent: nn.Module, child: str) -> Callable[[nn.Module], None]:
    return lambda new: setattr(parent, child, new)


def _install_hf(layer: nn.Module) -> Callable[[nn.Module], None]:
    def install(new: nn.Module) -> None:
        # BertLayer runs ``output(intermediate(x), x)`` with ``output = LayerNorm(dropout(dense(h)) + x)``:
        # the MoE (fc2 included) becomes ``intermediate`` and ``output.dense`` an identity.
        layer.intermediate = new
        layer.output.dense = nn.Identity()

    return install


def _act_module(act: object) -> nn.Module:
    if isinstance(act, nn.Module):
        return act
    raise InputError(f"moefy: the FFN activation {act!r} is not an nn.Module (cannot copy it into experts)")


def dense_ffns(module: nn.Module) -> list[FFNSite]:
    """Every dense FFN of ``module``: modules with ``fc1``, ``act``, ``fc2`` (the zoo's transformer blocks),
    and Hugging Face BERT-family layers (``intermediate.dense`` + ``intermediate_act_fn``, ``output.dense``
    + ``output.LayerNorm``: BERT, RoBERTa, MiniLM sentence encoders), in module order."""
    found: list[FFNSite] = []
    moe_prefixes = tuple(f"{n}." for n, m in module.named_modules() if hasattr(m, "router") and n)
    for pname, parent in module.named_modules():
        if hasattr(parent, "router") or f"{pname}.".startswith(moe_prefixes):
            continue  # experts of an MoE layer are not dense FFNs
        inter, out = getattr(parent, "intermediate", None), getattr(parent, "output", None)
        if (
            isinstance(getattr(inter, "dense", None), nn.Linear)
            and hasattr(inter, "intermediate_act_fn")
            and isinstance(getattr(out, "dense", None), nn.Linear)
            and hasattr(out, "LayerNorm")
        ):
            found.append(
                FFNSite(pname, inter.dense, _act_module(inter.intermediate_act_fn), out.dense, _install_hf(parent))
            )
            continue
        for child_name, child in parent.named_children():
            if (
                isinstance(getattr(child, "fc1", None), nn.Linear)
                and isinstance(getattr(child, "fc2", None), nn.Linear)
                and hasattr(child, "act")
            ):
                name = f"{pname}.{child_name}" if pname else child_name
                found.append(FFNSite(name, child.fc1, _act_module(child.act), child.fc2, _set(parent, child_name)))
    return found
