"""OpenVINO backend: shape-specialized compilation (``static_shapes``) on a tiny dynamic-batch model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from effdl.backends.openvino import OpenVinoBackend
from effdl.errors import InputError


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    path = tmp_path_factory.mktemp("ov") / "tiny.onnx"
    torch.onnx.export(
        model,
        (torch.zeros(1, 8),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        dynamo=False,
    )
    return path


def test_static_shapes_compiles_per_shape_and_matches_dynamic(dynamic_onnx: Path, tmp_path: Path) -> None:
    backend = OpenVinoBackend()
    dynamic = backend.compile(dynamic_onnx, tmp_path, "dyn", {"inference_precision": "fp32"})
    static = backend.compile(dynamic_onnx, tmp_path, "static", {"inference_precision": "fp32", "static_shapes": True})
    assert static.meta["static_shapes"] is True and "static_shapes" not in dynamic.meta
    ref = backend.load(tmp_path, dynamic)
    run = backend.load(tmp_path, static)
    assert run.info["static_shapes"] is True and run.inputs[0].name == "x" and run.inputs[0].shape == (None, 8)
    rng = np.random.default_rng(0)
    for batch in (1, 3, 1):
        x = rng.standard_normal((batch, 8)).astype(np.float32)
        np.testing.assert_allclose(run.run({"x": x})[0], ref.run({"x": x})[0], rtol=1e-5, atol=1e-6)
    shapes = sorted(tuple(cm.inputs[0].get_partial_shape().to_shape()) for cm in run._by_shape.values())
    assert shapes == [(1, 8), (3, 8)]  # one static compile per shape seen, reused for the second batch-1 call
    assert not ref.compiled_model.inputs[0].get_partial_shape().is_static


def test_static_shapes_must_be_a_bool(dynamic_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="static_shapes"):
        OpenVinoBackend().compile(dynamic_onnx, tmp_path, "bad", {"static_shapes": "yes"})


def test_runner_reuses_its_input_tensors_across_shapes_and_copies_outputs(dynamic_onnx: Path, tmp_path: Path) -> None:
    """The runner copies inputs into the request's own tensors (no re-binding per call): results must match
    OpenVINO's plain call for changing batch sizes, a later call must not change an earlier result, and an
    input of another dtype still runs (OpenVINO converts it)."""
    import openvino as ov

    backend = OpenVinoBackend()
    compiled = backend.compile(dynamic_onnx, tmp_path, "dyn", {"inference_precision": "fp32"})
    run = backend.load(tmp_path, compiled)
    plain = ov.Core().compile_model(str(tmp_path / compiled.files[0]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    rng = np.random.default_rng(1)
    results = []
    for batch in (1, 4, 2, 4):
        x = rng.standard_normal((batch, 8)).astype(np.float32)
        y = run.run({"x": x})[0]
        assert y.shape == (batch, 3)
        np.testing.assert_allclose(y, plain({"x": x})[0], rtol=1e-5, atol=1e-6)
        results.append((x, y.copy(), y))
    for _x, kept, returned in results:
        np.testing.assert_array_equal(kept, returned)  # outputs are copies, not views of the request's memory
    x64 = rng.standard_normal((2, 8))
    np.testing.assert_allclose(run.run({"x": x64})[0], plain({"x": x64.astype(np.float32)})[0], rtol=1e-5, atol=1e-5)


def test_runner_reports_openvinos_own_latency_of_the_last_call(dynamic_onnx: Path, tmp_path: Path) -> None:
    """``backend_latency_s`` is OpenVINO's own duration of this thread's last call: None before any call, then a
    positive time below the Python wall time around that call; the fast path (OpenVINO's compiled ``infer``)
    returns the same outputs as the public call."""
    import time

    import openvino as ov

    backend = OpenVinoBackend()
    compiled = backend.compile(dynamic_onnx, tmp_path, "dyn", {"inference_precision": "fp32"})
    run = backend.load(tmp_path, compiled, threads=1)
    assert run.backend_latency_s() is None
    plain = ov.Core().compile_model(str(tmp_path / compiled.files[0]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = np.random.default_rng(2).standard_normal((2, 8)).astype(np.float32)
    run.run({"x": x})  # first call: binds the request's tensors; later calls take the fast path
    for _ in range(3):
        t0 = time.perf_counter()
        y = run.run({"x": x})
        wall = time.perf_counter() - t0
        own = run.backend_latency_s()
        assert own is not None and 0 < own <= wall
        np.testing.assert_allclose(y[0], plain({"x": x})[0], rtol=1e-5, atol=1e-6)
    assert "InferRequest.latency" in run.backend_latency_what
