"""How much time effdl's benchmark harness adds per query over calling the backend directly.

On an identity ONNX model (the backend call is as short as it gets, so the harness's share is as large as it
gets), in one process, interleaved in rounds so that machine noise hits both sides alike:

* direct: ``session.run(None, feed)`` in a ``perf_counter`` loop on an ONNX Runtime session;
* harness: the worker's own ``infer`` for an ONNX file (``effdl.benchmark.worker._onnx_fn``) driven by
  :func:`effdl.benchmark.scenarios.run_scenario` (single-stream, LoadGen and the built-in driver), its
  per-query latencies as the report would show them.

Reported per driver: the median and mean of the reported latency minus the direct call's, and the wall time per
query (which also holds the load generator's scheduling between queries, not part of any reported latency),
and for offline the wall time per sample (offline throughput is samples / wall time, so there it counts).
Exit 1 if the reported-latency overhead (median) or the offline per-sample overhead exceeds the limit.

    python bench/harness_overhead.py [--rounds 7] [--queries 3000] [--limit-us 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from effdl.benchmark import scenarios  # noqa: E402
from effdl.benchmark.worker import _onnx_fn  # noqa: E402


def identity_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--queries", type=int, default=3000, help="queries per side per round")
    ap.add_argument("--limit-us", type=float, default=30.0)
    args = ap.parse_args()

    import onnxruntime as ort

    model = identity_model(Path(tempfile.mkdtemp()) / "identity.onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    spec = {"path": str(model), "input_names": ["x"], "threads": 1}
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((1, 16)).astype(np.float32)} for _ in range(64)]
    infer, _ = _onnx_fn(spec, feeds[0])
    drivers = ["builtin"] + (["loadgen"] if scenarios.loadgen_available()[0] else [])
    clock = time.perf_counter

    def direct(n: int) -> tuple[list[float], float]:
        lat = []
        t_start = clock()
        for i in range(n):
            f = feeds[i % len(feeds)]
            t0 = clock()
            sess.run(None, f)
            lat.append(clock() - t0)
        return lat, (clock() - t_start) / n

    for _ in range(500):  # warm both paths
        sess.run(None, feeds[0])
        infer(feeds[0])
    rows: dict[str, dict[str, list[float]]] = {d: {"p50": [], "mean": [], "wall": [], "off": []} for d in drivers}
    base: dict[str, list[float]] = {"p50": [], "mean": [], "wall": [], "off": []}
    for _ in range(args.rounds):
        for d in drivers:
            lat, wall = direct(args.queries)
            base["p50"].append(float(np.median(lat)))
            base["mean"].append(float(np.mean(lat)))
            base["wall"].append(wall)
            base["off"].append(wall)  # direct offline = the same back-to-back loop
            s = scenarios.settings_for("single-stream", min_queries=args.queries, duration_s=0.0, warmup=0)
            r = scenarios.run_scenario(s, infer, feeds, driver=d, expected_latency_s=float(np.median(lat)))
            rows[d]["p50"].append(float(np.median(r.latencies_s)) - base["p50"][-1])
            rows[d]["mean"].append(float(np.mean(r.latencies_s)) - base["mean"][-1])
            rows[d]["wall"].append(r.duration_s / r.queries - wall)
            s = scenarios.settings_for("offline", min_queries=args.queries, duration_s=0.0, warmup=0)
            r = scenarios.run_scenario(s, infer, feeds, driver=d, expected_latency_s=float(np.median(lat)))
            rows[d]["off"].append(r.duration_s / r.samples - wall)

    us = 1e6
    print(f"identity ONNX model, ONNX Runtime 1 thread, {args.rounds} interleaved rounds x {args.queries} queries")
    print(f"host: {os.uname().nodename}, {os.cpu_count()} CPUs; medians over rounds, microseconds per query")
    print(f"direct session.run: p50 {np.median(base['p50']) * us:.2f}  mean {np.median(base['mean']) * us:.2f}  "
          f"wall/query {np.median(base['wall']) * us:.2f}")  # fmt: skip
    head = f"{'driver':<10}{'+p50 (reported)':>18}{'+mean (reported)':>18}{'+wall/query':>14}{'+offline/sample':>17}"
    print(head)
    print("-" * len(head))
    failed = False
    for d in drivers:
        p50, mean = np.median(rows[d]["p50"]) * us, np.median(rows[d]["mean"]) * us
        wall, off = np.median(rows[d]["wall"]) * us, np.median(rows[d]["off"]) * us
        print(f"{d:<10}{p50:>18.2f}{mean:>18.2f}{wall:>14.2f}{off:>17.2f}")
        failed |= p50 > args.limit_us or off > args.limit_us
    print(
        f"limit: {args.limit_us:g} us on the reported p50 and on the offline wall time per sample; +wall/query "
        "(single-stream) also holds the load generator's scheduling between queries, which no reported latency "
        "or single-stream throughput (items / mean latency) contains"
    )
    print("RESULT:", "FAIL" if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
