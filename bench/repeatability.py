"""Two back-to-back `effdl bench` runs of the same model must agree on p50 within 10%.

The model is a small ONNX MLP (4 MatMul + Relu layers, 512 wide); each run is the full harness: seeded inputs,
a fresh worker process, MLPerf LoadGen single-stream (or the built-in driver with ``--driver builtin``).
Prints both runs (p50, its 95% CI, p90, CV, queries) and the relative difference; exit 1 when it exceeds the
limit.

    python bench/repeatability.py [--duration 5] [--threads 1] [--limit 0.10] [--driver auto]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from effdl.benchmark import harness  # noqa: E402
from effdl.benchmark.scenarios import settings_for  # noqa: E402


def mlp_model(path: Path, width: int = 512, layers: int = 4) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]), helper.make_node("Relu", [f"h{i}"], [f"a{i}"])]
        x = f"a{i}"
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", width])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=float, default=0.10, help="allowed |p50 a - p50 b| / min(p50)")
    ap.add_argument("--driver", default="auto")
    args = ap.parse_args()

    model = mlp_model(Path(tempfile.mkdtemp()) / "mlp512x4.onnx")
    target = harness.resolve_target(model)
    runs = []
    for _ in range(2):
        s = settings_for("single-stream", duration_s=args.duration, min_queries=1024, warmup=100)
        report = harness.run_bench(target, s, threads=args.threads, driver=args.driver)
        runs.append(report["variants"][0]["benchmark"])
    print(f"model: 4 x MatMul+Relu 512 wide (ONNX Runtime, {args.threads} thread), single-stream, "
          f"{args.duration:g} s per run, each in a fresh process")  # fmt: skip
    print(f"{'run':<5}{'driver':<16}{'queries':>9}{'p50 ms':>10}{'p50 95% CI':>22}{'p90 ms':>10}{'CV':>7}")
    for i, b in enumerate(runs, 1):
        lat = b["latency_ms"]
        lo, hi = lat["p50_ci95"]
        print(f"{i:<5}{b['driver']['name']:<16}{b['queries']:>9}{lat['p50']:>10.4f}{f'[{lo:.4f}, {hi:.4f}]':>22}"
              f"{lat['p90']:>10.4f}{b['cv']:>7.2f}")  # fmt: skip
    a, b = runs[0]["latency_ms"]["p50"], runs[1]["latency_ms"]["p50"]
    diff = abs(a - b) / min(a, b)
    print(f"p50 difference: {100 * diff:.2f}% (limit {100 * args.limit:g}%)")
    print("RESULT:", "PASS" if diff <= args.limit else "FAIL")
    return 0 if diff <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
