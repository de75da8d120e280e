"""TensorRT backend.

The pure parts (options, optimization profiles, builder flags, engine/GPU compatibility, GPU probing,
parser messages, availability) run everywhere. Building and running engines needs TensorRT and a CUDA
GPU: those tests are marked ``tensorrt`` and skip cleanly without them (they were not run where effdl
is developed).
"""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from effdl.backends import get_backend
from effdl.backends import tensorrt as trt_backend
from effdl.backends.base import Compiled
from effdl.backends.tensorrt import (
    BuildOptions,
    TensorRTBackend,
    builder_flags,
    check_engine_compat,
    cuda_gpu_count,
    cuda_gpu_identity,
    describe_parser_error,
    optimization_profile,
    ort_tensorrt_provider_options,
    parse_device,
)
from effdl.errors import BackendUnavailableError, InputError

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
no_trt = pytest.mark.skipif(HAVE_TRT, reason="checks behaviour without TensorRT installed")


# --- availability -------------------------------------------------------------------------------------


@no_trt
def test_availability_without_tensorrt_explains_and_hints() -> None:
    avail = TensorRTBackend.availability()
    assert not avail.available
    assert "'tensorrt' is not installed" in avail.reason
    assert "effdl[tensorrt]" in avail.install_hint


@no_trt
def test_get_backend_raises_with_install_hint() -> None:
    with pytest.raises(BackendUnavailableError, match="'tensorrt' is unavailable") as e:
        get_backend("tensorrt")
    assert "effdl[tensorrt]" in e.value.hint


@no_trt
def test_compile_and_load_without_tensorrt_refuse(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="cannot be imported") as e:
        TensorRTBackend().compile(tmp_path / "m.onnx", tmp_path, "m", {})
    assert "effdl[tensorrt]" in e.value.hint
    (tmp_path / "m.engine").write_bytes(b"x")
    with pytest.raises(BackendUnavailableError, match="cannot be imported"):
        TensorRTBackend().load(tmp_path, Compiled(["m.engine"], {}), device="cuda")
    with pytest.raises(InputError, match="CUDA GPU only"):
        TensorRTBackend().load(tmp_path, Compiled(["m.engine"], {}), device="cpu")
    with pytest.raises(InputError, match="unknown load option.*bogus"):
        TensorRTBackend().load(tmp_path, Compiled(["m.engine"], {}), options={"bogus": 1})
    with pytest.raises(InputError, match="engine file .*missing.engine does not exist"):
        TensorRTBackend().load(tmp_path, Compiled(["missing.engine"], {}))


def test_availability_with_tensorrt_but_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trt_backend, "_find_tensorrt", lambda: object())
    monkeypatch.setattr(trt_backend, "cuda_gpu_count", lambda: (0, "the CUDA driver reports no GPU"))
    avail = TensorRTBackend.availability()
    assert not avail.available and avail.reason == "no CUDA GPU: the CUDA driver reports no GPU"
    assert "NVIDIA GPU" in avail.install_hint
    monkeypatch.setattr(trt_backend, "cuda_gpu_count", lambda: (1, ""))
    avail = TensorRTBackend.availability()
    assert avail.available and avail.devices == ("cuda",)


# --- GPU probing ---------------------------------------------------------------------------------------


class FakeDriver:
    """The four CUDA driver calls effdl makes, answering like a machine with the given GPUs."""

    def __init__(self, gpus: list[tuple[str, int, int]], init_rc: int = 0) -> None:
        self.gpus, self.init_rc = gpus, init_rc

    def cuInit(self, flags: int) -> int:  # noqa: N802 (the driver's name)
        return self.init_rc

    def cuDeviceGetCount(self, n: ctypes._CArgObject) -> int:  # noqa: N802
        n._obj.value = len(self.gpus)
        return 0

    def cuDeviceGet(self, dev: ctypes._CArgObject, index: int) -> int:  # noqa: N802
        dev._obj.value = index
        return 0

    def cuDeviceGetName(self, buf: ctypes.Array, size: int, dev: ctypes.c_int) -> int:  # noqa: N802
        buf.value = self.gpus[dev.value][0].encode()
        return 0

    def cuDeviceGetAttribute(self, out: ctypes._CArgObject, attr: int, dev: ctypes.c_int) -> int:  # noqa: N802
        out._obj.value = {75: self.gpus[dev.value][1], 76: self.gpus[dev.value][2]}[attr]
        return 0


