"""Per-call cost of how effdl's OpenVINO runner feeds inputs, against OpenVINO's usual Python calls.

A zoo model (default ``resnet8``, random weights: only time is measured) is exported to ONNX and compiled
for OpenVINO's CPU plugin (FP32 pinned, ``--threads`` threads). Timed interleaved in one process, the order
rotating every round, ``--calls`` calls per way per round, median over ``--rounds`` rounds of the per-call
time:

- ``compiled(feeds)``      ``CompiledModel.__call__`` (OpenVINO's one-liner; a new input tensor per call)
- ``infer(feeds)``         ``InferRequest.infer(feeds)`` on a kept request (what effdl did before)
- ``infer(shared)``        ``infer(feeds, share_inputs=True, share_outputs=True)``
- ``effdl runner``         ``OpenVinoRunner.run``: inputs copied into the request's own tensors, ``infer()``

Every way returns a copy of the outputs, as an application needs. Prints a table (and the ratio of each way
to the runner); exits 1 when the runner is slower than ``infer(feeds)``.

    python bench/openvino_call.py [--model resnet8] [--rounds 30] [--calls 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from runtime_overhead import measure  # noqa: E402  (the interleaved, rotating timing loop)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet8")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--static-shapes", action="store_true", help="compile for the batch-1 shape (the backend's static_shapes)"
    )
    args = ap.parse_args()

    import openvino as ov
    import torch

    from effdl.backends.openvino import OpenVinoBackend
    from effdl.export import export_onnx
    from effdl.tasks import get_task
    from effdl.zoo import get_model_entry

    entry = get_model_entry(args.model)
    task = get_task(entry.task, **entry.task_options)
    torch.manual_seed(0)
    module = entry.build().eval()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(module, task, Path(tmp) / "model.onnx")
        backend = OpenVinoBackend()
        opts = {"inference_precision": "fp32", "static_shapes": args.static_shapes}
        compiled = backend.compile(onnx_path, Path(tmp), "ov", opts)
        runner = backend.load(Path(tmp), compiled, threads=args.threads, options=opts)
        feeds = task.example_inputs(1)
        ref = runner.run(feeds)[0]
        cm = runner.compiled_model  # with static shapes: the model compiled for these feeds' shapes
        req = cm.create_infer_request()
        outs = range(len(cm.outputs))
        ways = {
            "compiled(feeds)": lambda: [v.copy() for v in cm(feeds).values()],
            "infer(feeds)": lambda: (req.infer(feeds), [req.get_output_tensor(i).data.copy() for i in outs]),
            "infer(shared)": lambda: [
                v.copy() for v in req.infer(feeds, share_inputs=True, share_outputs=True).values()
            ],
            "effdl runner": lambda: runner.run(feeds),
        }
        for name, way in ways.items():
            got = way()
            got = got[1][0] if isinstance(got, tuple) else got[0]
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=name)
        per_call = measure(ways, rounds=args.rounds, calls=args.calls)
    med = {k: statistics.median(v) for k, v in per_call.items()}
    print(
        f"{args.model}, OpenVINO {ov.get_version()} CPU, FP32, {args.threads} thread(s), batch 1, "
        f"{'static' if args.static_shapes else 'dynamic'} shapes: median over "
        f"{args.rounds} rounds of {args.calls} calls each"
    )
    print(f"{'way':18s} {'us/call':>9s} {'vs runner':>10s}")
    for k, v in med.items():
        print(f"{k:18s} {v:9.1f} {v / med['effdl runner']:9.2f}x")
    return 0 if med["effdl runner"] <= med["infer(feeds)"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
