"""QAT (fake-quant fine-tuning -> QDQ export) and accuracy-aware quantization (quantize-auto) on tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from effdl.compress import STAGES
from effdl.compress.base import ModelArtifact, StageContext
from effdl.export import check_export, export_onnx
from effdl.recipe import ExportConfig
from effdl.tasks import get_task
from effdl.zoo import get_model_entry


@pytest.fixture(scope="module")
def lenet() -> torch.nn.Module:
    from effdl.zoo.train import train_entry

    return train_entry(get_model_entry("lenet5"), epochs=1, seed=0).model


def test_qat_finetunes_and_exports_qdq(tmp_path: Path, lenet: torch.nn.Module) -> None:
    task = get_task("digits")
    cls = STAGES.get("qat")
    before = {k: v.clone() for k, v in lenet.state_dict().items()}
    art, details = cls(cls.Config(epochs=1, max_steps=15, lr=1e-3)).apply(
        ModelArtifact("fp32", "torch", module=lenet), StageContext(task, tmp_path, teacher=lenet), "fp32"
    )
    assert all(torch.equal(before[k], v) for k, v in lenet.state_dict().items())  # input left untouched
    assert details["quantized_modules"] == 5 and details["steps"] == 15 and art.precision == "int8"
    cfg = ExportConfig(exporter="torchscript", rtol=1e-2)  # ORT integer kernels round differently
    path = export_onnx(art.module, task, tmp_path / "qat.onnx", cfg)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("QuantizeLinear") == 10 and ops.count("DequantizeLinear") == 10
    assert not {"ReduceMax", "Abs"} & set(ops)  # weight scales are constants, not graph math
    check = check_export(art.module, task, path, cfg)  # ONNX Runtime's INT8 QDQ matches torch's fake-quant
    assert check["max_abs_error"] <= check["tolerance"]
    from effdl.export import torch_outputs

    held = task.split("heldout").take(200)
    acc_q = task.score(torch_outputs(art.module, task, held.inputs), held.targets)
    acc_f = task.score(torch_outputs(lenet, task, held.inputs), held.targets)
    assert acc_q > acc_f - 5.0


def test_qat_without_quantizable_layers_is_an_error(tmp_path: Path) -> None:
    from effdl.errors import InputError

    cls = STAGES.get("qat")
    with pytest.raises(InputError, match="no Conv1d/Conv2d/Linear"):
        cls(cls.Config(exclude=["re:.*"])).apply(
            ModelArtifact("fp32", "torch", module=get_model_entry("lenet5").build()),
            StageContext(get_task("digits"), tmp_path),
            "fp32",
        )


@pytest.fixture(scope="module")
def resnet_onnx(tmp_path_factory) -> Path:
    entry = get_model_entry("resnet8")
    torch.manual_seed(0)
    model = entry.build(**entry.tiny).eval()
    return export_onnx(model, get_task("digits"), tmp_path_factory.mktemp("a") / "fp32.onnx")


FAST = {"tune_samples": 64, "warmup": 2, "queries": 5, "sensitivity_samples": 4}


def _auto(src: Path, tmp: Path, **cfg) -> tuple[ModelArtifact, dict]:
    cls = STAGES.get("quantize-auto")
    return cls(cls.Config(**{**FAST, **cfg})).apply(
        ModelArtifact("fp32", "onnx", path=src), StageContext(get_task("digits"), tmp), "auto"
    )


def test_auto_picks_the_fastest_config_within_limits(tmp_path: Path, resnet_onnx: Path) -> None:
    candidates = [{"stage": "quantize", "config": {"samples": 16}}, {"stage": "quantize-dynamic"}]
    art, d = _auto(resnet_onnx, tmp_path, max_accuracy_drop=100.0, candidates=candidates)
    trace = d["trace"]
    assert [r["config"] for r in trace][0] == "fp32" and len(trace) == 3
    timed = [r for r in trace if r.get("p50_ms") is not None]
    assert len(timed) == 3 and all(r["meets_limits"] for r in timed)
    fastest = min(timed, key=lambda r: r["p50_ms"])
    assert d["winner"] == fastest["config"] and d["why"]
    assert art.path.is_file() and not any(p.name.startswith(".auto") for p in tmp_path.iterdir())
    assert art.precision == ("fp32" if fastest["config"] == "fp32" else "int8")


def test_auto_falls_back_to_mixed_precision_then_fp32(tmp_path: Path, resnet_onnx: Path) -> None:
    candidates = [{"stage": "quantize", "config": {"samples": 8}}]
    art, d = _auto(
        resnet_onnx, tmp_path, candidates=candidates, min_agreement={"top1_agreement": 100.5}, max_fp32_nodes=2
    )
    names = [r["config"] for r in d["trace"]]
    assert "sensitivity analysis" in names
    sens = next(r for r in d["trace"] if r["config"] == "sensitivity analysis")
    assert sens["most_sensitive"] and all(np.isfinite(s["sqnr_db"]) for s in sens["most_sensitive"])
    mixed = [r for r in d["trace"] if "node(s) FP32" in r["config"]]
    assert [len(r["fp32_nodes"]) for r in mixed] == [1, 2]
    assert d["winner"] == "fp32" and art.precision == "fp32" and "FP32 kept" in d["why"]
    assert onnx.load(str(art.path)).graph.node  # a usable model either way


def test_default_candidates_follow_the_model_family(tmp_path: Path, resnet_onnx: Path) -> None:
    from effdl.compress.tuning import (
        DEFAULT_CANDIDATES,
        TRANSFORMER_CANDIDATES,
        Candidate,
        default_candidates,
        is_transformer,
    )

    entries = {n: get_model_entry(n) for n in ("bert_classifier", "lstm_classifier")}
    paths = {}
    for n, e in entries.items():
        torch.manual_seed(0)
        paths[n] = export_onnx(e.build(**e.tiny).eval(), get_task(e.task), tmp_path / f"{n}.onnx")
    assert not is_transformer(resnet_onnx) and default_candidates(resnet_onnx) is DEFAULT_CANDIDATES
    assert not is_transformer(paths["lstm_classifier"])
    assert is_transformer(paths["bert_classifier"])
    assert default_candidates(paths["bert_classifier"]) is TRANSFORMER_CANDIDATES
    # no all-op ORT static candidate for attention graphs (it quantizes the mask and Softmax)
    for c in TRANSFORMER_CANDIDATES:
        cand = Candidate(**c)
        STAGES.get(cand.stage).Config(**cand.config)  # every built-in candidate is a valid config
        if cand.stage == "quantize" and cand.config.get("engine", "onnxruntime") == "onnxruntime":
            assert cand.config["op_types"] == ["MatMul", "Gemm"]