def test_gpu_probe_through_the_driver_api() -> None:
    lib = FakeDriver([("NVIDIA H100 80GB HBM3", 9, 0), ("NVIDIA L4", 8, 9)])
    assert cuda_gpu_count(lib) == (2, "")
    assert cuda_gpu_identity(1, lib) == trt_backend.GpuIdentity(1, "NVIDIA L4", "8.9")
    with pytest.raises(InputError, match="cuda:2 does not exist"):
        cuda_gpu_identity(2, lib)
    assert cuda_gpu_count(FakeDriver([])) == (0, "the CUDA driver reports no GPU")
    count, reason = cuda_gpu_count(FakeDriver([("x", 8, 0)], init_rc=100))
    assert count == 0 and "cuInit failed with CUDA driver error 100" in reason
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
        cuda_gpu_identity(0, FakeDriver([]))


def test_gpu_probe_on_this_host() -> None:
    count, reason = cuda_gpu_count()
    assert count >= 0
    assert (count == 0) == bool(reason)


def test_parse_device() -> None:
    assert parse_device("cuda") == 0 and parse_device("cuda:3") == 3 and parse_device(" CUDA:1 ") == 1
    for bad in ("gpu", "cuda:", "cuda:x", "cpu"):
        with pytest.raises(InputError, match="unknown device"):
            parse_device(bad)


# --- options, profiles, flags --------------------------------------------------------------------------


def test_build_options_defaults_and_errors() -> None:
    o = BuildOptions.parse({})
    assert (o.precision, o.min_batch, o.opt_batch, o.max_batch, o.timing_cache) == (None, 1, 1, 64, True)
    o = BuildOptions.parse({"precision": "FP16", "min_batch": 2, "opt_batch": 8, "max_batch": 32, "workspace_mb": 512})
    assert (o.precision, o.min_batch, o.opt_batch, o.max_batch, o.workspace_mb) == ("fp16", 2, 8, 32, 512)
    assert BuildOptions.parse({"timing_cache": "/cache/trt.cache"}).timing_cache == "/cache/trt.cache"
    assert BuildOptions.parse({"timing_cache": False}).timing_cache is False
    bad = [
        ({"precison": "fp16"}, "unknown option.*'precison'"),
        ({"precision": "int4"}, "'precision' must be one of"),
        ({"min_batch": 4, "opt_batch": 2}, "min_batch <= opt_batch <= max_batch"),
        ({"max_batch": 0}, "'max_batch' must be a positive integer"),
        ({"max_batch": True}, "'max_batch' must be a positive integer"),
        ({"sparse_weights": "yes"}, "'sparse_weights' must be true or false"),
        ({"optimization_level": 7}, "'optimization_level' must be an integer 0..5"),
        ({"timing_cache": 1}, "'timing_cache' must be true, false or a file path"),
        ({"hardware_compatibility": "all"}, "'hardware_compatibility' must be one of"),
        ({"shapes": {"x": {"min": [1, 3]}}}, "shapes.x must have exactly the keys min, opt, max"),
        ({"shapes": {"x": {"min": [1, 3], "opt": [2, 3], "max": [1, 3]}}}, "min <= opt <= max"),
        ({"shapes": {"x": {"min": [1], "opt": [1, 2], "max": [1, 2]}}}, "different ranks"),
        ({"shapes": {"x": {"min": [0], "opt": [1], "max": [1]}}}, "list of positive integers"),
    ]
    for options, match in bad:
        with pytest.raises(InputError, match=match):
            BuildOptions.parse(options)


