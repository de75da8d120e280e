"""Distillation stage, and prune -> distill -> quantize composed through the pipeline."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from effdl.compress import STAGES, ModelArtifact, StageContext
from effdl.compress.distill import logit_kd_loss
from effdl.compress.finetune import FinetuneConfig, finetune
from effdl.errors import InputError
from effdl.tasks import get_task
from effdl.zoo import get_model_entry

ROOT = Path(__file__).resolve().parents[1]
FT = {"max_steps": 3, "batch_size": 32}


@pytest.fixture(scope="module")
def teacher() -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    entry = get_model_entry("resnet8")
    model = entry.build(**entry.tiny)
    task = get_task("digits", size=16)
    finetune(model, task, FinetuneConfig(max_steps=25, lr=3e-3))  # a short, cheap training
    return model.eval(), task


def _distill(cfg: dict, model: torch.nn.Module, task: object, tmp_path: Path, teacher: torch.nn.Module | None = None):
    cls = STAGES.get("distill")
    ctx = StageContext(task, tmp_path, teacher=teacher if teacher is not None else model)  # type: ignore[arg-type]
    return cls(cls.Config(**cfg)).apply(ModelArtifact("fp32", "torch", module=model, lineage=["source"]), ctx, "fp32")


def test_logit_kd_loss() -> None:
    torch.manual_seed(0)
    t = torch.randn(8, 10)
    assert float(logit_kd_loss(t.clone(), t, 4.0, "kl")) == pytest.approx(0.0, abs=1e-6)
    assert float(logit_kd_loss(torch.randn(8, 10), t, 4.0, "kl")) > 0
    seq = torch.randn(2, 5, 7)  # sequence logits: every position is a distribution
    assert float(logit_kd_loss(seq.clone(), seq, 2.0, "kl")) == pytest.approx(0.0, abs=1e-6)
    assert float(logit_kd_loss(t + 1, t, 1.0, "mse")) == pytest.approx(1.0)


def test_distill_recovers_the_input_model(teacher: tuple, tmp_path: Path) -> None:
    model, task = teacher
    before = copy.deepcopy(model)
    damaged = copy.deepcopy(model)
    with torch.no_grad():
        for p in damaged.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.from_numpy(task.split("heldout").inputs["image"][:128])

    def gap(student: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(logit_kd_loss(student(x), model(x), 1.0, "kl"))

    out, d = _distill({"alpha": 1.0, "finetune": {"max_steps": 15, "lr": 3e-3}}, damaged, task, tmp_path, model)
    assert out.lineage == ["source", "distill"]
    assert d["teacher"]["which"] == "source" and d["student"]["from"] == "fp32"
    assert gap(out.module) < 0.5 * gap(damaged)  # much closer to the teacher's outputs again
    sa, sb = model.state_dict(), before.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # teacher untouched
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())


def test_distill_into_smaller_zoo_student_with_hints(teacher: tuple, tmp_path: Path) -> None:
    model, task = teacher
    cfg = {
        "student": {"arch": "resnet8", "config": {"width": 2}},
        "hints": [{"student": "layers.2", "teacher": "layers.2", "weight": 0.5}],
        "finetune": FT,
    }
    out, d = _distill(cfg, model, task, tmp_path)
    assert out.module.stem[0].out_channels == 2 and out.lineage == ["zoo:resnet8", "distill"]
    assert d["student"]["config"]["width"] == 2 and d["student"]["parameters"] < d["teacher"]["parameters"]
    assert d["hints"][0]["projection"] == "Conv2d 8 -> 16"  # widths differ: learned 1x1 projection
    assert d["finetune"]["steps"] == 3
    assert all(not m._forward_hooks for m in out.module.modules())  # hooks removed


def test_distill_errors(teacher: tuple, tmp_path: Path) -> None:
    model, task = teacher
    with pytest.raises(InputError, match="no module 'nope'"):
        _distill({"hints": [{"student": "nope", "teacher": "layers.0"}], "finetune": FT}, model, task, tmp_path)
    with pytest.raises(InputError, match="does not match"):
        _distill({"student": {"arch": "resnet8", "config": {"num_classes": 3}}}, model, task, tmp_path)
    with pytest.raises(InputError, match="unknown zoo model"):
        _distill({"student": {"arch": "no-such-net"}}, model, task, tmp_path)


def test_curated_recipes_validate() -> None:
    from effdl.recipe import load_recipe

    names = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml") if p.name.startswith(("prune-", "distill-")))
    assert len(names) >= 4
    for name in names:
        recipe = load_recipe(ROOT / "recipes" / name)
        assert recipe.stages, name


def test_prune_distill_quantize_pipeline(teacher: tuple, tmp_path: Path) -> None:
    from effdl.pipeline import compress
    from effdl.recipe import parse_recipe
    from effdl.sources import save_checkpoint

    model, _ = teacher
    entry = get_model_entry("resnet8")
    ckpt = save_checkpoint(
        model, tmp_path / "r8.safetensors", arch="resnet8", config=entry.config(**entry.tiny), task="digits"
    )
    recipe = parse_recipe(
        {
            "task_options": {"size": 16},
            "stages": [
                {"stage": "prune-structured", "config": {"ratio": 0.5, "finetune": FT}},
                {"stage": "distill", "config": {"finetune": FT}},
                {"stage": "quantize", "config": {"samples": 16}},
            ],
            "targets": [{"backend": "onnxruntime", "models": ["fp32", "int8"]}],
            "verify": {"samples": 64, "max_metric_drop": 100.0},
            "benchmark": {"enabled": False},
        }
    )
    report = compress(ckpt, recipe, tmp_path / "out").report
    stages = {s["name"]: s["details"] for s in report["stages"]}
    assert [s["name"] for s in report["stages"]][2:6] == ["prune-structured", "distill", "export", "quantize"]
    assert stages["prune-structured"]["after"]["macs"] < report["source"]["macs"]
    assert stages["distill"]["after"]["parameters"] == stages["prune-structured"]["after"]["parameters"]
    assert {v["name"] for v in report["variants"] if v["accepted"]} >= {"onnxruntime-fp32", "onnxruntime-int8"}
