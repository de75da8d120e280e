"""moefy: dense FFNs split into routed neuron-cluster experts (MoEfication)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from testutil import experts_in_graph

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
    proto = onnx.load(str(path))
    assert [n.op_type for n in proto.graph.node].count("Split") == 2  # the default dispatch: one per layer
    assert experts_in_graph(proto) == 8  # 2 layers x 4 experts, whatever the export sample routed
    with pytest.raises(InputError, match="top_k=5"):
        cls(cls.Config.model_validate({"num_experts": 4, "top_k": 5})).apply(
            ModelArtifact("fp32", "torch", module=model), StageContext(task, tmp_path), "fp32"
        )


def test_split_dispatch_matches_gather_and_runs_on_both_runtimes(tmp_path: Path) -> None:
    """``dispatch="split"``: tokens sorted by expert and cut by one ONNX Split whose sizes are computed at run
    time. Same outputs as the gather dispatch in torch; exported from a one-token sample the graph still holds
    every expert and one Split per layer; ONNX Runtime and OpenVINO (FP32) match torch for other token counts,
    including counts where some expert receives no token."""
    import onnxruntime as ort
    import openvino as ov

    torch.manual_seed(0)
    mlp = _tiny("bert_classifier").blocks[0].mlp
    moe = moefy_mlp(mlp, 4, 2).eval()
    x = torch.randn(3, 7, mlp.fc1.in_features)
    with torch.inference_mode():
        moe.dispatch = "gather"
        gather = moe(x)
        moe.dispatch = "split"
        torch.testing.assert_close(moe(x), gather, atol=1e-6, rtol=1e-5)
        path = tmp_path / "split.onnx"
        torch.onnx.export(moe, (x[:1, :1],), str(path), input_names=["x"], dynamo=False,
                          dynamic_axes={"x": {0: "b", 1: "t"}})  # fmt: skip
    proto = onnx.load(str(path))
    assert [n.op_type for n in proto.graph.node].count("Split") == 1
    names = {i.name for i in proto.graph.initializer}
    assert {f"experts.{e}.fc1.weight" for e in range(4)} <= names
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    empty_seen = False
    for shape in ((1, 1), (2, 5), (3, 16)):
        xi = torch.randn(*shape, mlp.fc1.in_features)
        with torch.inference_mode():
            ref = moe(xi).numpy()
            empty_seen |= len(moe.selected(xi.reshape(-1, xi.shape[-1])).unique()) < 4
        feed = {"x": xi.numpy()}
        assert np.abs(sess.run(None, feed)[0] - ref).max() < 1e-5
        assert np.abs(np.asarray(compiled(feed)[0]) - ref).max() < 1e-5
    assert empty_seen  # one token routes to 2 of 4 experts: the Split yields empty chunks


def test_moe_slim_reduces_a_moefied_models_top_k_and_distills(tmp_path: Path) -> None:
    """moefy then moe-slim (top-2 -> top-1 with distillation from the dense model): moe-slim takes MoEfied
    layers (MLP router included: its MACs are counted from its Linear layers) and the result exports."""
    from effdl.export import check_export, export_onnx
    from effdl.recipe import ExportConfig

    task = get_task("seq_majority", n_train=128)
    model = _tiny("bert_classifier", depth=2)
    moefy = STAGES.get("moefy")
    cfg = {"num_experts": 4, "top_k": 2, "router": "mlp", "router_hidden": 8, "router_epochs": 1, "eval_samples": 32}
    src = ModelArtifact("fp32", "torch", module=model)
    art, _ = moefy(moefy.Config.model_validate(cfg)).apply(src, StageContext(task, tmp_path, teacher=model), "fp32")
    slim = STAGES.get("moe-slim")
    out, d = slim(slim.Config.model_validate({"top_k": 1, "distill": {"epochs": 1, "batch_size": 64}})).apply(
        art, StageContext(task, tmp_path, teacher=model), "fp32"
    )
    layers = [m for m in out.module.modules() if isinstance(m, MoEfiedMLP)]
    assert len(layers) == 2 and all(m.top_k == 1 and m.dispatch == "split" for m in layers)
    router_macs = sum(m.weight.numel() for m in layers[0].router.modules() if isinstance(m, torch.nn.Linear))
    for rec in d["layers"].values():
        assert rec["before"]["experts_per_token"] == 2.0 and rec["after"]["experts_per_token"] == 1.0
        expert_macs = rec["after"]["macs_per_token"] - router_macs  # router + one expert per token
        assert expert_macs > 0 and rec["before"]["macs_per_token"] == pytest.approx(router_macs + 2 * expert_macs)
    assert d["distill"]["steps"] >= 1
    cfg_x = ExportConfig(exporter="torchscript")
    path = export_onnx(out.module, task, tmp_path / "m.onnx", cfg_x)
    assert check_export(out.module, task, path, cfg_x)["max_abs_error"] < 1e-4
    with pytest.raises(InputError, match="MLPRouter router, not a Linear one"):  # pruning rewrites router rows
        slim(slim.Config.model_validate({"keep_experts": 2})).apply(art, StageContext(task, tmp_path), "fp32")


def test_dynamic_skipping_of_secondary_experts_in_every_dispatch(tmp_path: Path) -> None:
    """``skip_threshold``: a token's secondary expert whose softmax weight among its top-2 router scores is below
    the threshold does not run (its row adds nothing). Torch matches a direct computation in the three
    dispatches; the split export keeps every expert plus the null group, and ONNX Runtime and OpenVINO (FP32)
    match torch on token counts where some tokens skip and some do not; moe-slim sets it and counts it."""
    import onnxruntime as ort
    import openvino as ov

    torch.manual_seed(0)
    mlp = _tiny("bert_classifier").blocks[0].mlp
    moe = moefy_mlp(mlp, 4, 2).eval()
    x = torch.randn(3, 16, mlp.fc1.in_features)
    flat = x.reshape(-1, x.shape[-1])
    with torch.inference_mode():
        top = moe.router(flat).topk(2, dim=-1)
        secondary = torch.softmax(top.values, -1)[:, 1]
        moe.skip_threshold = float(secondary.median())  # half the tokens skip their secondary expert
        skip = secondary < moe.skip_threshold
        assert 0 < int(skip.sum()) < len(skip) and 0 < moe.skip_threshold < 0.5
        want = torch.stack([  # each token: bias + its best expert + its secondary unless skipped
            moe.bias + sum(moe.experts[int(top.indices[t, j])](flat[t]) for j in range(2 - int(skip[t])))
            for t in range(len(flat))
        ])  # fmt: skip
        assert torch.equal(moe.routing(flat).sum(-1), 2.0 - skip.float())
        for dispatch in ("gather", "split", "scatter"):
            moe.dispatch = dispatch
            torch.testing.assert_close(moe(x).reshape(-1, x.shape[-1]), want, atol=1e-5, rtol=1e-5)
        moe.dispatch = "split"
        path = tmp_path / "skip.onnx"
        torch.onnx.export(moe, (x[:1, :2],), str(path), input_names=["x"], dynamo=False,
                          dynamic_axes={"x": {0: "b", 1: "t"}})  # fmt: skip
    proto = onnx.load(str(path))
    assert {f"experts.{e}.fc1.weight" for e in range(4)} <= {i.name for i in proto.graph.initializer}
    (split,) = [n for n in proto.graph.node if n.op_type == "Split"]
    assert len(split.output) == 5  # four experts and the null group
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for shape in ((1, 1), (2, 5), (3, 16)):
        xi = torch.randn(*shape, mlp.fc1.in_features)
        with torch.inference_mode():
            ref = moe(xi).numpy()
        feed = {"x": xi.numpy()}
        assert np.abs(sess.run(None, feed)[0] - ref).max() < 1e-5
        assert np.abs(np.asarray(compiled(feed)[0]) - ref).max() < 1e-5


def test_moe_slim_sets_skipping_on_moefied_layers_and_counts_it(tmp_path: Path) -> None:
    task = get_task("seq_majority", n_train=64)
    model = _tiny("bert_classifier", depth=1)
    moefy = STAGES.get("moefy")
    cfg = {"num_experts": 4, "top_k": 2, "eval_samples": 16}
    art, _ = moefy(moefy.Config.model_validate(cfg)).apply(
        ModelArtifact("fp32", "torch", module=model), StageContext(task, tmp_path, teacher=model), "fp32"
    )
    slim = STAGES.get("moe-slim")
    out, d = slim(slim.Config.model_validate({"skip_threshold": 0.49})).apply(art, StageContext(task, tmp_path), "fp32")
    (layer,) = [m for m in out.module.modules() if isinstance(m, MoEfiedMLP)]
    assert layer.skip_threshold == 0.49 and layer.skipping
    (rec,) = d["layers"].values()
    assert rec["before"]["experts_per_token"] == 2.0 and 1.0 <= rec["after"]["experts_per_token"] < 2.0
    assert rec["after"]["skip_threshold"] == 0.49