def test_optimization_profile_batch_and_explicit_shapes() -> None:
    opts = BuildOptions.parse({"min_batch": 1, "opt_batch": 4, "max_batch": 64})
    inputs = [("image", (-1, 3, 32, 32)), ("scale", (1,))]
    assert optimization_profile(inputs, opts) == {"image": ((1, 3, 32, 32), (4, 3, 32, 32), (64, 3, 32, 32))}
    assert optimization_profile([("x", (2, 8))], opts) == {}  # static: no profile needed

    tokens = [("ids", (-1, -1))]
    with pytest.raises(InputError, match=r"'ids' has dynamic dimension\(s\) \[1\] besides the batch.*shapes\.ids"):
        optimization_profile(tokens, opts)
    opts = BuildOptions.parse({"shapes": {"ids": {"min": [1, 1], "opt": [8, 128], "max": [32, 512]}}})
    assert optimization_profile(tokens, opts) == {"ids": ((1, 1), (8, 128), (32, 512))}

    with pytest.raises(InputError, match="names ids, which the model lacks"):
        optimization_profile([("x", (-1, 8))], opts)
    opts = BuildOptions.parse({"shapes": {"x": {"min": [1, 4], "opt": [1, 8], "max": [2, 8]}}})
    with pytest.raises(InputError, match=r"shapes\.x\.min\[1\] is 4 but input 'x' has fixed size 8"):
        optimization_profile([("x", (-1, 8))], opts)
    with pytest.raises(InputError, match="has rank 2; input 'x' has rank 3"):
        optimization_profile([("x", (-1, 8, 8))], opts)


def test_builder_flags() -> None:
    p = BuildOptions.parse
    assert builder_flags(p({}), has_qdq=False) == ("fp32", [], ["TF32"])
    assert builder_flags(p({"precision": "tf32"}), has_qdq=False) == ("tf32", [], [])
    assert builder_flags(p({"precision": "fp16", "sparse_weights": True}), False) == (
        "fp16",
        ["FP16", "SPARSE_WEIGHTS"],
        [],
    )
    assert builder_flags(p({"precision": "bf16"}), False) == ("bf16", ["BF16"], [])
    assert builder_flags(p({}), has_qdq=True) == ("int8", ["INT8"], [])
    assert builder_flags(p({"precision": "int8", "fp16": True, "version_compatible": True}), True) == (
        "int8",
        ["INT8", "FP16", "VERSION_COMPATIBLE"],
        [],
    )
    with pytest.raises(InputError, match="int8 needs an explicitly quantized model") as e:
        builder_flags(p({"precision": "int8"}), has_qdq=False)
    assert "QDQ" in e.value.hint
    with pytest.raises(InputError, match="has Q/DQ nodes but precision is 'fp16'"):
        builder_flags(p({"precision": "fp16"}), has_qdq=True)
    with pytest.raises(InputError, match="'fp16' only adds FP16 fallback to int8"):
        builder_flags(p({"precision": "fp32", "fp16": True}), has_qdq=False)


def test_onnxruntime_tensorrt_provider_options(tmp_path: Path) -> None:
    inputs = [("image", (-1, 3, 32, 32)), ("ids", (-1, -1))]
    shapes = {"ids": {"min": [1, 1], "opt": [4, 64], "max": [8, 256]}}
    opts = {"precision": "fp16", "max_batch": 8, "opt_batch": 4, "shapes": shapes, "workspace_mb": 256}
    po = ort_tensorrt_provider_options(inputs, opts, tmp_path, device_id=1)
    assert po["device_id"] == "1" and po["trt_fp16_enable"] == "True" and "trt_int8_enable" not in po
    assert po["trt_engine_cache_path"] == str(tmp_path) and po["trt_timing_cache_enable"] == "True"
    assert po["trt_max_workspace_size"] == str(256 << 20)
    assert po["trt_profile_min_shapes"] == "image:1x3x32x32,ids:1x1"
    assert po["trt_profile_opt_shapes"] == "image:4x3x32x32,ids:4x64"
    assert po["trt_profile_max_shapes"] == "image:8x3x32x32,ids:8x256"
    po = ort_tensorrt_provider_options([("x", (1, 8))], {"precision": "int8", "sparse_weights": True}, tmp_path)
    assert po["trt_int8_enable"] == "True" and po["trt_sparsity_enable"] == "True"
    assert "trt_profile_min_shapes" not in po
    with pytest.raises(InputError, match="only supported by effdl's native tensorrt backend"):
        ort_tensorrt_provider_options([("x", (1, 8))], {"precision": "bf16"}, tmp_path)


# --- engine compatibility ------------------------------------------------------------------------------

META = {"tensorrt_version": "10.3.0", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}


def test_engine_compat_same_version_and_gpu() -> None:
    assert check_engine_compat(META, trt_version="10.3.0", gpu_name="NVIDIA L4", compute_capability="8.9") == []


