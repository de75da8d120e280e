from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from effdl.compress.base import ModelArtifact, StageContext
from effdl.compress.quantize import StaticQuantConfig, StaticQuantize
from effdl.errors import InputError, VerificationError
from effdl.export import check_export, export_onnx
from effdl.recipe import ExportConfig
from effdl.tasks import get_task
from effdl.zoo import get_model_entry


@pytest.fixture(scope="module")
def model_and_task():
    torch.manual_seed(0)
    return get_model_entry("resnet8").build(**get_model_entry("resnet8").tiny).eval(), get_task("digits")


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_export_dynamic_batch_matches_torch(tmp_path: Path, model_and_task, exporter: str) -> None:
    model, task = model_and_task
    cfg = ExportConfig(exporter=exporter)
    path = export_onnx(model, task, tmp_path / "m.onnx", cfg, metadata={"effdl": "{}"})
    proto = onnx.load(str(path))
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.HasField("dim_value")
    assert [p.key for p in proto.metadata_props] == ["effdl"]
    details = check_export(model, task, path, cfg)
    assert details["max_abs_error"] < 1e-4 and details["samples"] == 64


def test_export_check_fails_loudly(tmp_path: Path, model_and_task) -> None:
    model, task = model_and_task
    path = export_onnx(model, task, tmp_path / "m.onnx")
    other = get_model_entry("resnet8").build(**get_model_entry("resnet8").tiny).eval()  # different weights
    with pytest.raises(VerificationError, match="disagrees with torch"):
        check_export(other, task, path)


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory, model_and_task) -> Path:
    model, task = model_and_task
    return export_onnx(model, task, tmp_path_factory.mktemp("q") / "fp32.onnx")


def _quantize(fp32: Path, tmp_path: Path, **cfg) -> tuple[Path, dict]:
    task = get_task("digits")
    stage = StaticQuantize(StaticQuantConfig(samples=16, **cfg))
    art, details = stage.apply(ModelArtifact("fp32", "onnx", path=fp32), StageContext(task, tmp_path), "int8")
    assert art.precision == "int8" and art.path.is_file()
    return art.path, details


@pytest.mark.parametrize("calibration", ["minmax", "entropy", "percentile"])
def test_ort_static_quantization_is_qdq_and_close(tmp_path: Path, fp32_onnx: Path, calibration: str) -> None:
    import onnxruntime as ort

    q, details = _quantize(fp32_onnx, tmp_path, calibration=calibration)
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert details["calibration"] == calibration and details["samples"] == 16
    x = get_task("digits").split("heldout").inputs["image"][:32]
    a = ort.InferenceSession(str(fp32_onnx), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    b = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert np.abs(a - b).max() < 0.25 * np.abs(a).max()


def test_per_tensor_and_exclusions(tmp_path: Path, fp32_onnx: Path) -> None:
    first_conv = next(n.name for n in onnx.load(str(fp32_onnx)).graph.node if n.op_type == "Conv")
    q, details = _quantize(fp32_onnx, tmp_path, per_channel=False, exclude=[first_conv], preprocess=False)
    assert details["excluded_nodes"] == [first_conv] and not details["per_channel"]
    graph = onnx.load(str(q)).graph
    conv = next(n for n in graph.node if n.name == first_conv)
    producers = {o: n.op_type for n in graph.node for o in n.output}
    assert producers.get(conv.input[1]) != "DequantizeLinear"  # its weight stayed FP32


def test_nncf_engine(tmp_path: Path, fp32_onnx: Path) -> None:
    q, details = _quantize(fp32_onnx, tmp_path, engine="nncf")
    assert "nncf" in details["engine"]
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(q)).graph.node}
    with pytest.raises(InputError, match="supports calibration 'minmax' only"):
        _quantize(fp32_onnx, tmp_path, engine="nncf", calibration="entropy")
