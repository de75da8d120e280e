"""ONNX Runtime backend: float32 denormals flushed to zero by default (``flush_denormals``), as run info says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from effdl.backends.onnxruntime import OnnxRuntimeBackend
from effdl.errors import InputError

# Runs in a fresh interpreter: ONNX Runtime sets the calling thread's FTZ/DAZ mode once per process, from
# the first session made there, so pytest's own process (where other tests made sessions) cannot show it.
_CHILD = """
import json, sys
from pathlib import Path
import numpy as np
from effdl.backends.onnxruntime import OnnxRuntimeBackend, denormals_flushed
root, options = Path(sys.argv[1]), json.loads(sys.argv[2])
b = OnnxRuntimeBackend()
runner = b.load(root, b.compile(root / "quarter.onnx", root, "quarter", {}), threads=1, options=options)
y = runner.run({"x": np.full((1, 4), 1e-38, dtype=np.float32)})[0]
print(json.dumps({"y": float(y[0, 0]), "info": runner.info["denormals"], "flag": runner.info["flush_denormals"],
                  "thread_flushes": denormals_flushed()}))
"""


@pytest.fixture(scope="module")
def quarter_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``y = x * 0.25``: 1e-38 * 0.25 is a float32 denormal (below ~1.18e-38), or 0 when flushed."""
    root = tmp_path_factory.mktemp("ort")
    node = helper.make_node("Mul", ["x", "q"], ["y"])
    graph = helper.make_graph(
        [node],
        "quarter",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor("q", TensorProto.FLOAT, [], [0.25])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(root / "quarter.onnx"))
    return root


def _child(root: Path, options: dict[str, object]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root), json.dumps(options)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_denormals_are_flushed_by_default_and_kept_when_asked(quarter_onnx: Path) -> None:
    flushed = _child(quarter_onnx, {})
    assert flushed["y"] == 0.0 and flushed["flag"] is True and flushed["thread_flushes"] is True
    assert "flushed to zero (ORT's pool threads and the calling thread)" in str(flushed["info"])
    kept = _child(quarter_onnx, {"flush_denormals": False})
    assert kept["y"] == pytest.approx(2.5e-39, rel=1e-3) and kept["flag"] is False and kept["thread_flushes"] is False
    assert "kept" in str(kept["info"])


def test_flush_denormals_must_be_a_boolean(quarter_onnx: Path, tmp_path: Path) -> None:
    b = OnnxRuntimeBackend()
    compiled = b.compile(quarter_onnx / "quarter.onnx", tmp_path, "quarter", {})
    with pytest.raises(InputError, match="flush_denormals must be true or false, got 'yes'"):
        b.load(tmp_path, compiled, options={"flush_denormals": "yes"})
    runner = b.load(tmp_path, compiled)
    x = np.full((1, 4), 2.0, dtype=np.float32)
    np.testing.assert_array_equal(runner.run({"x": x})[0], x * 0.25)