def test_engine_compat_refuses_other_tensorrt_version() -> None:
    with pytest.raises(
        BackendUnavailableError, match=r"built with TensorRT 10\.3\.0 but this runtime is TensorRT 10\.4"
    ):
        check_engine_compat(META, trt_version="10.4.0", gpu_name="NVIDIA L4", compute_capability="8.9")
    vc = {**META, "version_compatible": True}
    assert check_engine_compat(vc, trt_version="10.7.0", gpu_name="NVIDIA L4", compute_capability="8.9") == []
    with pytest.raises(BackendUnavailableError, match="runtime is older"):
        check_engine_compat(vc, trt_version="10.2.0", gpu_name="NVIDIA L4", compute_capability="8.9")


def test_engine_compat_refuses_other_gpu() -> None:
    with pytest.raises(BackendUnavailableError, match=r"built for NVIDIA L4 \(compute capability 8\.9\).*H100") as e:
        check_engine_compat(META, trt_version="10.3.0", gpu_name="NVIDIA H100", compute_capability="9.0")
    assert "rebuild the engine on this GPU" in e.value.hint
    # same compute capability, other model: refused unless allowed, then a warning
    with pytest.raises(BackendUnavailableError, match="tactics were timed on the other GPU"):
        check_engine_compat(META, trt_version="10.3.0", gpu_name="NVIDIA RTX 4090", compute_capability="8.9")
    warnings = check_engine_compat(
        META, trt_version="10.3.0", gpu_name="NVIDIA RTX 4090", compute_capability="8.9", allow_other_gpu=True
    )
    assert len(warnings) == 1 and "NVIDIA RTX 4090" in warnings[0]
    amp = {**META, "hardware_compatibility": "ampere_plus"}
    assert check_engine_compat(amp, trt_version="10.3.0", gpu_name="NVIDIA H100", compute_capability="9.0")
    with pytest.raises(BackendUnavailableError, match="Ampere and newer.*7.5"):
        check_engine_compat(amp, trt_version="10.3.0", gpu_name="Tesla T4", compute_capability="7.5")
    with pytest.raises(InputError, match="lacks 'gpu_name'"):
        check_engine_compat(
            {"tensorrt_version": "10.3.0"}, trt_version="10.3.0", gpu_name="x", compute_capability="8.0"
        )


def test_describe_parser_error() -> None:
    err = SimpleNamespace(
        node=lambda: 3,
        node_name=lambda: "/fc/MyOp",
        node_operator=lambda: "MyOp",
        code=lambda: SimpleNamespace(name="UNSUPPORTED_NODE"),
        desc=lambda: "No importer registered for op: MyOp",
    )
    assert (
        describe_parser_error(err) == "node 3 '/fc/MyOp' (MyOp): [UNSUPPORTED_NODE] No importer registered for op: MyOp"
    )
    bare = SimpleNamespace(node=lambda: -1, desc=lambda: "Invalid graph")
    assert describe_parser_error(bare) == "Invalid graph"


# --- with TensorRT and a GPU -----------------------------------------------------------------------------


