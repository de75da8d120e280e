"""effdl.runtime in fresh virtual environments holding only numpy and one inference runtime.

The documented minimal install (docs/runtime.md) is ``pip install --no-deps effdl`` plus the requirements
of the ``runtime`` extra (numpy + onnxruntime) or of the ``runtime-openvino`` extra (numpy + openvino).
These tests build one effdl wheel per session, make a venv for each extra with ``python -m venv``, install
exactly that, and run the LeNet-5 package there: outputs must equal this environment's, and torch, onnx,
nncf (and the other runtime) must be neither imported nor importable. They need a package index (PyPI or
the configured mirror) and are skipped, saying so, only when pip cannot reach one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import effdl

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "onnx", "nncf", "openvino", "onnxruntime")
# pip output that means "no index could be reached", as opposed to a broken install.
OFFLINE_SIGNS = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "No matching distribution found",
    "Could not find a version that satisfies",
    "ProxyError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
)

SCRIPT = r"""
import importlib.util, json, logging, sys
from pathlib import Path

import numpy as np

import effdl
import effdl.runtime
from effdl.errors import BackendUnavailableError

pkg, x_path, out_dir, other = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
x = np.load(x_path)
result = {"effdl_file": effdl.__file__, "runs": {}}
auto = effdl.load(pkg)
result["auto"] = auto.name
result["choice"] = auto.choice
np.save(out_dir / "auto.npy", auto.run(x)[0])
for s in [effdl.runtime.load(pkg, variant=v["name"]) for v in auto.manifest["variants"]
          if v["backend"] == auto.backend]:
    np.save(out_dir / f"{s.name}.npy", s.run(x)[0])
    np.save(out_dir / f"{s.name}-batched.npy", s.run_batched(x, 4)[0])
    np.save(out_dir / f"{s.name}-async.npy", s.run_async(x).result()[0])
    s.close()
    result["runs"][s.name] = s.backend
try:
    effdl.load(pkg, backend=other)
    result["other"] = "loaded"
except BackendUnavailableError as e:
    result["other"] = str(e)
result["in_sys_modules"] = sorted(m for m in ("torch", "onnx", "nncf", "openvino", "onnxruntime") if m in sys.modules)
result["importable"] = sorted(
    m for m in ("torch", "onnx", "nncf", "openvino", "onnxruntime") if importlib.util.find_spec(m) is not None
)
print(json.dumps(result))
"""


def _clean_env() -> dict[str, str]:
    """This environment minus what would let the venv see the repository or this venv."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(), **kw)


def _pip_supports_python_flag() -> bool:
    try:
        import pip

        major, minor = (int(p) for p in pip.__version__.split(".")[:2])
    except (ImportError, ValueError):
        return False
    return (major, minor) >= (22, 3)


def _install(python: Path, args: list[str]) -> None:
    """pip install into the venv of ``python``; skip the test only when no package index is reachable."""
    base = (
        [sys.executable, "-m", "pip", "--python", str(python)]
        if _pip_supports_python_flag()
        else [str(python), "-m", "pip"]
    )
    cmd = [*base, "install", "--no-compile", "--disable-pip-version-check", "--no-input", *args]
    p = _run(cmd, timeout=900)
    if p.returncode != 0:
        out = p.stdout + p.stderr
        if any(s in out for s in OFFLINE_SIGNS) and not _index_reachable():
            pytest.skip(f"no package index reachable (PyPI or mirror), pip said: {out.strip().splitlines()[-1]}")
        pytest.fail(f"{' '.join(cmd)} failed:\n{out[-3000:]}")


def _index_reachable() -> bool:
    """Whether pip's configured index answers at all (so a failed install is a real failure, not offline)."""
    probe = [sys.executable, "-m", "pip", "index", "versions", "numpy", "--retries", "1", "--timeout", "15"]
    return _run(probe, timeout=120).returncode == 0


def _extra_requirements(wheel: Path, extra: str) -> list[str]:
    """The requirements of ``extra`` as written in the wheel's METADATA (so the test uses the real extra)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    reqs = []
    for line in lines:
        if line.startswith("Requires-Dist:") and ";" in line:
            req, _, marker = line.removeprefix("Requires-Dist:").partition(";")
            if marker.replace(" ", "").replace("'", '"') == f'extra=="{extra}"':
                reqs.append(req.strip())
    assert reqs, f"pyproject.toml has no [{extra}] extra"
    return reqs


def _local_setuptools_ok() -> bool:
    """Whether this environment's setuptools can build the wheel without fetching one (>=71 makes wheels itself)."""
    import importlib.metadata

    try:
        return int(importlib.metadata.version("setuptools").split(".")[0]) >= 71
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False


