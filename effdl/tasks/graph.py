"""Node classification on synthetic community graphs (stochastic block model)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

from effdl.tasks import register_task
from effdl.tasks.base import MetricSpec, Split, SplitName, Task
from effdl.tasks.metrics import accuracy, token_cross_entropy


def sbm_graphs(
    n_graphs: int,
    rng: np.random.Generator,
    nodes: int = 32,
    communities: int = 4,
    p_in: float = 0.6,
    p_out: float = 0.05,
    features: int = 8,
    signal: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stochastic-block-model graphs: node features, 0/1 symmetric adjacency (no self loops), node labels.

    A node's features are ``signal`` times its community's one-hot code (padded to ``features``) plus
    standard-normal noise, so features alone classify poorly and the graph structure carries the rest.
    """
    labels = rng.integers(0, communities, (n_graphs, nodes))
    same = labels[:, :, None] == labels[:, None, :]
    prob = np.where(same, p_in, p_out)
    upper = np.triu(rng.random((n_graphs, nodes, nodes)) < prob, 1)
    adj = (upper | upper.transpose(0, 2, 1)).astype(np.float32)
    code = np.eye(features, dtype=np.float32)[labels % features] * signal
    x = (code + rng.standard_normal((n_graphs, nodes, features))).astype(np.float32)
    return x, adj, labels.astype(np.int64)


@register_task
class SBMNodes(Task):
    """Node classification on stochastic-block-model graphs (one fixed-size graph per sample).

    Each sample is a graph of ``nodes`` (default 32) nodes in 4 communities (edge probability 0.6
    inside, 0.05 across) with 8 noisy node features. Inputs: ``x`` ``(batch, nodes, 8)`` float32 and
    ``adj`` ``(batch, nodes, nodes)`` float32 0/1 symmetric adjacency without self loops (models normalise
    it themselves). Target: each node's community. Metric: node accuracy (percent). Splits: 100
    calibration, 300 held-out, ``n_train`` (default 2000) train graphs, from independent ``seed`` streams.
    """

    name: ClassVar[str] = "sbm_nodes"
    metric: ClassVar[MetricSpec] = MetricSpec("node_accuracy", "%", True)
    input_names: ClassVar[tuple[str, ...]] = ("x", "adj")
    output_names: ClassVar[tuple[str, ...]] = ("logits",)
    num_classes: ClassVar[int] = 4
    num_features: ClassVar[int] = 8

    def _make_splits(self) -> dict[SplitName, Split]:
        nodes = int(self.options.get("nodes", 32))
        sizes = {"calibration": 100, "heldout": 300, "train": int(self.options.get("n_train", 2000))}
        out: dict[SplitName, Split] = {}
        for i, (split, n) in enumerate(sizes.items()):
            x, adj, labels = sbm_graphs(
                n, np.random.default_rng([self.seed, 505, i]), nodes, self.num_classes, features=self.num_features
            )
            out[split] = Split({"x": x, "adj": adj}, labels)  # type: ignore[index]
        return out

    def score(self, outputs: list[np.ndarray], targets: np.ndarray | None) -> float:
        return accuracy(outputs[0], targets)

    def loss(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], targets: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return token_cross_entropy(outputs, targets)
