"""Torch backend: torch.export archive -> load -> run, against the eager module, on tiny models."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from effdl.backends import get_backend
from effdl.backends.base import Compiled
from effdl.backends.torch import (
    TorchBackend,
    TorchOptions,
    check_pt2_archive,
    is_24_sparse,
    sparse_24_reason,
)
from effdl.errors import BackendUnavailableError, InputError

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


class TinyConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        y = nn.functional.max_pool2d(y, 2)
        return self.fc(y.flatten(1))


class TinyMLP(nn.Module):
    """Two inputs, two outputs (logits, features)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, width)
        self.fc2 = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.fc1(x) + bias)
        return self.fc2(h), h


def _conv() -> tuple[nn.Module, dict[str, np.ndarray]]:
    torch.manual_seed(0)
    m = TinyConv().eval()
    return m, {"x": np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)}


def _mlp(width: int = 16) -> tuple[nn.Module, dict[str, np.ndarray]]:
    torch.manual_seed(1)
    m = TinyMLP(width).eval()
    rng = np.random.default_rng(1)
    return m, {
        "x": rng.standard_normal((1, 8)).astype(np.float32),
        "bias": rng.standard_normal((1, width)).astype(np.float32),
    }


def _eager(m: nn.Module, feeds: dict[str, np.ndarray], names: tuple[str, ...]) -> list[np.ndarray]:
    with torch.no_grad():
        out = m(*(torch.from_numpy(feeds[n]) for n in names))
    out = out if isinstance(out, tuple) else (out,)
    return [o.numpy() for o in out]