@pytest.fixture(scope="session")
def effdl_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One effdl wheel per session, built from a copy of this tree (no build/ or egg-info left in the repo)."""
    src = tmp_path_factory.mktemp("effdl-src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("effdl", "devices"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    isolation = ["--no-build-isolation"] if _local_setuptools_ok() else []  # else pip fetches setuptools
    p = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(dist), str(src)], timeout=600)
    if p.returncode != 0:
        out = p.stdout + p.stderr
        if any(s in out for s in OFFLINE_SIGNS) and not _index_reachable():
            pytest.skip(f"no package index reachable to build the wheel: {out.strip().splitlines()[-1]}")
        pytest.fail(f"building the effdl wheel failed:\n{out[-3000:]}")
    [wheel] = dist.glob("effdl-*.whl")
    return wheel


EXTRAS = ("runtime", "runtime-openvino")


@pytest.fixture(scope="session")
def minimal_venv(effdl_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """``minimal_venv(extra)``: a venv with ``pip install --no-deps effdl`` plus the extra's requirements.

    Both venvs are built in background threads from the start, so that pip overlaps with the package
    build of the ``pkg`` fixture; a skip or failure inside a build is re-raised in the test that asks.
    """

    def make(extra: str) -> Path:
        venv = tmp_path_factory.mktemp(f"venv-{extra}")
        flags = ["--without-pip"] if _pip_supports_python_flag() else []
        subprocess.run([sys.executable, "-m", "venv", *flags, str(venv)], check=True, env=_clean_env())
        python = venv / "bin" / "python"
        _install(python, _extra_requirements(effdl_wheel, extra))
        _install(python, ["--no-deps", str(effdl_wheel)])
        return python

    with ThreadPoolExecutor(len(EXTRAS)) as pool:
        futures = {extra: pool.submit(make, extra) for extra in EXTRAS}
        yield lambda extra: futures[extra].result()


@pytest.fixture(scope="session")
def pkg(lenet_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_runtime import build_runtime_package

    return build_runtime_package(lenet_ckpt, tmp_path_factory)


def _run_in_venv(python: Path, pkg: Path, tmp_path: Path, other: str) -> tuple[dict[str, Any], np.ndarray, Path]:
    x = np.random.default_rng(5).standard_normal((9, 1, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "check.py").write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    # -I: ignore PYTHONPATH and the user's site-packages; cwd is not the repository.
    p = _run([str(python), "-I", "check.py", str(pkg), "x.npy", str(out), other], cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    result = json.loads(p.stdout.strip().splitlines()[-1])
    result["stderr"] = p.stderr
    return result, x, out


def _check(result: dict[str, Any], x: np.ndarray, out: Path, python: Path, pkg: Path, backend: str) -> None:
    venv = python.parents[1]
    assert Path(result["effdl_file"]).resolve().is_relative_to(venv.resolve()), result["effdl_file"]
    assert REPO not in Path(result["effdl_file"]).resolve().parents
    # The device profiles ship as data-files; a --no-deps install puts them under <venv>/share.
    assert sorted(p.name for p in (venv / "share" / "effdl" / "devices").glob("*.yaml")), "devices data-files"
    assert result["auto"].startswith(f"{backend}-")
    assert f"loaded {result['auto']} ({backend}" in result["choice"]
    assert "effdl.runtime loaded" in result["stderr"]  # the INFO log line reaches the app's logging
    assert sorted(result["runs"]) == sorted(
        v["name"] for v in effdl.load(pkg).manifest["variants"] if v["backend"] == backend
    )
    for name in [*result["runs"], "auto"]:
        variant = result["auto"] if name == "auto" else name
        here = effdl.load(pkg, variant=variant).run(x)[0]
        for suffix in ("", "-batched", "-async") if name != "auto" else ("",):
            there = np.load(out / f"{name}{suffix}.npy")
            np.testing.assert_allclose(there, here, rtol=1e-4, atol=1e-4, err_msg=f"{name}{suffix}")


def test_runtime_extra_onnxruntime_only(minimal_venv: Callable[[str], Path], pkg: Path, tmp_path: Path) -> None:
    python = minimal_venv("runtime")
    result, x, out = _run_in_venv(python, pkg, tmp_path, other="openvino")
    _check(result, x, out, python, pkg, "onnxruntime")
    assert result["in_sys_modules"] == ["onnxruntime"]
    assert result["importable"] == ["onnxruntime"]
    assert "no runtime installed for backend='openvino'" in result["other"]
    assert "pip install openvino" in result["other"]


def test_runtime_extra_openvino_only(minimal_venv: Callable[[str], Path], pkg: Path, tmp_path: Path) -> None:
    python = minimal_venv("runtime-openvino")
    result, x, out = _run_in_venv(python, pkg, tmp_path, other="onnxruntime")
    _check(result, x, out, python, pkg, "openvino")
    assert result["in_sys_modules"] == ["openvino"]
    assert result["importable"] == ["openvino"]
    assert "no runtime installed for backend='onnxruntime'" in result["other"]
    assert "pip install onnxruntime" in result["other"]


def _doc_example() -> str:
    text = (REPO / "docs" / "runtime.md").read_text()
    marker = "<!-- example: classify.py"
    assert marker in text, "docs/runtime.md lost its example application"
    block = text.split(marker, 1)[1].split("```python\n", 1)[1]
    return block.split("\n```", 1)[0] + "\n"


def test_doc_example_runs_in_minimal_env(minimal_venv: Callable[[str], Path], pkg: Path, tmp_path: Path) -> None:
    from effdl.tasks import get_task

    split = get_task("digits").split("heldout")
    np.savez(tmp_path / "digits.npz", image=split.inputs["image"], label=split.targets)
    (tmp_path / "classify.py").write_text(_doc_example())
    python = minimal_venv("runtime")
    cmd = [str(python), "-I", "classify.py", str(pkg), "digits.npz"]
    p = _run(cmd, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "effdl.runtime: loaded onnxruntime-" in p.stderr
    assert "top-1 accuracy" in p.stdout and "p50" in p.stdout
    assert "refused as expected: input 'image': dtype float64 given, float32 expected" in p.stdout
    p = _run([*cmd, "--threads", "0"], cwd=tmp_path, timeout=300)
    assert p.returncode == 2 and "error: threads must be a positive integer" in p.stderr, p.stdout + p.stderr
    p = _run([*cmd, "--backend", "openvino"], cwd=tmp_path, timeout=300)
    assert p.returncode == 3 and "hint: install one: openvino: pip install openvino" in p.stderr, p.stdout + p.stderr
