"""moefy on Hugging Face BERT-family encoders (split FFNs), co-activation clustering, the MLP router, the
activation-sparsity fine-tune and the gather dispatch."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from testutil import experts_in_graph, tiny_bert_folder  # noqa: E402

from effdl.compress import STAGES  # noqa: E402
from effdl.compress.base import ModelArtifact, StageContext  # noqa: E402
from effdl.compress.moe import _trim_padding  # noqa: E402
from effdl.compress.moe_moefy_nn import (  # noqa: E402
    MLPRouter,
    MoEfiedMLP,
    coactivation_labels,
    dense_ffns,
    moefy_mlp,
    split_mlp,
    train_mlp_router,
)
from effdl.export import torch_outputs  # noqa: E402
from effdl.sources import load_checkpoint  # noqa: E402
from effdl.tasks import get_task  # noqa: E402


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A tiny random BERT folder (config + safetensors + tokenizer.json), as Hugging Face saves one."""
    return tiny_bert_folder(tmp_path_factory.mktemp("hf") / "tiny-bert")


def _load(folder: Path, seq_len: int = 32) -> tuple[torch.nn.Module, object]:
    loaded = load_checkpoint(folder)
    return loaded.module.eval(), get_task(loaded.task, **{**loaded.task_options, "seq_len": seq_len})


def test_hf_bert_ffns_split_exactly_and_dispatches_agree(tiny_bert: Path) -> None:
    model, task = _load(tiny_bert)
    held = task.split("heldout").take(64)
    ref = torch_outputs(model, task, held.inputs)[0]
    assert [s.name for s in dense_ffns(model)] == ["backbone.encoder.layer.0", "backbone.encoder.layer.1"]
    full = copy.deepcopy(model)
    for site in dense_ffns(full):
        site.install(moefy_mlp(site, 4, 4))
    assert dense_ffns(full) == [] and sum(isinstance(m, MoEfiedMLP) for m in full.modules()) == 2
    np.testing.assert_allclose(torch_outputs(full, task, held.inputs)[0], ref, atol=1e-5)
    half = copy.deepcopy(model)
    for site in dense_ffns(half):
        site.install(moefy_mlp(site, 4, 2))
    split = torch_outputs(half, task, held.inputs)[0]  # the default dispatch
    assert np.abs(split - ref).max() > 1e-3  # two of four experts: an approximation
    for dispatch in ("gather", "scatter"):
        for m in half.modules():
            if isinstance(m, MoEfiedMLP):
                m.dispatch = dispatch
        np.testing.assert_allclose(torch_outputs(half, task, held.inputs)[0], split, atol=1e-5)


def test_coactivation_partition_recovers_co_firing_groups() -> None:
    rng = np.random.default_rng(0)
    groups = rng.permutation(np.repeat(np.arange(4), 6))  # 24 neurons, 4 hidden groups of 6
    fires = rng.random((400, 4)) < 0.3  # which group fires on each token
    active = fires[:, groups] & (rng.random((400, 24)) < 0.9)
    labels = coactivation_labels(active, 4)
    assert sorted(np.bincount(labels).tolist()) == [6, 6, 6, 6]
    for g in range(4):  # every hidden group lands in one cluster
        assert len(set(labels[groups == g].tolist())) == 1


def test_mlp_router_beats_the_centroid_router_on_held_out_tokens() -> None:
    torch.manual_seed(0)
    mlp = torch.nn.Module()
    mlp.fc1, mlp.act, mlp.fc2 = torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Linear(64, 16)
    x = torch.randn(3000, 16)
    # a random partition: the centroid's linear proxy of each expert's activation mass is weak there
    moe = split_mlp(mlp, np.random.default_rng(0).permutation(np.repeat(np.arange(8), 8)), 2)
    rec = train_mlp_router(moe, x, hidden=64, epochs=60)
    assert isinstance(moe.router, MLPRouter) and rec["loss_last"] < rec["loss_first"] / 10
    assert rec["recall_mlp"] > rec["recall_centroid"] + 0.05
    assert rec["recall_mlp"] > 0.6  # chance is 2 / 8