def _feeds(rng: np.random.Generator, example: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    return {k: rng.standard_normal((batch, *v.shape[1:])).astype(np.float32) for k, v in example.items()}


@pytest.fixture(scope="module")
def conv_pkg(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, Compiled]:
    m, ex = _conv()
    out = tmp_path_factory.mktemp("conv")
    compiled = TorchBackend().compile_torch(m, ex, ("x",), ("logits",), out, "conv", {})
    return m, out, compiled


@pytest.fixture(scope="module")
def mlp_pkg(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, Compiled]:
    m, ex = _mlp()
    out = tmp_path_factory.mktemp("mlp")
    compiled = TorchBackend().compile_torch(m, ex, ("x", "bias"), ("logits", "features"), out, "mlp", {})
    return m, out, compiled


def test_compile_writes_pt2_and_meta(conv_pkg: tuple[nn.Module, Path, Compiled]) -> None:
    _, out, compiled = conv_pkg
    assert compiled.files == ["conv.pt2"] and (out / "conv.pt2").is_file()
    assert compiled.meta["format"] == "torch-export"
    assert compiled.meta["inputs"] == [{"name": "x", "dtype": "float32", "shape": [None, 1, 8, 8]}]
    assert compiled.meta["outputs"] == [{"name": "logits", "dtype": "float32", "shape": [None, 5]}]
    assert compiled.meta["dynamic_batch"] == {"min": 1, "max": None}


@pytest.mark.parametrize("pkg", ["conv_pkg", "mlp_pkg"])
def test_eager_fp32_matches_module_at_batch_1_and_3(pkg: str, request: pytest.FixtureRequest) -> None:
    m, out, compiled = request.getfixturevalue(pkg)
    runner = TorchBackend().load(out, compiled)
    names = tuple(s.name for s in runner.inputs)
    ex = {s.name: np.zeros([1 if d is None else d for d in s.shape], np.float32) for s in runner.inputs}
    rng = np.random.default_rng(7)
    for batch in (1, 3):
        feeds = _feeds(rng, ex, batch)
        got = runner.run(feeds)
        want = _eager(m, feeds, names)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == np.float32 and g.shape == w.shape and g.shape[0] == batch
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert runner.info["mode"] == "eager" and runner.info["precision"] == "fp32"


def test_bf16_within_bf16_tolerance(conv_pkg: tuple[nn.Module, Path, Compiled]) -> None:
    m, out, compiled = conv_pkg
    runner = TorchBackend().load(out, compiled, options={"precision": "bf16"})
    feeds = _feeds(np.random.default_rng(3), {"x": np.zeros((1, 1, 8, 8))}, 4)
    (got,) = runner.run(feeds)
    (want,) = _eager(m, feeds, ("x",))
    assert got.dtype == np.float32
    # bf16 keeps 8 bits of mantissa: relative error ~ 2^-8 per op; a few ops deep.
    np.testing.assert_allclose(got, want, rtol=5e-2, atol=5e-2)
    assert not np.array_equal(got, want)  # it really ran in bf16
    assert runner.info["precision"] == "bf16"


@pytest.mark.slow  # Inductor's first compile takes 20-40 s on 2 busy cores (about 4 s with a warm cache)
def test_compile_mode_matches_eager(tmp_path: Path) -> None:
    m, ex = _mlp()
    compiled = TorchBackend().compile_torch(
        m, ex, ("x", "bias"), ("logits", "features"), tmp_path, "mlp", {"mode": "compile"}
    )
    runner = TorchBackend().load(tmp_path, compiled)
    assert runner.info["mode"] == "compile"
    feeds = _feeds(np.random.default_rng(5), ex, 3)
    for g, w in zip(runner.run(feeds), _eager(m, feeds, ("x", "bias")), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_max_batch_is_recorded_and_enforced(tmp_path: Path) -> None:
    m, ex = _conv()
    compiled = TorchBackend().compile_torch(m, ex, ("x",), ("logits",), tmp_path, "c", {"max_batch": 4})
    assert compiled.meta["dynamic_batch"] == {"min": 1, "max": 4}
    runner = TorchBackend().load(tmp_path, compiled)
    assert runner.run(_feeds(np.random.default_rng(0), ex, 4))[0].shape == (4, 5)
    with pytest.raises(InputError, match=r"'x' has batch 5; .* batch 1\.\.4"):
        runner.run(_feeds(np.random.default_rng(0), ex, 5))


def test_compile_from_an_exported_module(conv_pkg: tuple[nn.Module, Path, Compiled], tmp_path: Path) -> None:
    m, out, _ = conv_pkg  # e.g. a .pt2 checkpoint: its module refuses .eval()
    exported = torch.export.load(str(out / "conv.pt2")).module()
    compiled = TorchBackend().compile_torch(
        exported, {"x": np.zeros((1, 1, 8, 8), np.float32)}, ("x",), ("logits",), tmp_path, "again", {}
    )
    feeds = _feeds(np.random.default_rng(4), {"x": np.zeros((1, 1, 8, 8))}, 2)
    got = TorchBackend().load(tmp_path, compiled).run(feeds)[0]
    np.testing.assert_allclose(got, _eager(m, feeds, ("x",))[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"cuda_graphs": True}, "cuda_graphs.*needs device 'cuda'"),
        ({"sparse_24": True, "precision": "fp16"}, "sparse_24.*needs device 'cuda'"),
        ({"mode": "jit"}, "'mode' must be one of"),
        ({"precision": "int4"}, "'precision' must be one of"),
        ({"cuda_graph": True}, "unknown option.*'cuda_graph'"),
        ({"cuda_graphs": "yes"}, "'cuda_graphs' must be true or false"),
    ],
)
def test_bad_or_cuda_only_options_refuse_on_cpu(
    conv_pkg: tuple[nn.Module, Path, Compiled], options: dict, match: str
) -> None:
    _, out, compiled = conv_pkg
    with pytest.raises(InputError, match=match):
        TorchBackend().load(out, compiled, device="cpu", options=options)


def test_sparse_24_needs_half_precision() -> None:
    with pytest.raises(InputError, match="cuSPARSELt.*precision is 'fp32'"):
        TorchOptions(sparse_24=True).check_device("cuda")


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
def test_cuda_device_without_cuda_is_unavailable(conv_pkg: tuple[nn.Module, Path, Compiled]) -> None:
    _, out, compiled = conv_pkg
    with pytest.raises(BackendUnavailableError, match="torch.cuda.is_available"):
        TorchBackend().load(out, compiled, device="cuda")


