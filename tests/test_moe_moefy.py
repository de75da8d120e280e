"""moefy: dense FFNs split into routed neuron-cluster experts (MoEfication)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from effdl.compress import STAGES
from effdl.compress.base import ModelArtifact, StageContext
from effdl.compress.moe_moefy_nn import MoEfiedMLP, balanced_kmeans, moefy_mlp
from effdl.errors import InputError
from effdl.tasks import get_task
from effdl.zoo import get_model_entry


def _tiny(name: str, **over: object) -> torch.nn.Module:
    entry = get_model_entry(name)
    torch.manual_seed(0)
    return entry.build(**{**entry.tiny, **over}).eval()


def test_balanced_kmeans_gives_equal_clusters() -> None:
    v = np.random.default_rng(0).normal(size=(30, 4))
    labels = balanced_kmeans(v, 4)
    assert sorted(np.bincount(labels).tolist()) == [7, 7, 8, 8]


@pytest.mark.parametrize("name", ["bert_classifier", "gpt", "vit"])
def test_all_experts_reproduce_the_dense_ffn_and_fewer_approximate_it(name: str) -> None:
    model = _tiny(name)
    mlp = model.blocks[0].mlp
    x = torch.randn(3, 5, mlp.fc1.in_features)
    with torch.inference_mode():
        full = moefy_mlp(mlp, 4, 4)
        torch.testing.assert_close(full(x), mlp(x), atol=1e-5, rtol=1e-5)
        half = moefy_mlp(mlp, 4, 2)
        assert ((half.routing(x) > 0).sum(-1) == 2).all()
        assert not torch.allclose(half(x), mlp(x))


def test_moefy_stage_with_finetune_exports_every_expert(tmp_path: Path) -> None:
    from effdl.export import check_export, export_onnx
    from effdl.recipe import ExportConfig

    task = get_task("seq_majority", n_train=128)
    model = _tiny("bert_classifier", depth=2)
    cls = STAGES.get("moefy")
    cfg = cls.Config.model_validate(
        {"num_experts": 4, "top_k": 2, "eval_samples": 64, "finetune": {"epochs": 1, "batch_size": 64}}
    )
    art, d = cls(cfg).apply(
        ModelArtifact("fp32", "torch", module=model), StageContext(task, tmp_path, teacher=model), "fp32"
    )
    assert sum(isinstance(m, MoEfiedMLP) for m in art.module.modules()) == 2
    assert not any(isinstance(m, MoEfiedMLP) for m in model.modules())  # the input is untouched
    assert d["finetune"]["steps"] == 2 and set(d["heldout_metric"]) == {"dense", "moefied", "moefied_finetuned"}
    cfg_x = ExportConfig(exporter="torchscript")
    path = export_onnx(art.module, task, tmp_path / "m.onnx", cfg_x)
    assert check_export(art.module, task, path, cfg_x)["max_abs_error"] < 1e-4
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("NonZero") == 8  # 2 layers x 4 experts, whatever the export sample routed
    with pytest.raises(InputError, match="top_k=5"):
        cls(cls.Config.model_validate({"num_experts": 4, "top_k": 5})).apply(
            ModelArtifact("fp32", "torch", module=model), StageContext(task, tmp_path), "fp32"
        )