def _mlp_onnx(path: Path, *, qdq: bool = False, bad_op: bool = False) -> None:
    """x[N,8] -> MatMul(8x16) + b -> Relu -> MatMul(16x4) -> y; optionally Q/DQ around the input and weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 16)).astype(np.float32) * 0.5
    b1 = rng.standard_normal(16).astype(np.float32) * 0.1
    w2 = rng.standard_normal((16, 4)).astype(np.float32) * 0.5
    inits = [numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")]
    inits += [] if qdq else [numpy_helper.from_array(w1, "w1")]
    nodes = []
    x, first_w = "x", "w1"
    if qdq:
        sx, sw = np.float32(4.0 / 127), np.float32(np.abs(w1).max() / 127)
        inits += [
            numpy_helper.from_array(np.array(sx, np.float32), "sx"),
            numpy_helper.from_array(np.array(sw, np.float32), "sw"),
            numpy_helper.from_array(np.array(0, np.int8), "zp"),
            numpy_helper.from_array(np.clip(np.round(w1 / sw), -127, 127).astype(np.int8), "w1q"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "sx", "zp"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "sx", "zp"], ["xdq"]),
            helper.make_node("DequantizeLinear", ["w1q", "sw", "zp"], ["w1dq"]),
        ]
        x, first_w = "xdq", "w1dq"
    nodes += [
        helper.make_node("MatMul", [x, first_w], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("NoSuchOp" if bad_op else "Relu", ["h1"], ["h2"], domain="effdl.test" if bad_op else ""),
        helper.make_node("MatMul", ["h2", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("effdl.test", 1)] if bad_op else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))


def _reference(x: np.ndarray, path: Path) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.fixture
def trt_ready() -> None:
    pytest.importorskip("tensorrt")
    if cuda_gpu_count()[0] == 0:
        pytest.skip("needs a CUDA GPU")


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize(("precision", "tol"), [("fp32", 1e-4), ("fp16", 2e-2)])
def test_build_and_run_matches_reference(trt_ready: None, tmp_path: Path, precision: str, tol: float) -> None:
    onnx_path = tmp_path / "mlp.onnx"
    _mlp_onnx(onnx_path)
    backend = TensorRTBackend()
    compiled = backend.compile(onnx_path, tmp_path, "mlp", {"precision": precision, "max_batch": 16})
    meta = compiled.meta
    assert compiled.files == ["mlp.engine"] and meta["precision"] == precision
    assert meta["profile"] == {"x": {"min": [1, 8], "opt": [1, 8], "max": [16, 8]}}
    assert meta["gpu_name"] and meta["compute_capability"] and meta["tensorrt_version"]
    assert (tmp_path / "tensorrt.timing.cache").stat().st_size > 0
    runner = backend.load(tmp_path, compiled)
    assert [s.name for s in runner.inputs] == ["x"] and runner.inputs[0].shape == (None, 8)
    rng = np.random.default_rng(1)
    for batch in (1, 16):
        x = rng.standard_normal((batch, 8)).astype(np.float32)
        (y,) = runner.run({"x": x})
        np.testing.assert_allclose(y, _reference(x, onnx_path), rtol=tol, atol=tol)
    with pytest.raises(InputError, match=r"outside the engine's profile \(min \[1, 8\], max \[16, 8\]\)"):
        runner.run({"x": np.zeros((17, 8), np.float32)})
    with pytest.raises(InputError, match="'x' has dtype float64"):
        runner.run({"x": np.zeros((2, 8))})
    again = backend.compile(onnx_path, tmp_path, "mlp2", {"precision": precision, "max_batch": 16})
    assert again.meta["timing_cache_reused"]


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_qdq_int8_build(trt_ready: None, tmp_path: Path) -> None:
    onnx_path = tmp_path / "q.onnx"
    _mlp_onnx(onnx_path, qdq=True)
    compiled = TensorRTBackend().compile(onnx_path, tmp_path, "q", {})
    assert compiled.meta["precision"] == "int8" and "INT8" in compiled.meta["builder_flags"]
    runner = TensorRTBackend().load(tmp_path, compiled)
    x = np.random.default_rng(2).uniform(-3, 3, (4, 8)).astype(np.float32)
    np.testing.assert_allclose(runner.run({"x": x})[0], _reference(x, onnx_path), rtol=0.1, atol=0.1)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_parser_errors_are_reported(trt_ready: None, tmp_path: Path) -> None:
    onnx_path = tmp_path / "bad.onnx"
    _mlp_onnx(onnx_path, bad_op=True)
    with pytest.raises(InputError, match="ONNX parser rejected bad.onnx(.|\n)*NoSuchOp"):
        TensorRTBackend().compile(onnx_path, tmp_path, "bad", {})


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_load_refuses_engine_from_other_version_or_gpu(trt_ready: None, tmp_path: Path) -> None:
    onnx_path = tmp_path / "mlp.onnx"
    _mlp_onnx(onnx_path)
    compiled = TensorRTBackend().compile(onnx_path, tmp_path, "mlp", {"max_batch": 4})
    other_version = Compiled(compiled.files, {**compiled.meta, "tensorrt_version": "9.0.0"})
    with pytest.raises(BackendUnavailableError, match="built with TensorRT 9.0.0"):
        TensorRTBackend().load(tmp_path, other_version)
    other_gpu = Compiled(compiled.files, {**compiled.meta, "gpu_name": "Some Other GPU", "compute_capability": "5.0"})
    with pytest.raises(BackendUnavailableError, match="built for Some Other GPU"):
        TensorRTBackend().load(tmp_path, other_gpu)