def test_feeds_are_checked(mlp_pkg: tuple[nn.Module, Path, Compiled]) -> None:
    _, out, compiled = mlp_pkg
    runner = TorchBackend().load(out, compiled)
    x = np.zeros((2, 8), np.float32)
    with pytest.raises(InputError, match="missing bias"):
        runner.run({"x": x})
    with pytest.raises(InputError, match="'x' has dtype float64"):
        runner.run({"x": x.astype(np.float64), "bias": np.zeros((2, 16), np.float32)})
    with pytest.raises(InputError, match=r"'bias' has shape \[2, 15\]"):
        runner.run({"x": x, "bias": np.zeros((2, 15), np.float32)})


def test_onnx_compile_is_refused(tmp_path: Path) -> None:
    assert TorchBackend.source == "torch"
    with pytest.raises(InputError, match="compile_torch"):
        TorchBackend().compile(tmp_path / "m.onnx", tmp_path, "m", {})


def test_availability_and_registry() -> None:
    avail = TorchBackend.availability()
    assert avail.available and avail.version and "cpu" in avail.devices
    assert ("cuda" in avail.devices) == CUDA
    assert isinstance(get_backend("torch"), TorchBackend)


def test_is_24_sparse() -> None:
    w = np.zeros((4, 8), np.float32)
    w[:, [0, 3, 5, 6]] = 1.0
    assert is_24_sparse(w)
    w[1, 1] = 2.0  # three non-zeros in the first group of row 1
    assert not is_24_sparse(w)
    assert not is_24_sparse(np.ones((4, 6)))  # width not a multiple of 4
    dense16 = np.ones((16, 16), np.float32)
    assert "2:4 pattern" in sparse_24_reason(dense16)
    sparse16 = dense16.copy()
    sparse16[:, 1::2] = 0
    assert sparse_24_reason(sparse16) is None
    assert "multiple of 16" in sparse_24_reason(sparse16[:8])


def _rewrite_member(src: Path, dst: Path, suffix: str, new: bytes) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, new if item.filename.endswith(suffix) else data)


def test_archive_with_pickled_weights_is_refused(conv_pkg: tuple[nn.Module, Path, Compiled], tmp_path: Path) -> None:
    _, out, _ = conv_pkg
    with zipfile.ZipFile(out / "conv.pt2") as z:
        (member,) = [n for n in z.namelist() if n.endswith("weights_config.json")]
        config = json.loads(z.read(member))
    first = next(iter(config["config"]))
    config["config"][first]["use_pickle"] = True
    bad = tmp_path / "bad.pt2"
    _rewrite_member(out / "conv.pt2", bad, "weights_config.json", json.dumps(config).encode())
    with pytest.raises(InputError, match=f"stores {first} as pickles"):
        check_pt2_archive(bad)


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("pickled code ran",))


def test_archive_with_unsafe_sample_inputs_is_refused(
    conv_pkg: tuple[nn.Module, Path, Compiled], tmp_path: Path
) -> None:
    import io

    _, out, compiled = conv_pkg
    buf = io.BytesIO()
    torch.save(((_Evil(),), {}), buf)
    bad = tmp_path / "conv.pt2"
    _rewrite_member(out / "conv.pt2", bad, "sample_inputs/model.pt", buf.getvalue())
    with pytest.raises(InputError, match="weights_only=True"):
        TorchBackend().load(tmp_path, compiled)
    check_pt2_archive(out / "conv.pt2")  # the archive effdl wrote passes
    with pytest.raises(InputError, match="not a torch.export archive"):
        (tmp_path / "junk.pt2").write_bytes(b"junk")
        check_pt2_archive(tmp_path / "junk.pt2")


