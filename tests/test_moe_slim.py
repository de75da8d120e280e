"""moe-slim (expert pruning, merging, top-k, skipping, distillation) and moe-quantize (per-expert precision)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from effdl.compress import STAGES
from effdl.compress.base import ModelArtifact, StageContext
from effdl.compress.moe import capture_layer_inputs, prune_layer, routing_counts
from effdl.errors import InputError
from effdl.tasks import get_task
from effdl.zoo import get_model_entry


@pytest.fixture(scope="module")
def task():  # noqa: ANN201
    return get_task("seq_majority", n_train=256)


def _model(**over: object) -> torch.nn.Module:
    entry = get_model_entry("moe_transformer")
    torch.manual_seed(0)
    return entry.build(**{**entry.tiny, "num_experts": 4, **over}).eval()


def _slim(model: torch.nn.Module, task, cfg: dict, teacher: torch.nn.Module | None = None):  # noqa: ANN001, ANN202
    cls = STAGES.get("moe-slim")
    ctx = StageContext(task, Path("."), teacher=teacher if teacher is not None else model)
    return cls(cls.Config.model_validate(cfg)).apply(ModelArtifact("fp32", "torch", module=model), ctx, "fp32")


def _flat(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_frequency_pruning_keeps_most_used_experts_and_their_router_rows(task) -> None:  # noqa: ANN001
    model = _model()
    before = _flat(model)
    x = capture_layer_inputs(model, task, 64)["blocks.0.mlp"]
    layer = model.blocks[0].mlp
    counts = routing_counts(layer, x)
    art, d = _slim(model, task, {"keep_experts": 2, "ranking": "frequency", "calibration_samples": 64})
    expected = sorted(np.argsort(-counts, kind="stable")[:2].tolist())
    rec = d["layers"]["blocks.0.mlp"]
    assert rec["experts_kept"] == expected and rec["before"]["tokens_per_expert"] == counts.tolist()
    new = art.module.blocks[0].mlp
    assert new.num_experts == 2 and len(new.experts) == 2 and new.router.out_features == 2
    torch.testing.assert_close(new.router.weight, layer.router.weight[expected])
    torch.testing.assert_close(new.experts[1].fc1.weight, layer.experts[expected[1]].fc1.weight)
    weights = new.routing(x)  # renormalised over the kept experts: top-2 of 2, summing to one
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(x)))
    assert sum(rec["after"]["tokens_per_expert"]) == 2 * len(x)
    for k, v in _flat(model).items():  # the input (teacher) is untouched
        torch.testing.assert_close(v, before[k])


def test_reconstruction_ranking_removes_the_least_harmful_expert_first(task) -> None:  # noqa: ANN001
    model = _model()
    x = capture_layer_inputs(model, task, 32)["blocks.0.mlp"]
    layer = model.blocks[0].mlp
    ref = layer.forward_dense(x)
    errs = []
    for e in range(4):
        trial = copy.deepcopy(layer)
        prune_layer(trial, [i for i in range(4) if i != e])
        errs.append(float(((trial.forward_dense(x) - ref) ** 2).mean()))
    _, d = _slim(model, task, {"keep_experts": 3, "calibration_samples": 32})
    rec = d["layers"]["blocks.0.mlp"]
    assert rec["experts_kept"] == [i for i in range(4) if i != int(np.argmin(errs))]
    assert rec["reconstruction_mse_per_removal"][0] == pytest.approx(min(errs), rel=1e-4)


def test_top_k_reduction_and_skipping_cut_experts_per_token(task) -> None:  # noqa: ANN001
    model = _model()
    _, d1 = _slim(model, task, {"top_k": 1, "calibration_samples": 32})
    rec = d1["layers"]["blocks.0.mlp"]
    assert rec["before"]["experts_per_token"] == 2.0 and rec["after"]["experts_per_token"] == 1.0
    assert rec["after"]["macs_per_token"] < rec["before"]["macs_per_token"]
    _, d2 = _slim(model, task, {"skip_threshold": 0.45, "calibration_samples": 32})
    per_token = d2["layers"]["blocks.0.mlp"]["after"]["experts_per_token"]
    assert 1.0 <= per_token < 2.0
    with pytest.raises(InputError, match="top_k=3"):
        _slim(model, task, {"keep_experts": 2, "top_k": 3, "calibration_samples": 8})


def test_merging_joins_identical_experts_first(task) -> None:  # noqa: ANN001
    model = _model()
    layer = model.blocks[0].mlp
    with torch.no_grad():
        layer.experts[3].load_state_dict(layer.experts[1].state_dict())
    art, d = _slim(model, task, {"merge_to": 3, "calibration_samples": 32})
    assert sorted(map(sorted, d["layers"]["blocks.0.mlp"]["merged_groups"])) == [[0], [1, 3], [2]]
    assert art.module.blocks[0].mlp.num_experts == 3


def test_distillation_trains_the_student_towards_the_teacher(task) -> None:  # noqa: ANN001
    model = _model()
    art, d = _slim(
        model, task, {"keep_experts": 2, "top_k": 1, "calibration_samples": 16,
                      "distill": {"epochs": 1, "samples": 64, "batch_size": 32, "alpha": 0.0}},
    )  # fmt: skip
    assert d["distill"]["steps"] == 2
    assert np.isfinite(d["distill"]["loss_last"])
    assert not torch.equal(art.module.head.weight, model.head.weight)


def test_bad_inputs_fail_clearly(task) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match="no MoE layer"):
        _slim(get_model_entry("bert_classifier").build(**get_model_entry("bert_classifier").tiny), task, {})
    with pytest.raises(InputError, match="keep_experts=9"):
        _slim(_model(), task, {"keep_experts": 9, "calibration_samples": 8})
    with pytest.raises(ValueError, match="not both"):
        STAGES.get("moe-slim").Config.model_validate({"keep_experts": 2, "keep_fraction": 0.5})


@pytest.mark.parametrize("rare", ["int8_dynamic", "int4_weight"])
def test_per_expert_quantization_covers_experts_that_see_no_calibration_token(task, rare: str, tmp_path: Path) -> None:  # noqa: ANN001
    import onnxruntime as ort

    from effdl.export import export_onnx
    from effdl.recipe import ExportConfig

    model = _model(dim=32, expert_hidden=64)
    layer = model.blocks[0].mlp
    with torch.no_grad():  # every token reaches the router as the same vector: experts 2 and 3 get nothing
        model.blocks[0].ln2.weight.zero_()
        model.blocks[0].ln2.bias.copy_(torch.linspace(-1, 1, 32))
        layer.router.weight.copy_(torch.stack([model.blocks[0].ln2.bias * s for s in (3.0, 2.0, -2.0, -3.0)]))
    path = export_onnx(model, task, tmp_path / "m.onnx", ExportConfig(exporter="torchscript"))
    cls = STAGES.get("moe-quantize")
    cfg = cls.Config.model_validate({"rare": rare, "rare_below": 0.5, "calibration_samples": 16, "evaluate": False})
    art, d = cls(cfg).apply(ModelArtifact("fp32", "onnx", path=path), StageContext(task, tmp_path), "q")
    counts = d["tokens_per_expert"]
    assert [counts[f"blocks.0.mlp.experts.{i}"] for i in (2, 3)] == [0, 0] and counts["blocks.0.mlp.experts.0"] > 0
    assert d["plan"]["blocks.0.mlp.experts.3"] == rare and d["plan"]["blocks.0.mlp.experts.0"] == "int8_dynamic"
    ops = [n.op_type for n in onnx.load(str(art.path)).graph.node]
    n_int4 = 4 if rare == "int4_weight" else 0
    assert ops.count("MatMulNBits") == n_int4 and ops.count("MatMulInteger") == 8 - n_int4
    assert d["expert_bytes"]["ratio"] > 3.0
    x = task.split("heldout").inputs["tokens"][:16]
    ref = ort.InferenceSession(str(path)).run(None, {"tokens": x})[0]
    got = ort.InferenceSession(str(art.path)).run(None, {"tokens": x})[0]
    assert np.abs(got - ref).max() < 0.05 * max(1.0, float(np.abs(ref).max()))


def test_moe_slim_recipe_end_to_end(tmp_path: Path) -> None:
    from effdl.pipeline import compress
    from effdl.recipe import load_recipe
    from effdl.sources import save_checkpoint

    entry = get_model_entry("moe_transformer")
    ckpt = save_checkpoint(_model(), tmp_path / "moe.safetensors", arch="moe_transformer",
                           config=entry.config(**{**entry.tiny, "num_experts": 4}), task=entry.task)  # fmt: skip
    recipe = load_recipe("moe-slim")
    recipe.benchmark.enabled = False
    recipe.verify.max_metric_drop = 100.0  # a 1-epoch tiny model: this checks plumbing, bench/moe.py accuracy
    recipe.verify.min_agreement = {}
    recipe.verify.samples = 200
    recipe.targets = recipe.targets[:1]  # ONNX Runtime only: OpenVINO runs these graphs in test_moe_dispatch
    recipe.stages[0].config.update({"distill": {"epochs": 1, "samples": 64}, "calibration_samples": 32})
    recipe.stages[1].config.update({"evaluate": False, "calibration_samples": 32})
    report = compress(ckpt, recipe, tmp_path / "out").report
    slim = next(s for s in report["stages"] if s["name"] == "moe-slim")["details"]
    assert all(r["after"]["experts"] == 2 and r["after"]["top_k"] == 1 for r in slim["layers"].values())
    quant = next(s for s in report["stages"] if s["name"] == "moe-quantize")["details"]
    assert set(quant["plan"]) == {"blocks.0.mlp.experts.0", "blocks.0.mlp.experts.1"}  # the pruned model's
    assert {v["name"] for v in report["variants"] if v["accepted"]} >= {"onnxruntime-fp32", "onnxruntime-moe-int8"}


def test_slimming_a_model_fresh_from_training(task) -> None:  # noqa: ANN001
    model = _model()
    model.train()
    model(torch.randint(1, 16, (2, 8)))  # leaves a non-leaf aux_loss on each MoE layer, as training does
    model.eval()
    art, _ = _slim(model, task, {"keep_experts": 3, "calibration_samples": 8})
    assert art.module.blocks[0].mlp.num_experts == 3 and model.blocks[0].mlp.aux_loss is not None
