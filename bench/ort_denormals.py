"""ONNX Runtime with and without float32 denormals flushed to zero (effdl's ``flush_denormals``, default on).

A masked attention Softmax turns every masked score (padding keys at -1e4 or the dtype's minimum) into a
denormal, and each denormal costs the CPU a microcode assist. This times, each setting in a fresh process
(ONNX Runtime sets the calling thread's FTZ/DAZ mode once per process, from its first session):

- ONNX ``Softmax`` over ``[1, 12, 128, 128]`` (BERT-base-like heads at 128 tokens), random scores and the
  same scores with 108 of 128 keys masked at -1e4 (a 20-token sentence padded to 128);
- optionally whole models (``--model A.onnx B.onnx --inputs X.npz``: the first rows of the npz, batch 1),
  through effdl's ONNX Runtime backend with ``flush_denormals`` true and false (effdl's benchmark worker).

Median of 200 calls after 20 warm-up calls, at 1 and 2 intra-op threads; settings interleaved over
``--rounds`` rounds, lowest median kept. Prints a Markdown table (docs/runtime.md).

    python bench/ort_denormals.py [--model R/dense-int8.onnx --inputs R/inputs-b1.npz]   (R: runs/bench-moe-minilm)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def softmax_child(threads: int, flush: bool, masked: bool) -> float:
    """Median microseconds of one ORT Softmax call (this process's first ORT session)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from effdl.backends.onnxruntime import session_options

    shape = [1, 12, 128, 128]
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
        "softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(
        model.SerializeToString(), session_options(threads, flush_denormals=flush), providers=["CPUExecutionProvider"]
    )
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if masked:
        x[..., 20:] = -1e4  # the additive mask of a 20-token sentence padded to 128
    for _ in range(20):
        sess.run(None, {"x": x})
    times = []
    for _ in range(200):
        t = time.perf_counter()
        sess.run(None, {"x": x})
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, nargs="*", default=[], help="ONNX models to time whole")
    ap.add_argument("--inputs", type=Path, help="npz of the models' inputs (batch-1 rows are fed in turn)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        threads, flush, masked = json.loads(args.child)
        print(json.dumps(softmax_child(threads, flush, masked)))
        return 0
    if args.model and not args.inputs:
        raise SystemExit("--model needs --inputs (an npz with the models' input arrays)")

    import numpy as np

    from effdl.benchmark.worker import run_isolated

    names = list(np.load(args.inputs).files) if args.inputs else []

    best: dict[tuple[str, int, bool], float] = {}
    work = Path(tempfile.mkdtemp(prefix="effdl-denormals-"))
    for _ in range(args.rounds):
        for threads in (1, 2):
            for flush in (True, False):
                for masked in (False, True):
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", json.dumps([threads, flush, masked])],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    key = ("Softmax [1,12,128,128], " + ("108/128 keys masked" if masked else "random"), threads, flush)
                    best[key] = min(best.get(key, float("inf")), json.loads(out.stdout.strip().splitlines()[-1]))
                for model in args.model:
                    spec = {
                        "kind": "onnx",
                        "backend": "onnxruntime",
                        "options": {"flush_denormals": flush},
                        "label": f"{model.stem}-t{threads}-{flush}",
                        "path": str(model),
                        "warmup": 20,
                        "queries": 200,
                        "min_duration_s": 0.0,
                        "threads": threads,
                        "inputs_npz": str(args.inputs),
                        "input_names": names,
                        "batch": 1,
                        "device": None,
                    }
                    res = run_isolated(spec, work)
                    key = (model.name, threads, flush)
                    best[key] = min(best.get(key, float("inf")), res["latency_ms"]["p50"] * 1e3)
    lines = [
        "| what | threads | flushed (us) | kept (us) | speed-up |",
        "|---|---|---|---|---|",
    ]
    for what, threads in dict.fromkeys((k[0], k[1]) for k in best):
        on, off = best[(what, threads, True)], best[(what, threads, False)]
        lines.append(f"| {what} | {threads} | {on:.0f} | {off:.0f} | {off / on:.2f}x |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
