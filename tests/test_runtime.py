"""effdl.runtime: loading packages, input validation, tamper checks, backend choice, threads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import effdl
from effdl.errors import InputError
from effdl.pipeline import compress
from effdl.recipe import load_recipe


def build_runtime_package(lenet_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LeNet-5 package (4 variants, benchmarked), built once per test session.

    Cached under the session's base temp folder so that tests/test_runtime_minimal.py reuses it
    (compress writes atomically, so a manifest there means a finished package).
    """
    from tests.conftest import FAST_RECIPE

    out = tmp_path_factory.getbasetemp() / "runtime-lenet-package"
    if not (out / "manifest.json").is_file():
        recipe_path = tmp_path_factory.getbasetemp() / "runtime-fast.yaml"
        recipe_path.write_text(FAST_RECIPE)
        compress(lenet_ckpt, load_recipe(recipe_path), out)
    return out


@pytest.fixture(scope="session")
def pkg(lenet_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_runtime_package(lenet_ckpt, tmp_path_factory)


def test_import_runtime_loads_no_heavy_library() -> None:
    code = (
        "import sys, effdl, effdl.runtime\n"
        "heavy = [m for m in ('torch', 'onnx', 'openvino', 'nncf', 'onnxruntime') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_auto_picks_fastest_recorded_variant(pkg: Path) -> None:
    manifest = json.loads((pkg / "manifest.json").read_text())
    fastest = min(manifest["variants"], key=lambda v: v["benchmark"]["p50_ms"])["name"]
    s = effdl.load(pkg)
    assert s.name == fastest


@pytest.mark.parametrize("variant", ["onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8"])
def test_call_styles_and_dynamic_batch(pkg: Path, variant: str) -> None:
    s = effdl.load(pkg, variant=variant)
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    a = s.run({"image": x})[0]
    assert a.shape == (3, 10)
    np.testing.assert_allclose(s.run([x])[0], a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s(x)[0], a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s(image=x)[0], a, rtol=1e-5, atol=1e-5)
    assert s.run(x[:1])[0].shape == (1, 10)


def test_specs(pkg: Path) -> None:
    s = effdl.load(pkg, backend="onnxruntime")
    assert s.backend == "onnxruntime"
    assert [(i.name, i.dtype, i.shape) for i in s.inputs] == [("image", "float32", (None, 1, 32, 32))]
    assert s.outputs[0].name == "logits"


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        (
            {"img": np.zeros((1, 1, 32, 32), np.float32)},
            r"unknown input\(s\) \['img'\].*missing input\(s\) \['image'\]",
        ),
        ({"image": np.zeros((1, 1, 32, 32), np.float64)}, "input 'image': dtype float64 given, float32 expected"),
        ({"image": np.zeros((1, 32, 32), np.float32)}, "input 'image': rank 3 .* rank 4 expected"),
        ({"image": np.zeros((1, 1, 28, 28), np.float32)}, "input 'image': dimension 2 is 28, expected 32"),
        ({"image": [[1.0]]}, "expected a numpy array, got list"),
    ],
)
def test_bad_inputs_are_named(pkg: Path, feeds: dict, message: str) -> None:
    s = effdl.load(pkg, variant="onnxruntime-fp32")
    with pytest.raises(InputError, match=message):
        s.run(feeds)


def test_wrong_positional_count(pkg: Path) -> None:
    s = effdl.load(pkg, variant="onnxruntime-fp32")
    x = np.zeros((1, 1, 32, 32), np.float32)
    with pytest.raises(InputError, match="takes 1 inputs"):
        s.run([x, x])


def test_tampered_and_truncated_files_are_refused(pkg: Path, tmp_path: Path) -> None:
    copy = tmp_path / "pkg"
    shutil.copytree(pkg, copy)
    f = copy / "models" / "int8.onnx"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"'models/int8.onnx' does not match its sha256"):
        effdl.load(copy, variant="onnxruntime-int8")
    f.write_bytes(bytes(data[:1000]))
    with pytest.raises(InputError, match=r"'models/int8.onnx' has 1000 bytes.*truncated"):
        effdl.load(copy, variant="onnxruntime-int8")
    effdl.load(copy, variant="openvino-int8")  # untouched variants still load


def test_not_a_package(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="package not found"):
        effdl.load(tmp_path / "nope")
    with pytest.raises(InputError, match="manifest.json is missing"):
        effdl.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        effdl.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "effdl.package", "format_version": 99}))
    with pytest.raises(InputError, match="newer than this effdl reads"):
        effdl.load(tmp_path)


def test_unknown_variant_and_backend(pkg: Path) -> None:
    with pytest.raises(InputError, match="no variant 'tensorrt-int8'"):
        effdl.load(pkg, variant="tensorrt-int8")
    with pytest.raises(InputError, match="no variant for backend='tensorrt'"):
        effdl.load(pkg, backend="tensorrt")


@pytest.mark.parametrize("variant", ["onnxruntime-int8", "openvino-int8"])
def test_concurrent_runs_are_safe(pkg: Path, variant: str) -> None:
    s = effdl.load(pkg, variant=variant)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((1, 1, 32, 32)).astype(np.float32) for _ in range(8)]
    expected = [s.run(x)[0] for x in xs]
    errors: list[str] = []

    def worker(k: int) -> None:
        for i in range(40):
            j = (i + k) % len(xs)
            if not np.allclose(s.run(xs[j])[0], expected[j], atol=1e-5):
                errors.append(f"thread {k} query {i}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_session_benchmark(pkg: Path) -> None:
    s = effdl.load(pkg, variant="onnxruntime-int8")
    b = s.benchmark(warmup=2, queries=20)
    assert b["queries"] == 20 and b["latency_ms"]["p50"] > 0 and b["variant"] == "onnxruntime-int8"
