"""Quantization stages on tiny models: MSE calibration, overrides, dynamic, weight-only, FP16, SmoothQuant, and
the ONNX stages of every curated quantization recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from effdl.compress import STAGES
from effdl.compress.base import ModelArtifact, StageContext
from effdl.compress.quantize import mse_range
from effdl.errors import InputError
from effdl.export import export_onnx
from effdl.recipe import load_recipe
from effdl.tasks import get_task
from effdl.zoo import get_model_entry


def _export(name: str, tmp: Path, **over) -> tuple[Path, str]:
    entry = get_model_entry(name)
    torch.manual_seed(0)
    model = entry.build(**{**entry.tiny, **over}).eval()
    return export_onnx(model, get_task(entry.task), tmp / f"{name}.onnx"), entry.task


@pytest.fixture(scope="module")
def resnet(tmp_path_factory) -> tuple[Path, str]:
    return _export("resnet8", tmp_path_factory.mktemp("r"))


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> tuple[Path, str]:
    return _export("bert_classifier", tmp_path_factory.mktemp("b"), dim=64, heads=2)


@pytest.fixture(scope="module")
def lstm(tmp_path_factory) -> tuple[Path, str]:
    return _export("lstm_classifier", tmp_path_factory.mktemp("l"))


def _apply(stage: str, src: tuple[Path, str], tmp: Path, **cfg) -> tuple[Path, dict, ModelArtifact]:
    cls = STAGES.get(stage)
    tmp.mkdir(parents=True, exist_ok=True)
    art, details = cls(cls.Config(**cfg)).apply(
        ModelArtifact("fp32", "onnx", path=src[0]), StageContext(get_task(src[1]), tmp), "q"
    )
    assert art.path is not None and art.path.is_file()
    return art.path, details, art


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _close(a: Path, b: Path, task: str, tol: float, backend: str = "ort") -> float:
    t = get_task(task)
    feeds = {k: v[:32] for k, v in t.split("heldout").inputs.items()}

    def run(p: Path) -> np.ndarray:
        if backend == "ov":
            import openvino as ov

            c = ov.Core().compile_model(str(p), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            return np.asarray(c(feeds)[c.outputs[0]])
        import onnxruntime as ort

        return ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds)[0]

    ra, rb = run(a), run(b)
    err = float(np.abs(ra - rb).max() / max(np.abs(ra).max(), 1e-9))
    assert err < tol, err
    return err


def test_mse_range_clips_heavy_tails_and_keeps_symmetry() -> None:
    rng = np.random.default_rng(0)
    x = rng.laplace(0, 1, 200_000)  # heavy tails: clipping the rare extremes lowers the total error
    m = float(np.abs(x).max())
    hist, edges = np.histogram(x, 2048, range=(-m, m))
    lo, hi = mse_range(hist, edges, symmetric=True)
    assert lo == pytest.approx(-hi) and 0.5 * m < hi < 0.9 * m
    lo2, hi2 = mse_range(hist, edges, symmetric=False)
    assert -0.9 * m < lo2 < 0 < hi2 < 0.9 * m
    h3, e3 = np.histogram(np.maximum(x, 0), 2048, range=(-m, m))
    lo3, hi3 = mse_range(h3, e3, symmetric=False)
    assert lo3 == pytest.approx(0.0, abs=0.05) and hi3 < 0.9 * m  # one-sided data keeps zero as its bottom
    flat, fe = np.histogram(rng.uniform(-1, 1, 10_000), 256, range=(-1, 1))
    assert mse_range(flat, fe, symmetric=True)[1] > 0.95  # nothing to clip in a uniform distribution


@pytest.mark.parametrize("symmetric", [False, True])
def test_static_mse_calibration(tmp_path: Path, resnet, symmetric: bool) -> None:
    q, details, _ = _apply(
        "quantize", resnet, tmp_path, calibration="mse", samples=16, symmetric_activations=symmetric, per_channel=False
    )
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(q)
    assert details["mse_ranges"] > 0 and details["calibration"] == "mse"
    _close(resnet[0], q, resnet[1], 0.3)


def test_overrides_fp32_regex_and_per_tensor(tmp_path: Path, resnet) -> None:
    graph = onnx.load(str(resnet[0])).graph
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    overrides = [{"match": f"re:{convs[0]}|{convs[1]}", "action": "fp32"}, {"match": gemm.name, "per_channel": False}]
    q, details, _ = _apply("quantize", resnet, tmp_path, samples=8, preprocess=False, overrides=overrides)
    assert set(details["excluded_nodes"]) == {convs[0], convs[1]}
    qg = onnx.load(str(q)).graph
    producers = {o: n for n in qg.node for o in n.output}
    for name in convs[:2]:
        conv = next(n for n in qg.node if n.name == name)
        assert conv.input[1] not in producers  # its weight is a plain FP32 initializer
    dq = producers[next(n for n in qg.node if n.name == gemm.name).input[1]]
    scale = next(i for i in qg.initializer if i.name == dq.input[1])
    assert list(scale.dims) in ([], [1])  # one scale: per tensor
    other = next(n for n in qg.node if n.name == convs[2])
    dq_other = producers[other.input[1]]
    scale_other = next(i for i in qg.initializer if i.name == dq_other.input[1])
    assert list(scale_other.dims) not in ([], [1])  # the rest stays per channel


def test_override_that_matches_nothing_is_an_error(tmp_path: Path, resnet) -> None:
    with pytest.raises(InputError, match=r"overrides\[0\]\.match"):
        _apply("quantize", resnet, tmp_path, samples=4, preprocess=False, overrides=[{"match": "re:.*nope.*"}])
    with pytest.raises(ValueError, match="invalid regex"):
        STAGES.get("quantize").Config(overrides=[{"match": "re:("}])


def test_dynamic_quantizes_lstm_and_transformer(tmp_path: Path, lstm, bert) -> None:
    q, details, art = _apply("quantize-dynamic", lstm, tmp_path / "l")
    assert "DynamicQuantizeLSTM" in details["quantized_ops"] and art.precision == "int8"
    _close(lstm[0], q, lstm[1], 0.2)
    q2, details2, _ = _apply("quantize-dynamic", bert, tmp_path / "b", per_channel=True)
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & set(details2["quantized_ops"]) or (
        "DynamicQuantizeMatMul" in details2["quantized_ops"]
    )
    _close(bert[0], q2, bert[1], 0.2)


@pytest.mark.parametrize(
    "cfg,op",
    [
        ({"engine": "nncf", "bits": 8, "symmetric": False}, "DequantizeLinear"),
        ({"engine": "onnxruntime", "bits": 4, "group_size": 32}, "MatMulNBits"),
        ({"engine": "onnxruntime", "bits": 8, "group_size": 32}, "MatMulNBits"),
    ],
)
def test_weight_only(tmp_path: Path, bert, cfg: dict, op: str) -> None:
    q, details, art = _apply("quantize-weights", bert, tmp_path, **cfg)
    assert op in details["quantized_ops"] and art.precision == f"w{cfg['bits']}a32"
    assert q.stat().st_size < bert[0].stat().st_size
    _close(bert[0], q, bert[1], 0.25)
    _close(bert[0], q, bert[1], 0.25, backend="ov")


def test_weight_only_refuses_models_without_linear_layers(tmp_path: Path, tmp_path_factory) -> None:
    src = _export("lenet5", tmp_path_factory.mktemp("n"))
    with pytest.raises(InputError, match="no layer"):
        _apply("quantize-weights", src, tmp_path, engine="onnxruntime", bits=4, group_size=32)
    with pytest.raises(InputError, match="engine 'onnxruntime'"):
        _apply("quantize-weights", src, tmp_path, engine="nncf", bits=4)
    with pytest.raises(ValueError, match="power of two"):
        STAGES.get("quantize-weights").Config(group_size=48)


def test_fp16(tmp_path: Path, bert) -> None:
    q, details, art = _apply("convert-fp16", bert, tmp_path)
    types = {i.data_type for i in onnx.load(str(q)).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types and art.precision == "fp16"
    _close(bert[0], q, bert[1], 0.02)


def test_smoothquant_nncf(tmp_path: Path, bert) -> None:
    q, details, _ = _apply("quantize-smoothquant", bert, tmp_path, samples=16)
    assert details["smooth_quant"] and details["model_type"] == "transformer"
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(q)
    _close(bert[0], q, bert[1], 0.3)
    with pytest.raises(InputError, match="engine 'nncf'"):
        _apply("quantize", bert, tmp_path / "x", smooth_quant=True, model_type="transformer")


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "recipe,family",
    [
        ("quant-static-calibration", "resnet"),
        ("quant-static-mse", "resnet"),
        ("nncf-int8", "resnet"),
        ("quant-dynamic", "lstm"),
        ("quant-weights", "bert"),
        ("quant-smoothquant", "bert"),
        ("quant-fp16", "bert"),
        ("quant-minilm", "bert"),
    ],
)
def test_curated_quant_recipe_stages_run(tmp_path: Path, request, recipe: str, family: str) -> None:
    """Each curated recipe's ONNX stages, as written (calibration cut to 8 samples), on a tiny model of the
    family it is meant for; every output runs and stays near FP32. (QAT and quantize-auto recipes: see
    test_quant_auto.py.)"""
    src = request.getfixturevalue(family)
    models = {"fp32": src[0]}
    last = "fp32"
    for spec in load_recipe(ROOT / "recipes" / f"{recipe}.yaml").stages:
        cls = STAGES.get(spec.stage)
        cfg = dict(spec.config)
        if "samples" in cls.Config.model_fields:
            cfg["samples"] = 8
        out = spec.output or cls.default_output
        art, _ = cls(cls.Config(**cfg)).apply(
            ModelArtifact(spec.input or last, "onnx", path=models[spec.input or last]),
            StageContext(get_task(src[1]), tmp_path),
            out,
        )
        models[out], last = art.path, out
        _close(src[0], art.path, src[1], 0.5)
    assert len(models) > 1


def test_weight_only_nncf_leaves_convolutions_alone(tmp_path: Path, resnet) -> None:
    """NNCF's ONNX backend writes Conv weight scales ONNX Runtime rejects: only the classifier's Gemm is
    compressed, and the model runs on both runtimes."""
    q, details, _ = _apply("quantize-weights", resnet, tmp_path, engine="nncf", bits=8)
    graph = onnx.load(str(q)).graph
    dq_out = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    fed = {n.op_type for n in graph.node if set(n.input) & dq_out}
    assert dq_out and fed <= {"Gemm", "MatMul", "Transpose"}
    _close(resnet[0], q, resnet[1], 0.05)
    _close(resnet[0], q, resnet[1], 0.05, backend="ov")


def test_onnx_stages_refuse_a_torch_model_by_name(tmp_path: Path) -> None:
    onnx_stages = [n for n in STAGES.names() if STAGES.get(n).kind == "onnx"]
    assert {"quantize", "quantize-dynamic", "quantize-weights", "convert-fp16", "moe-quantize"} <= set(onnx_stages)
    torch_model = ModelArtifact("fp32", "torch", module=torch.nn.Linear(2, 2))
    for name in onnx_stages:
        cls = STAGES.get(name)
        with pytest.raises(InputError, match=f"^{name} works on an ONNX model; it must come after export"):
            cls(cls.Config()).apply(torch_model, StageContext(get_task("digits", size=8), tmp_path), "x")
