"""End-to-end `compress` on a small trained LeNet-5 through ONNX Runtime and OpenVINO."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from effdl.errors import InputError, VerificationError
from effdl.pipeline import compress
from effdl.recipe import load_recipe, parse_recipe
from effdl.runtime.manifest import sha256_of


@pytest.fixture(scope="module")
def package(lenet_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from tests.conftest import FAST_RECIPE

    recipe_path = tmp_path_factory.mktemp("r") / "fast.yaml"
    recipe_path.write_text(FAST_RECIPE)
    out = tmp_path_factory.mktemp("pkg") / "out"
    result = compress(lenet_ckpt, load_recipe(recipe_path), out)
    return out, result.report


def test_package_layout_and_manifest(package: tuple[Path, dict]) -> None:
    out, _ = package
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "effdl.package" and manifest["format_version"] == 1
    assert manifest["inputs"] == [{"name": "image", "dtype": "float32", "shape": [None, 1, 32, 32]}]
    names = {v["name"] for v in manifest["variants"]}
    assert names == {"onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8"}
    for rel, entry in manifest["files"].items():
        assert sha256_of(out / rel) == entry["sha256"]
    for v in manifest["variants"]:
        assert v["benchmark"]["p50_ms"] > 0 and v["verification"]["samples"] == 200
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folders left
    for f in ("report.json", "report.md", "report.html"):
        assert (out / f).is_file()


def test_report_records_every_step(package: tuple[Path, dict]) -> None:
    _, report = package
    assert report["schema"] == "effdl.report/1"
    assert [s["name"] for s in report["stages"]] == [
        "load",
        "baseline",
        "export",
        "quantize",
        "compile",
        "verify",
        "benchmark",
    ]
    ref = next(v for v in report["variants"] if v.get("reference"))
    assert ref["name"] == "torch-fp32" and ref["benchmark"]["queries"] == 20
    for v in report["variants"]:
        if v.get("reference"):
            continue
        ver = v["verification"]
        assert v["accepted"] and ver["passed"] and ver["top1_agreement"] >= 90
        assert abs(ver["metric_drop"]) <= 3.0
        assert v["speedup"] == pytest.approx(
            ref["benchmark"]["latency_ms"]["p50"] / v["benchmark"]["latency_ms"]["p50"]
        )
    ov = next(v for v in report["variants"] if v["name"] == "openvino-fp32")
    assert ov["runtime_info"]["inference_precision"] == "f32" and ov["precision"] == "fp32"
    int8 = next(v for v in report["variants"] if v["name"] == "onnxruntime-int8")
    assert int8["precision"] == "int8" and int8["size_bytes"] < ov["size_bytes"]


def test_refused_variant_is_reported_not_packaged(lenet_ckpt: Path, tmp_path: Path) -> None:
    recipe = parse_recipe(
        {
            "stages": [{"stage": "quantize", "config": {"samples": 8}}],
            "targets": [{"backend": "onnxruntime", "models": ["fp32", "int8"]}],
            "verify": {"samples": 100, "max_abs_error": 1e-3},
            "benchmark": {"enabled": False},
        }
    )
    result = compress(lenet_ckpt, recipe, tmp_path / "out")
    by_name = {v["name"]: v for v in result.report["variants"]}
    assert by_name["onnxruntime-fp32"]["accepted"]
    assert not by_name["onnxruntime-int8"]["accepted"]
    assert "max abs error" in by_name["onnxruntime-int8"]["reason"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [v["name"] for v in manifest["variants"]] == ["onnxruntime-fp32"]
    assert not (tmp_path / "out" / "models" / "int8.onnx").exists()


def test_all_refused_fails_without_output(lenet_ckpt: Path, tmp_path: Path) -> None:
    recipe = parse_recipe({"verify": {"min_agreement": {"top1_agreement": 100.5}}, "benchmark": {"enabled": False}})
    with pytest.raises(VerificationError, match="no variant passed verification"):
        compress(lenet_ckpt, recipe, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(lenet_ckpt: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    recipe = parse_recipe({"benchmark": {"enabled": False}})
    with pytest.raises(InputError, match="already exists"):
        compress(lenet_ckpt, recipe, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    compress(lenet_ckpt, recipe, tmp_path / "out", force=True)
    assert (tmp_path / "out" / "manifest.json").is_file() and not (tmp_path / "out" / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failure_midway_leaves_nothing(lenet_ckpt: Path, tmp_path: Path) -> None:
    recipe = parse_recipe({"export": {"atol": 0.0, "rtol": 0.0}, "benchmark": {"enabled": False}})
    with pytest.raises(VerificationError, match="disagrees with torch"):
        compress(lenet_ckpt, recipe, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_onnx_input_skips_torch_and_uses_ort_reference(lenet_ckpt: Path, tmp_path: Path) -> None:
    from effdl.export import export_onnx
    from effdl.sources import load_checkpoint
    from effdl.tasks import get_task

    onnx_path = export_onnx(load_checkpoint(lenet_ckpt).module, get_task("digits"), tmp_path / "in.onnx")
    recipe = parse_recipe(
        {
            "stages": [{"stage": "quantize", "config": {"samples": 16}}],
            "targets": [{"backend": "openvino", "models": ["int8"]}],
            "verify": {"samples": 100, "max_metric_drop": 3},
            "benchmark": {"warmup": 2, "queries": 10},
        }
    )
    report = compress(onnx_path, recipe, tmp_path / "out", task="digits").report
    assert report["reference"] == "onnxruntime-fp32"
    assert [s["name"] for s in report["stages"]][:3] == ["load", "baseline", "export"]
    assert report["variants"][1]["accepted"]


def test_pt2_input(lenet_ckpt: Path, tmp_path: Path) -> None:
    from effdl.sources import load_checkpoint

    module = load_checkpoint(lenet_ckpt).module
    ep = torch.export.export(module, (torch.randn(2, 1, 32, 32),), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(ep, tmp_path / "m.pt2")
    recipe = parse_recipe({"verify": {"samples": 50}, "benchmark": {"warmup": 2, "queries": 10}})
    report = compress(tmp_path / "m.pt2", recipe, tmp_path / "out", task="digits").report
    assert report["source"]["format"] == "torch-export"
    assert report["variants"][1]["verification"]["max_abs_error"] < 1e-4


def test_torch_backend_variants_are_verified_and_packaged(lenet_ckpt: Path, tmp_path: Path) -> None:
    recipe = parse_recipe(
        {
            "targets": [
                {"backend": "torch", "options": {"mode": "eager", "precision": "fp32"}},
                {"backend": "torch", "options": {"mode": "eager", "precision": "bf16"}},
            ],
            "verify": {"samples": 100, "max_metric_drop": 2.0, "min_agreement": {"top1_agreement": 95}},
            "benchmark": {"warmup": 2, "queries": 10},
        }
    )
    report = compress(lenet_ckpt, recipe, tmp_path / "out").report
    by_name = {v["name"]: v for v in report["variants"]}
    assert by_name["torch-eager-fp32"]["verification"]["max_abs_error"] < 1e-4
    assert by_name["torch-eager-bf16"]["precision"] == "bf16" and by_name["torch-eager-bf16"]["accepted"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {f for v in manifest["variants"] for f in v["files"]} == {
        "models/torch-eager-fp32.pt2",
        "models/torch-eager-bf16.pt2",
    }


def test_torch_backend_takes_only_the_fp32_model() -> None:
    from effdl.errors import RecipeError

    with pytest.raises(RecipeError, match="torch backend packages the torch model"):
        parse_recipe({"stages": [{"stage": "quantize"}], "targets": [{"backend": "torch", "models": ["int8"]}]})
