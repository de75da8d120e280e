"""Pruning and N:M sparsity stages on tiny zoo models (16x16 digits, a one-block BERT)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from effdl.compress import STAGES, ModelArtifact, StageContext
from effdl.compress.finetune import FinetuneConfig, finetune
from effdl.compress.prune import cubic_schedule, output_layers, update_zoo_attention_heads
from effdl.compress.sparsity import has_nm_pattern, nm_mask
from effdl.errors import InputError
from effdl.tasks import get_task
from effdl.zoo import get_model_entry

FT = {"max_steps": 3, "batch_size": 32}


def _trained(arch: str, task_name: str, epochs: int, **task_options: object) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    entry = get_model_entry(arch)
    model = entry.build(**entry.tiny)
    task = get_task(task_name, **task_options)
    finetune(model, task, FinetuneConfig(epochs=epochs, max_steps=25, lr=3e-3))  # a short, cheap training
    return model.eval(), task


@pytest.fixture(scope="module")
def resnet() -> tuple[torch.nn.Module, object]:
    return _trained("resnet8", "digits", 1, size=16)


@pytest.fixture(scope="module")
def bert() -> tuple[torch.nn.Module, object]:
    return _trained("bert_classifier", "seq_majority", 1, n_train=1000, length=16)


def _run(name: str, cfg: dict, model: torch.nn.Module, task: object, tmp_path: Path) -> tuple[torch.nn.Module, dict]:
    cls = STAGES.get(name)
    ctx = StageContext(task, tmp_path, teacher=model)  # type: ignore[arg-type]
    out, details = cls(cls.Config(**cfg)).apply(ModelArtifact("fp32", "torch", module=model), ctx, "fp32")
    assert out.kind == "torch" and out.lineage[-1] == name
    return out.module, details


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cubic_schedule() -> None:
    s = cubic_schedule(0.8, 4)
    assert s[-1] == pytest.approx(0.8) and all(a < b for a, b in zip(s, s[1:], strict=False))
    assert s[0] == pytest.approx(0.8 * (1 - (1 - 1 / 4) ** 3))  # Zhu & Gupta: fast early, slow late


def test_unstructured_global_oneshot(resnet: tuple, tmp_path: Path) -> None:
    model, task = resnet
    before = copy.deepcopy(model)
    pruned, d = _run("prune-unstructured", {"sparsity": 0.6, "finetune": FT}, model, task, tmp_path)
    assert _same_weights(model, before)  # the input (teacher) is untouched
    assert d["sparsity"]["pruned_layers"] == pytest.approx(0.6, abs=0.01)
    assert len(set(d["sparsity"]["per_layer"].values())) > 1  # global threshold: uneven per layer
    # Masks are permanent: plain weights, no *_orig / *_mask, no pruning hooks.
    assert not [k for k in pruned.state_dict() if k.endswith(("_orig", "_mask"))]
    assert all(not m._forward_pre_hooks for m in pruned.modules())
    assert d["size_after"]["zip_bytes"] < d["size_before"]["zip_bytes"]
    assert d["size_after"]["sparse_bitmap_bytes"] < d["size_after"]["dense_fp32_bytes"]
    assert "latency does not improve" in d["note"]


def test_unstructured_per_layer_gradual(bert: tuple, tmp_path: Path) -> None:
    model, task = bert
    _, d = _run(
        "prune-unstructured",
        {"sparsity": 0.5, "scope": "layer", "schedule": "gradual", "steps": 3, "finetune": {**FT, "max_steps": 1}},
        model,
        task,
        tmp_path,
    )
    assert [s["target_sparsity"] for s in d["steps"]] == [round(x, 4) for x in cubic_schedule(0.5, 3)]
    for name, s in d["sparsity"]["per_layer"].items():
        assert s == pytest.approx(0.5, abs=0.02), name


def test_unstructured_global_gradual(bert: tuple, tmp_path: Path) -> None:
    model, task = bert
    cfg = {"sparsity": 0.7, "schedule": "gradual", "steps": 3, "finetune": {"epochs": 0}}
    _, d = _run("prune-unstructured", cfg, model, task, tmp_path)
    assert d["sparsity"]["pruned_layers"] == pytest.approx(0.7, abs=0.005)


def test_unstructured_bad_exclude_regex(resnet: tuple, tmp_path: Path) -> None:
    model, task = resnet
    with pytest.raises(InputError, match="exclude"):
        _run("prune-unstructured", {"exclude": ["("]}, model, task, tmp_path)


def test_structured_resnet_halves_channels_and_exports(resnet: tuple, tmp_path: Path) -> None:
    import onnxruntime as ort

    from effdl.export import export_onnx, torch_outputs

    model, task = resnet
    pruned, d = _run("prune-structured", {"ratio": 0.5, "finetune": FT}, model, task, tmp_path)
    assert pruned.stem[0].out_channels == model.stem[0].out_channels // 2
    assert pruned.fc.out_features == model.fc.out_features  # output layer kept
    assert d["ignored_layers"] == ["fc"]
    assert d["macs_after"] < 0.4 * d["macs_before"] and d["parameters_after"] < d["parameters_before"]
    held = task.split("heldout").take(16)
    path = export_onnx(pruned, task, tmp_path / "pruned.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        sess.run(None, held.inputs)[0], torch_outputs(pruned, task, held.inputs)[0], atol=1e-4, rtol=1e-3
    )


def test_structured_mac_budget_with_taylor(resnet: tuple, tmp_path: Path) -> None:
    model, task = resnet
    _, d = _run(
        "prune-structured",
        {"target_macs": 0.5, "importance": "taylor", "taylor_batches": 1, "finetune": FT},
        model,
        task,
        tmp_path,
    )
    assert d["mac_fraction"] <= 0.5 and d["mac_fraction"] > 0.2


def test_structured_depthwise_mobilenet(tmp_path: Path) -> None:
    entry = get_model_entry("mobilenetv2")
    torch.manual_seed(0)
    model = entry.build(**{**entry.tiny, "in_channels": 3, "num_classes": 6}).eval()
    task = get_task("shapes", size=16, n_train=64)
    pruned, d = _run("prune-structured", {"ratio": 0.5, "finetune": {"epochs": 0}}, model, task, tmp_path)
    for m in pruned.modules():  # depthwise convs stay depthwise: groups follow the channels
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1:
            assert m.groups == m.in_channels == m.out_channels
    assert pruned(torch.zeros(2, 3, 16, 16)).shape == (2, 6)
    assert d["macs_after"] < d["macs_before"]


def test_structured_bert_prunes_heads_and_ffn(bert: tuple, tmp_path: Path) -> None:
    model, task = bert
    pruned, d = _run("prune-structured", {"ratio": 0.5, "finetune": FT}, model, task, tmp_path)
    attn, mlp = pruned.blocks[0].attn, pruned.blocks[0].mlp
    assert d["heads"] == {"blocks.0.attn": {"before": 2, "after": 1}} and attn.heads == 1
    assert attn.q_proj.out_features == attn.head_dim
    assert mlp.fc1.out_features == model.blocks[0].mlp.fc1.out_features // 2
    tokens = torch.from_numpy(task.split("heldout").inputs["tokens"][:4])
    assert pruned(tokens).shape == (4, 4)


def test_removing_a_dead_head_keeps_outputs(tmp_path: Path) -> None:
    """A head whose q/k/v are zero adds nothing: pruning exactly that head must not change the outputs."""
    entry = get_model_entry("bert_classifier")
    torch.manual_seed(0)
    model = entry.build(dim=32, depth=1, heads=4, mlp_ratio=2.0).eval()
    task = get_task("seq_majority", n_train=64, length=16)
    attn = model.blocks[0].attn
    dead = slice(2 * attn.head_dim, 3 * attn.head_dim)  # head 2
    with torch.no_grad():
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            proj.weight[dead] = 0
            proj.bias[dead] = 0
    cfg = {"ratio": 0.01, "head_ratio": 0.25, "ignore": ["mlp", "embed", "head"], "finetune": {"epochs": 0}}
    pruned, d = _run("prune-structured", cfg, model, task, tmp_path)
    assert pruned.blocks[0].attn.heads == 3 and d["heads"]["blocks.0.attn"]["after"] == 3
    tokens = torch.from_numpy(task.split("heldout").inputs["tokens"][:8])
    with torch.no_grad():
        torch.testing.assert_close(pruned(tokens), model(tokens), atol=1e-5, rtol=1e-5)


def test_iterative_head_pruning_does_not_overshoot(tmp_path: Path) -> None:
    entry = get_model_entry("bert_classifier")
    torch.manual_seed(0)
    model = entry.build(dim=32, depth=2, heads=4, mlp_ratio=2.0).eval()
    task = get_task("seq_majority", n_train=64, length=16)
    pruned, d = _run("prune-structured", {"ratio": 0.5, "steps": 3, "finetune": {"epochs": 0}}, model, task, tmp_path)
    assert all(h["after"] == 2 for h in d["heads"].values())  # half of 4 heads, not compounded to 0
    assert update_zoo_attention_heads(pruned) == {"blocks.0.attn": 2, "blocks.1.attn": 2}


def test_output_layers_found(resnet: tuple) -> None:
    model, task = resnet
    x = torch.from_numpy(task.example_inputs(1)["image"])
    assert output_layers(model, [x]) == [model.fc]


def test_nm_mask_pattern() -> None:
    torch.manual_seed(0)
    w = torch.randn(8, 16)
    mask = nm_mask(w, 2, 4)
    assert has_nm_pattern(w * mask, 2, 4) and not has_nm_pattern(w, 2, 4)
    kept = (w * mask).abs().reshape(-1, 4)
    assert torch.equal(kept.topk(2, 1).values, w.abs().reshape(-1, 4).topk(2, 1).values)  # the largest two kept
    conv = torch.randn(4, 8, 3, 3)
    cm = nm_mask(conv, 2, 4)
    assert cm.shape == conv.shape and has_nm_pattern(conv * cm, 2, 4)
    assert (cm.movedim(1, -1).reshape(-1, 4).sum(1) == 2).all()  # groups along input channels per position


def test_sparsity_24_fixed_masks_and_metadata(bert: tuple, tmp_path: Path) -> None:
    from effdl.backends.torch import is_24_sparse

    model, task = bert
    pruned, d = _run("sparsity-24", {"finetune": {**FT, "lr": 1e-2}}, model, task, tmp_path)
    layers = d["semi_structured_layers"]
    assert set(layers) == {n for n, m in pruned.named_modules() if isinstance(m, torch.nn.Linear)}
    for name, m in pruned.named_modules():
        if name in layers:
            assert is_24_sparse(m.weight.detach().numpy()), name  # the torch backend's own check agrees
            assert layers[name]["pattern"] == "2:4"
    assert d["sparsity"]["pruned_layers"] == pytest.approx(0.5)
    assert d["finetune"]["steps"] == 3


def test_sparsity_24_conv_skips_what_cannot_take_it(resnet: tuple, tmp_path: Path) -> None:
    model, task = resnet
    _, d = _run("sparsity-24", {"layers": ["conv"], "finetune": {"epochs": 0}}, model, task, tmp_path)
    assert "stem.0" in d["skipped_layers"] and "multiple of 4" in d["skipped_layers"]["stem.0"]
    assert "layers.0.conv1" in d["semi_structured_layers"]


def test_sparsity_config_errors() -> None:
    from effdl.errors import RecipeError
    from effdl.recipe import parse_recipe

    with pytest.raises(RecipeError, match="n"):
        parse_recipe({"stages": [{"stage": "sparsity-24", "config": {"n": 4, "m": 4}}]})
    with pytest.raises(RecipeError, match="sparsity"):
        parse_recipe({"stages": [{"stage": "prune-unstructured", "config": {"sparsity": 1.5}}]})


def test_structured_round_to_shrinks_onnx_and_openvino_runs_it_all_int8(tmp_path: Path) -> None:
    """round_to keeps SIMD-friendly channel counts; the exported tensors shrink; OpenVINO runs every
    convolution / fully-connected layer of the pruned INT8 model in i8/u8 (no leftover dequantize path)."""
    import nncf
    import onnx
    import openvino as ov

    from effdl.backends.openvino import compute_precisions
    from effdl.export import export_onnx

    torch.manual_seed(0)
    model = get_model_entry("resnet8").build(width=16).eval()
    task = get_task("digits", size=16, n_train=64)
    pruned, d = _run(
        "prune-structured", {"ratio": 0.5, "round_to": 8, "finetune": {"epochs": 0}}, model, task, tmp_path
    )
    convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.out_channels % 8 == 0 for m in convs)
    assert pruned.stem[0].out_channels == 8 and d["macs_after"] < 0.3 * d["macs_before"]
    fp32 = export_onnx(pruned, task, tmp_path / "pruned.onnx")
    weights = {t.name: list(t.dims) for t in onnx.load(str(fp32)).graph.initializer}
    for name, m in pruned.named_modules():  # every conv exports at its pruned shape, never the original's
        if isinstance(m, torch.nn.Conv2d):
            assert weights[f"{name}.weight"] == list(m.weight.shape)
            assert m.weight.numel() < dict(model.named_modules())[name].weight.numel()

    calib = task.split("calibration").take(8).inputs["image"]
    dataset = nncf.Dataset(range(len(calib)), lambda i: {"image": calib[i : i + 1]})
    int8 = tmp_path / "int8.onnx"
    onnx.save(nncf.quantize(onnx.load(str(fp32)), dataset, subset_size=len(calib)), str(int8))
    core = ov.Core()
    summaries = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        summaries[name] = compute_precisions(compiled)
    assert summaries["fp32"]["int8"] == 0 and summaries["fp32"]["float"] >= len(convs)
    assert summaries["int8"]["float"] == 0 and summaries["int8"]["int8"] == summaries["fp32"]["float"]
    assert set(summaries["int8"]["layers"]) <= {"Convolution", "FullyConnected"}


def test_depth_resnet_removes_the_least_harmful_block_and_exports(resnet: tuple, tmp_path: Path) -> None:
    import onnxruntime as ort

    from effdl.compress.depth import residual_blocks
    from effdl.compress.depth_nn import SkippedBlock
    from effdl.export import export_onnx, torch_outputs

    model, task = resnet
    assert residual_blocks(model) == ["layers.0", "layers.1", "layers.2"]
    pruned, d = _run("prune-depth", {"blocks": 2, "ranking": "reconstruction", "finetune": FT}, model, task, tmp_path)
    first, second = d["removed"]
    assert first["score"] == min(first["scores"].values()) and len(first["scores"]) == 3
    assert len(second["scores"]) == 2 and first["block"] not in second["scores"]
    skipped = [n for n, m in pruned.named_modules() if isinstance(m, SkippedBlock)]
    assert sorted(skipped) == sorted([first["block"], second["block"]])
    assert d["macs_after"] < d["macs_before"] and d["parameters_after"] < d["parameters_before"]
    assert residual_blocks(model) == ["layers.0", "layers.1", "layers.2"]  # the input model is untouched
    for name in skipped:  # a projection block keeps its shortcut (the width must still change)
        block = model.get_submodule(name)
        assert (pruned.get_submodule(name).shortcut is None) == isinstance(block.shortcut, torch.nn.Identity)
    held = task.split("heldout").take(16)
    sess = ort.InferenceSession(str(export_onnx(pruned, task, tmp_path / "d.onnx")), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        sess.run(None, held.inputs)[0], torch_outputs(pruned, task, held.inputs)[0], atol=1e-4, rtol=1e-3
    )


def test_depth_then_structured_bert(tmp_path: Path) -> None:
    torch.manual_seed(0)
    entry = get_model_entry("bert_classifier")
    model = entry.build(**{**entry.tiny, "depth": 2})
    task = get_task("seq_majority", n_train=1000, length=16)
    finetune(model, task, FinetuneConfig(max_steps=25, lr=3e-3))
    model.eval()
    depth, d = _run("prune-depth", {"blocks": 1, "probe_steps": 3, "finetune": FT}, model, task, tmp_path)
    (removed,) = d["removed"]  # ranked by the calibration loss after a probe fine-tune of each candidate
    assert set(removed["scores"]) == {"blocks.0", "blocks.1"} and removed["score"] == min(removed["scores"].values())
    assert "probe" in d["method"] and d["score"].startswith("task loss")
    kept = depth.blocks[1 - int(removed["block"][-1])]
    x = torch.randn(2, 17, model.head.in_features)
    assert torch.equal(depth.get_submodule(removed["block"])(x), x)
    assert d["heldout_metric"]["before"] >= 0 and set(d["heldout_metric"]) == {"before", "blocks_removed", "finetuned"}
    pruned, _ = _run("prune-structured", {"ratio": 0.5, "finetune": FT}, depth, task, tmp_path)
    fc1 = [m.mlp.fc1 for m in pruned.blocks if hasattr(m, "mlp")]
    assert [f.out_features for f in fc1] == [kept.mlp.fc1.out_features // 2]
    tokens = torch.from_numpy(task.split("heldout").inputs["tokens"][:4])
    assert pruned(tokens).shape == (4, 4)


def test_depth_errors(resnet: tuple, tmp_path: Path) -> None:
    model, task = resnet
    with pytest.raises(InputError, match="3 removable residual blocks"):
        _run("prune-depth", {"blocks": 4}, model, task, tmp_path)
    with pytest.raises(InputError, match="only"):
        _run("prune-depth", {"only": ["("]}, model, task, tmp_path)
    with pytest.raises(InputError, match="none"):
        _run("prune-depth", {"only": ["nothing"]}, model, task, tmp_path)


def test_depth_per_mac_prefers_the_expensive_block(resnet: tuple, tmp_path: Path) -> None:
    model, task = resnet
    _, d = _run("prune-depth", {"ranking": "reconstruction", "per_mac": True, "finetune": FT}, model, task, tmp_path)
    (removed,) = d["removed"]
    ratios = {n: v["score_per_mmac"] for n, v in removed["per_mac"].items()}
    assert removed["block"] == min(ratios, key=ratios.__getitem__)
    saved = {n: v["saved_macs"] for n, v in removed["per_mac"].items()}
    assert set(saved) == {"layers.0", "layers.1", "layers.2"} and min(saved.values()) > 0
    assert saved["layers.0"] > saved["layers.2"]  # the full-resolution block holds the most MACs
    assert d["macs_before"] - d["macs_after"] == saved[removed["block"]]
    block = removed["block"]
    assert ratios[block] == pytest.approx(1e6 * removed["scores"][block] / saved[block], rel=1e-3)