def test_runner_needs_no_onnx(conv_pkg: tuple[nn.Module, Path, Compiled]) -> None:
    _, out, compiled = conv_pkg
    code = (
        "import sys, numpy as np\n"
        "from effdl.backends.base import Compiled\n"
        "from effdl.backends.torch import TorchBackend\n"
        f"c = Compiled({compiled.files!r}, {compiled.meta!r})\n"
        f"r = TorchBackend().load({str(out)!r}, c)\n"
        "(y,) = r.run({'x': np.zeros((2, 1, 8, 8), np.float32)})\n"
        "assert y.shape == (2, 5)\n"
        "bad = [m for m in ('onnx', 'onnxruntime', 'openvino') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- CUDA ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("mode", ["eager", "compile"])
def test_cuda_fp16_and_cuda_graphs(conv_pkg: tuple[nn.Module, Path, Compiled], mode: str) -> None:
    m, out, compiled = conv_pkg
    feeds = _feeds(np.random.default_rng(2), {"x": np.zeros((1, 1, 8, 8))}, 3)
    (want,) = _eager(m, feeds, ("x",))
    fp16 = TorchBackend().load(out, compiled, device="cuda", options={"mode": mode, "precision": "fp16"})
    np.testing.assert_allclose(fp16.run(feeds)[0], want, rtol=2e-2, atol=2e-2)
    graphs = TorchBackend().load(out, compiled, device="cuda", options={"mode": mode, "cuda_graphs": True})
    for _ in range(3):  # capture, then replays with new data each time
        feeds = _feeds(np.random.default_rng(_), {"x": np.zeros((1, 1, 8, 8))}, 3)
        np.testing.assert_allclose(graphs.run(feeds)[0], _eager(m, feeds, ("x",))[0], rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
@gpu
def test_cuda_sparse_24(tmp_path: Path) -> None:
    big = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64)).eval()
    with torch.no_grad():
        for layer in (big[0], big[2]):  # impose a 2:4 pattern: zero two of every four input columns
            w = layer.weight
            w[:, 1::4] = 0
            w[:, 2::4] = 0
    x = {"x": np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)}
    compiled = TorchBackend().compile_torch(big, x, ("x",), ("y",), tmp_path, "big", {})
    runner = TorchBackend().load(tmp_path, compiled, device="cuda", options={"precision": "fp16", "sparse_24": True})
    assert set(runner.info["sparse_24_layers"].values()) == {"sparse"}
    (want,) = _eager(big, x, ("x",))
    np.testing.assert_allclose(runner.run(x)[0], want, rtol=3e-2, atol=3e-2)
    dense = nn.Sequential(nn.Linear(64, 64)).eval()
    compiled = TorchBackend().compile_torch(dense, x, ("x",), ("y",), tmp_path, "dense", {})
    with pytest.raises(InputError, match="no 2:4 linear weight"):
        TorchBackend().load(tmp_path, compiled, device="cuda", options={"precision": "fp16", "sparse_24": True})


def test_variant_names_tell_torch_targets_apart() -> None:
    from effdl.pipeline import variant_name
    from effdl.recipe import TargetSpec

    def name(device: str = "cpu", **options: object) -> str:
        return variant_name(TargetSpec(backend="torch", device=device, options=options), "fp32")

    names = {
        name(mode="eager", precision="fp32"),
        name("cuda", mode="compile", precision="fp16"),
        name("cuda", mode="compile", precision="fp16", cuda_graphs=True),
        name("cuda", mode="eager", precision="fp16", sparse_24=True),
    }
    assert names == {
        "torch-eager-fp32",
        "torch-compile-fp16-cuda",
        "torch-compile-fp16-cudagraphs-cuda",
        "torch-eager-fp16-sparse24-cuda",
    }


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a host without CUDA")
def test_cuda_target_refused_before_any_work(lenet_ckpt: Path, tmp_path: Path) -> None:
    from effdl.pipeline import compress
    from effdl.recipe import load_recipe

    recipe_path = Path(__file__).resolve().parent.parent / "recipes" / "gpu-torch.yaml"
    with pytest.raises(BackendUnavailableError, match="device 'cuda'"):
        compress(lenet_ckpt, load_recipe(recipe_path), tmp_path / "out")
    assert not (tmp_path / "out").exists()
