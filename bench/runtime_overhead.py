"""Per-call overhead of ``effdl.runtime.Session`` over a raw ONNX Runtime session (target: <= 20 us).

A one-op ONNX graph (Identity on a [batch, 16] float32 tensor, built with onnx.helper) is packaged in the
effdl package format and loaded with ``effdl.runtime.load``. Four ways of calling the same
``onnxruntime.InferenceSession`` are timed interleaved in one process (the order rotates every round, so
drift and noise hit all of them alike):

- ``raw``          ``ort_session.run(None, {"x": x})``  (the baseline: what an app would write by hand)
- ``Session.run``  ``session.run(x)``
- ``session(x)``   ``session(x)``
- ``run(dict)``    ``session.run({"x": x})``

Each round times ``--calls`` calls of each in a block (perf_counter_ns); the overhead of a way is the
median over rounds of (its per-call time - raw's per-call time in the same round). Prints a table and
exits 1 when an overhead exceeds ``--limit-us``.

    python bench/runtime_overhead.py [--rounds 300] [--calls 50] [--limit-us 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def make_package(root: Path, width: int = 16) -> Path:
    """Write a one-op (Identity) ONNX model and its manifest.json (effdl.package v1) into ``root``."""
    import json

    import onnx
    from onnx import TensorProto, helper

    from effdl.runtime.manifest import PACKAGE_FORMAT, PACKAGE_FORMAT_VERSION, file_entry

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    (root / "models").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(root / "models" / "fp32.onnx"))
    spec = {"dtype": "float32", "shape": [None, width]}
    manifest = {
        "format": PACKAGE_FORMAT,
        "format_version": PACKAGE_FORMAT_VERSION,
        "name": "identity",
        "inputs": [{"name": "x", **spec}],
        "outputs": [{"name": "y", **spec}],
        "portable_model": "models/fp32.onnx",
        "variants": [
            {
                "name": "onnxruntime-fp32",
                "backend": "onnxruntime",
                "model": "fp32",
                "precision": "fp32",
                "device": "cpu",
                "files": ["models/fp32.onnx"],
                "meta": {"format": "onnx"},
                "accepted": True,
                "benchmark": None,
            }
        ],
        "files": {"models/fp32.onnx": file_entry(root, "models/fp32.onnx")},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root


def measure(ways: dict[str, Callable[[], Any]], rounds: int, calls: int) -> dict[str, list[float]]:
    """Per-call microseconds of each way, one value per round; ways interleaved, order rotating."""
    names = list(ways)
    per_call: dict[str, list[float]] = {n: [] for n in names}
    clock = time.perf_counter_ns
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            f = ways[n]
            t0 = clock()
            for _ in range(calls):
                f()
            per_call[n].append((clock() - t0) / calls / 1e3)
    return per_call


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--calls", type=int, default=50, help="calls per timed block")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--limit-us", type=float, default=20.0)
    args = ap.parse_args(argv)

    import effdl.runtime

    with tempfile.TemporaryDirectory() as tmp:
        session = effdl.runtime.load(make_package(Path(tmp)), variant="onnxruntime-fp32", threads=1)
        raw = session.runner.session  # the very InferenceSession that Session.run calls
        x = np.random.default_rng(0).standard_normal((args.batch, 16)).astype(np.float32)
        ways: dict[str, Callable[[], Any]] = {
            "raw": lambda: raw.run(None, {"x": x}),
            "Session.run": lambda: session.run(x),
            "session(x)": lambda: session(x),
            "run(dict)": lambda: session.run({"x": x}),
        }
        for f in ways.values():  # same results, and warm-up
            np.testing.assert_array_equal(f()[0], x)
        measure(ways, rounds=20, calls=args.calls)
        per_call = measure(ways, rounds=args.rounds, calls=args.calls)

    base = per_call["raw"]
    print(
        f"effdl.runtime per-call overhead vs raw onnxruntime ({args.rounds} rounds x {args.calls} calls, "
        f"Identity on [{args.batch}, 16] float32, 1 thread)"
    )
    print(f"{'way':<14}{'median us/call':>16}{'p10':>10}{'p90':>10}{'overhead us (median of paired diffs)':>40}")
    worst = 0.0
    for n, vals in per_call.items():
        q = statistics.quantiles(vals, n=10)
        diff = statistics.median(v - b for v, b in zip(vals, base, strict=True)) if n != "raw" else 0.0
        worst = max(worst, diff)
        print(f"{n:<14}{statistics.median(vals):>16.2f}{q[0]:>10.2f}{q[-1]:>10.2f}{diff:>40.2f}")
    ok = worst <= args.limit_us
    print(f"worst overhead {worst:.2f} us, limit {args.limit_us:.0f} us: {'ok' if ok else 'EXCEEDED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