def test_trim_padding_cuts_only_the_common_padding_tail() -> None:
    ids = torch.arange(12).reshape(2, 6)
    mask = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]])
    a, m = _trim_padding([ids, mask], ("input_ids", "attention_mask"))
    assert a.shape == (2, 3) and m.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert _trim_padding([ids, mask], ("x", "y"))[0].shape == (2, 6)


def test_moefy_stage_on_hf_bert_with_every_option(tiny_bert: Path, tmp_path: Path) -> None:
    from effdl.export import check_export, export_onnx
    from effdl.recipe import ExportConfig

    model, task = _load(tiny_bert)
    cls = STAGES.get("moefy")
    cfg = cls.Config.model_validate(
        {
            "num_experts": 4,
            "top_k": 2,
            "clustering": "coactivation",
            "router": "mlp",
            "router_hidden": 16,
            "router_epochs": 2,
            "calibration_samples": 64,
            "eval_samples": 64,
            "sparsity_finetune": {"epochs": 1, "samples": 64, "batch_size": 32, "lr": 1e-3, "l1": 1.0},
            "finetune": {"epochs": 1, "samples": 64, "batch_size": 32, "lr": 1e-3, "hidden_weight": 1.0},
        }
    )
    art, d = cls(cfg).apply(
        ModelArtifact("fp32", "torch", module=model), StageContext(task, tmp_path, teacher=model), "fp32"
    )
    assert set(d["heldout"]) == {"dense", "dense_sparsified", "moefied", "moefied_finetuned"}
    assert d["heldout"]["dense"]["cosine"] == pytest.approx(1.0)
    assert 0 < d["heldout"]["moefied_finetuned"]["cosine"] <= 1.0
    assert d["sparsity_finetune"]["objective"] == "outputs" and d["finetune"]["steps"] == 2
    assert d["active_fraction"]["dense_sparsified"] < d["active_fraction"]["dense"]  # the L1 term works
    for rec in d["layers"].values():
        assert rec["neurons_per_expert"] == [16, 16, 16, 16]
        assert 0 <= rec["router"]["recall_mlp"] <= 1 and sum(rec["tokens_per_expert"]) % 2 == 0
    assert not any(isinstance(m, MoEfiedMLP) for m in model.modules())  # the input is untouched
    cfg_x = ExportConfig(exporter="torchscript")
    path = export_onnx(art.module, task, tmp_path / "m.onnx", cfg_x)
    assert check_export(art.module, task, path, cfg_x)["max_abs_error"] < 1e-4
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("Split") == 2 and "ScatterElements" not in ops  # the split dispatch: one Split per layer
    assert experts_in_graph(onnx.load(str(path))) == 8  # 2 layers x 4 experts
    # ONNX Runtime and OpenVINO (FP32 pinned) run the split dispatch like torch, every expert receiving tokens
    import onnxruntime as ort
    import openvino as ov

    held = task.split("heldout").take(64)
    ref = torch_outputs(art.module, task, held.inputs)[0]
    used: set[tuple[int, int]] = set()
    with torch.inference_mode():
        for m in art.module.modules():
            if isinstance(m, MoEfiedMLP):
                m.register_forward_pre_hook(
                    lambda mod, a: used.update((id(mod), int(e)) for e in mod.selected(a[0]).unique())
                )
        torch_outputs(art.module, task, held.inputs)
    assert len(used) == 8
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for i in range(0, 64, 16):
        feed = {k: v[i : i + 16] for k, v in held.inputs.items()}
        assert np.abs(sess.run(None, feed)[0] - ref[i : i + 16]).max() < 1e-4
        assert np.abs(np.asarray(compiled(feed)[0]) - ref[i : i + 16]).max() < 1e-4
