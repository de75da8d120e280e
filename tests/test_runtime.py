"""effdl.runtime: loading packages, input validation, tamper checks, backend choice, threads."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import effdl
from effdl.errors import BackendUnavailableError, InputError
from effdl.pipeline import compress
from effdl.recipe import load_recipe
from effdl.runtime.host import compare_hosts, host_fingerprint


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


# ---------------------------------------------------------------------------------------------------------
# The auto choice and its log line
# ---------------------------------------------------------------------------------------------------------


def _copy_with(pkg: Path, tmp_path: Path, edit: Callable[[dict], None], keep_report: bool = True) -> Path:
    """A copy of the package whose manifest.json was changed by ``edit`` (model files untouched)."""
    copy = tmp_path / "pkg"
    shutil.copytree(pkg, copy)
    if not keep_report:
        (copy / "report.json").unlink(missing_ok=True)
    m = json.loads((copy / "manifest.json").read_text())
    edit(m)
    (copy / "manifest.json").write_text(json.dumps(m))
    return copy


def _set_p50(m: dict, p50: dict[str, float], host: dict | None = None) -> None:
    for v in m["variants"]:
        v["benchmark"] = {"p50_ms": p50[v["name"]], "batch": 1, "scenario": "single-stream"}
        if host is not None:
            v["benchmark"]["host"] = host


P50 = {"openvino-int8": 0.1, "openvino-fp32": 0.2, "onnxruntime-int8": 0.3, "onnxruntime-fp32": 0.4}


def _hide_module(monkeypatch: pytest.MonkeyPatch, hidden: set[str]) -> None:
    real = importlib.util.find_spec

    def fake(name: str, *a: Any, **k: Any) -> Any:
        return None if name.split(".")[0] in hidden else real(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", fake)


def test_auto_logs_choice_and_same_host(pkg: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    copy = _copy_with(pkg, tmp_path, lambda m: _set_p50(m, P50, host_fingerprint()))
    caplog.set_level(logging.INFO, logger="effdl.runtime")
    s = effdl.load(copy)
    assert s.name == "openvino-int8"
    [rec] = [r for r in caplog.records if r.name == "effdl.runtime" and r.levelno == logging.INFO]
    msg = rec.getMessage()
    assert "loaded openvino-int8 (openvino, int8)" in msg
    assert "fastest by recorded p50 of the 4 cpu variants" in msg and "p50 0.100 ms" in msg
    assert "skipped" not in msg
    assert "benchmark recorded on this CPU model" in msg
    assert s.choice == msg


def test_auto_falls_back_when_fastest_backend_missing(
    pkg: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = _copy_with(pkg, tmp_path, lambda m: _set_p50(m, P50, host_fingerprint()))
    _hide_module(monkeypatch, {"openvino"})
    caplog.set_level(logging.INFO, logger="effdl.runtime")
    s = effdl.load(copy)
    assert s.name == "onnxruntime-int8"
    msg = s.choice
    assert "loaded onnxruntime-int8" in msg and "p50 0.300 ms" in msg
    assert "skipped: openvino-int8 (p50 0.100 ms): backend openvino not installed" in msg
    assert "openvino-fp32 (p50 0.200 ms): backend openvino not installed" in msg
    assert msg in caplog.messages


def test_auto_falls_back_when_a_variant_fails_to_load(
    pkg: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from effdl.backends.openvino import OpenVinoBackend

    def broken(self: Any, *a: Any, **k: Any) -> Any:
        raise RuntimeError("plugin exploded")

    monkeypatch.setattr(OpenVinoBackend, "load", broken)
    copy = _copy_with(pkg, tmp_path, lambda m: _set_p50(m, P50, host_fingerprint()))
    caplog.set_level(logging.INFO, logger="effdl.runtime")
    s = effdl.load(copy)
    assert s.name == "onnxruntime-int8"
    assert "openvino-int8 (p50 0.100 ms): failed to load: RuntimeError: plugin exploded" in s.choice
    assert any("variant openvino-int8 failed to load" in r.getMessage() for r in caplog.records if r.levelno == 30)


def test_auto_says_when_benchmark_came_from_another_cpu(pkg: Path, tmp_path: Path) -> None:
    other = {"cpu": "Imaginary CPU 9000", "machine": "riscv64", "logical_cpus": 512, "system": "Linux"}
    s = effdl.load(_copy_with(pkg, tmp_path, lambda m: _set_p50(m, P50, other)))
    assert "benchmark recorded on a different CPU: 'Imaginary CPU 9000' (riscv64, 512 CPUs)" in s.choice
    assert "the recorded order may not hold here" in s.choice


def test_auto_host_from_report_and_unknown(pkg: Path, tmp_path: Path) -> None:
    # compress's own package: the host comes from benchmark.host or, failing that, report.json's system.
    s = effdl.load(pkg)
    assert "benchmark recorded on this CPU model" in s.choice, s.choice
    bare = _copy_with(pkg, tmp_path, lambda m: _set_p50(m, P50), keep_report=False)
    assert "the package does not record which CPU its benchmark ran on" in effdl.load(bare).choice


def test_compare_hosts() -> None:
    here = {"cpu": "Intel(R) Xeon(R)  Gold", "machine": "x86_64", "logical_cpus": 8}
    assert compare_hosts(None, here)[0] is None
    assert compare_hosts({"cpu": "intel(r) xeon(r) gold", "machine": "x86_64", "logical_cpus": 8}, here)[0] is True
    same, text = compare_hosts({"cpu": "Intel(R) Xeon(R) Gold", "machine": "x86_64", "logical_cpus": 64}, here)
    assert same is True and "with 64 CPUs (this host has 8)" in text
    assert compare_hosts({"cpu": "AMD EPYC", "machine": "x86_64"}, here)[0] is False
    fp = host_fingerprint()
    assert set(fp) == {"cpu", "machine", "logical_cpus", "system"} and fp["logical_cpus"] >= 1


# ---------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------


def test_missing_backend_gives_install_hint(pkg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_module(monkeypatch, {"openvino"})
    with pytest.raises(BackendUnavailableError, match="no runtime installed for variant 'openvino-int8'") as e:
        effdl.load(pkg, variant="openvino-int8")
    assert e.value.hint is not None and "pip install openvino" in e.value.hint
    with pytest.raises(BackendUnavailableError, match="backend openvino not installed") as e:
        effdl.load(pkg, backend="openvino")
    assert "pip install openvino" in str(e.value)
    _hide_module(monkeypatch, {"openvino", "onnxruntime"})
    with pytest.raises(BackendUnavailableError, match="no runtime installed for backend='auto'") as e:
        effdl.load(pkg)
    assert "pip install onnxruntime" in e.value.hint and "pip install openvino" in e.value.hint


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "gpu0"}, r"unknown device 'gpu0'; known: cpu, cuda"),
        ({"device": 0}, r"unknown device 0"),
        ({"threads": 0}, r"threads must be a positive integer or None.*got 0"),
        ({"threads": -2}, r"threads must be a positive integer.*got -2"),
        ({"threads": 1.5}, r"threads must be a positive integer.*got 1.5"),
        ({"threads": True}, r"threads must be a positive integer.*got True"),
        ({"workers": 0}, r"workers must be a positive integer, got 0"),
        ({"backend": "ort"}, r"unknown backend 'ort'; known: auto, onnxruntime, openvino"),
    ],
)
def test_bad_load_arguments(pkg: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        effdl.load(pkg, **kwargs)


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "GPU.0"])
def test_device_without_variant(pkg: Path, device: str) -> None:
    with pytest.raises(InputError, match=rf"no variant for backend='auto' device='{device}'; it has \[\('onnxruntime'"):
        effdl.load(pkg, device=device)
    assert effdl.load(pkg, device="CPU").name  # the kind of device is matched without case


@pytest.mark.parametrize("bad", ["../outside.onnx", "models/../../outside.onnx", "/etc/passwd", "C:\\x.onnx"])
def test_manifest_path_outside_package_is_refused(pkg: Path, tmp_path: Path, bad: str) -> None:
    def edit(m: dict) -> None:
        v = next(v for v in m["variants"] if v["name"] == "onnxruntime-fp32")
        v["files"] = [bad]
        m["files"][bad] = m["files"]["models/fp32.onnx"]

    copy = _copy_with(pkg, tmp_path, edit)
    with pytest.raises(InputError, match=r"points outside the package") as e:
        effdl.load(copy, variant="onnxruntime-int8")  # refused at read: even another variant does not load
    assert repr(bad) in str(e.value)


def test_symlink_out_of_package_is_refused(pkg: Path, tmp_path: Path) -> None:
    copy = _copy_with(pkg, tmp_path, lambda m: None)
    outside = tmp_path / "elsewhere.onnx"
    shutil.copyfile(copy / "models" / "int8.onnx", outside)
    (copy / "models" / "int8.onnx").unlink()
    (copy / "models" / "int8.onnx").symlink_to(outside)
    for verify in (True, False):
        with pytest.raises(InputError, match=r"'models/int8.onnx' resolves to .*outside the package"):
            effdl.load(copy, variant="onnxruntime-int8", verify=verify)


def test_variant_files_in_two_folders_are_refused(pkg: Path, tmp_path: Path) -> None:
    def edit(m: dict) -> None:
        v = next(v for v in m["variants"] if v["name"] == "openvino-int8")
        v["files"] = ["models/openvino-int8.xml", "other/openvino-int8.bin"]

    with pytest.raises(InputError, match="a variant's files must lie in one folder"):
        effdl.load(_copy_with(pkg, tmp_path, edit))


# ---------------------------------------------------------------------------------------------------------
# Throughput helpers: batching and async
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["onnxruntime-int8", "openvino-fp32"])
def test_run_batched_equals_run(pkg: Path, variant: str) -> None:
    s = effdl.load(pkg, variant=variant)
    x = np.random.default_rng(2).standard_normal((37, 1, 32, 32)).astype(np.float32)
    whole = s.run(x)[0]
    for b in (1, 8, 37, 100):
        out = s.run_batched({"image": x}, b)
        assert len(out) == 1 and out[0].shape == (37, 10)
        np.testing.assert_allclose(out[0], whole, rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="batch_size must be a positive integer, got 0"):
        s.run_batched(x, 0)
    with pytest.raises(InputError, match="the batch is empty"):
        s.run_batched(x[:0], 4)
    with pytest.raises(InputError, match="input 'image': dtype float64"):
        s.run_batched(x.astype(np.float64), 4)


def test_run_batched_refuses_static_batch(pkg: Path, tmp_path: Path) -> None:
    def edit(m: dict) -> None:
        m["inputs"][0]["shape"][0] = 4

    s = effdl.load(_copy_with(pkg, tmp_path, edit), variant="onnxruntime-fp32")
    x = np.zeros((4, 1, 32, 32), np.float32)
    assert s.run(x)[0].shape == (4, 10)
    with pytest.raises(InputError, match=r"input 'image' has a static first dimension \(shape \[4, 1, 32, 32\]\)"):
        s.run_batched(x, 2)


@pytest.mark.parametrize("variant", ["onnxruntime-int8", "openvino-int8"])
def test_run_async_and_arun(pkg: Path, variant: str) -> None:
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1 + i % 3, 1, 32, 32)).astype(np.float32) for i in range(12)]
    with effdl.load(pkg, variant=variant, workers=3) as s:
        expected = [s.run(x)[0] for x in xs]
        futures = [s.run_async(x) for x in xs * 4]
        for f, e in zip(futures, expected * 4, strict=True):
            np.testing.assert_allclose(f.result(timeout=60)[0], e, rtol=1e-5, atol=1e-5)
        with pytest.raises(InputError, match="dtype float64"):  # checked in the caller, before submitting
            s.run_async(xs[0].astype(np.float64))

        async def many() -> list[list[np.ndarray]]:
            return await asyncio.gather(*(s.arun(image=x) for x in xs))

        for got, e in zip(asyncio.run(many()), expected, strict=True):
            np.testing.assert_allclose(got[0], e, rtol=1e-5, atol=1e-5)
        # submitted from many threads at once
        errors: list[str] = []

        def submitter(k: int) -> None:
            fs = [(j, s.run_async(xs[j])) for j in range(k, len(xs), 3)]
            errors.extend(f"{k}:{j}" for j, f in fs if not np.allclose(f.result()[0], expected[j], atol=1e-5))

        ts = [threading.Thread(target=submitter, args=(k,)) for k in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors
    assert s._pool is None  # closed by the with block; run still works, and run_async starts a new pool
    np.testing.assert_allclose(s.run_async(xs[0]).result()[0], expected[0], rtol=1e-5, atol=1e-5)
    s.close()


def test_run_dict_fast_path_checks(pkg: Path) -> None:
    s = effdl.load(pkg, variant="onnxruntime-fp32")
    x = np.zeros((2, 1, 32, 32), np.float32)
    np.testing.assert_allclose(s.run({"image": x})[0], s(x)[0])
    with pytest.raises(InputError, match="dtype int64 given"):
        s.run({"image": x.astype(np.int64)})
    with pytest.raises(InputError, match=r"missing input\(s\) \['image'\]"):
        s.run({})
    with pytest.raises(InputError, match="not str"):
        s.run("image")


def test_overhead_bench_package_loads(tmp_path: Path) -> None:
    """The 1-op package that bench/runtime_overhead.py times is a valid package (no timing asserted)."""
    path = Path(__file__).parents[1] / "bench" / "runtime_overhead.py"
    spec = importlib.util.spec_from_file_location("runtime_overhead", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    s = effdl.load(mod.make_package(tmp_path), variant="onnxruntime-fp32", threads=1)
    x = np.arange(32, dtype=np.float32).reshape(2, 16)
    np.testing.assert_array_equal(s(x)[0], x)
    assert mod.main(["--rounds", "3", "--calls", "2", "--limit-us", "1e9"]) == 0


def test_device_recorded_by_a_variant_is_accepted(pkg: Path, tmp_path: Path) -> None:
    """ONNX Runtime's TensorRT route records device 'tensorrt': a device kind no backend class lists."""

    def edit(m: dict) -> None:
        next(v for v in m["variants"] if v["name"] == "onnxruntime-int8")["device"] = "tensorrt"

    copy = _copy_with(pkg, tmp_path, edit)
    with pytest.raises(InputError, match="onnxruntime has no TensorrtExecutionProvider here"):
        effdl.load(copy, device="tensorrt")
    with pytest.raises(InputError, match="unknown device 'tensorrtx'; known: cpu, cuda, gpu, npu, tensorrt"):
        effdl.load(copy, device="tensorrtx")
