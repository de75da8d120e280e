"""The zoo MoE layer exported with ONNX Runtime's com.microsoft.MoE operator vs effdl's sparse dispatch.

Builds the bench/moe.py model configuration (8 experts, top-2; seed 0, untrained: latency does not depend on
training), exports it with ``dispatch="sparse"`` and ``dispatch="ort_moe"`` (TorchScript exporter), checks
each ONNX file against its torch forward on 256 held-out sequences on ONNX Runtime, and times both at batch 1
on ONNX Runtime, each alone in a fresh process (effdl.benchmark.worker).

    python bench/moe_ort_op.py --out runs/bench-moe-ort-op
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-moe-ort-op"))
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()

    import numpy as np
    import onnxruntime as ort
    import torch
    from moe import OVERRIDES

    from effdl.benchmark.worker import run_isolated
    from effdl.export import export_onnx, torch_outputs
    from effdl.recipe import ExportConfig
    from effdl.tasks import get_task
    from effdl.zoo import get_model_entry

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    task = get_task("seq_majority", n_train=64)
    held = task.split("heldout").take(256)
    torch.manual_seed(0)
    model = get_model_entry("moe_transformer").build(**OVERRIDES).eval()
    npz = out / "inputs-b1.npz"
    np.savez(npz, tokens=held.inputs["tokens"][:64])
    rows = {}
    for dispatch in ("sparse", "ort_moe"):
        for layer in model.moe_layers():
            layer.dispatch = dispatch
        path = export_onnx(model, task, out / f"{dispatch}.onnx", ExportConfig(exporter="torchscript"))
        ref = torch_outputs(model, task, held.inputs)[0]
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        tokens = held.inputs["tokens"]
        got = np.concatenate([sess.run(None, {"tokens": tokens[i : i + 64]})[0] for i in range(0, 256, 64)])
        spec = {"kind": "onnx", "label": dispatch, "path": str(path), "warmup": 50, "queries": args.queries,
                "min_duration_s": 0.0, "threads": None, "inputs_npz": str(npz), "input_names": ["tokens"],
                "batch": 1, "device": None}  # fmt: skip
        res = run_isolated(spec, out)
        rows[dispatch] = {"max_abs_error_vs_torch": float(np.abs(got - ref).max()), "p50_ms": res["latency_ms"]["p50"]}
        print(dispatch, rows[dispatch], flush=True)
    result = {"rows": rows, "onnxruntime": ort.__version__, "load_average": os.getloadavg()}
    (out / "moe_ort_op.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
