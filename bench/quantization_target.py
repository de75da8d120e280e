"""all-MiniLM-L6-v2 target check (issue #4): interleaved timing of torch eager FP32 and the best INT8 variants.

    .venv/bin/python bench/quantization_target.py [--rounds 3] [--queries 20] [--threads 1]

On a loaded, shared machine the load drifts during a long benchmark, so a speedup computed from two timings
minutes apart says as much about the drift as about the model. This script builds the candidates once
(NNCF static INT8 with the Transformer placement, and SmoothQuant INT8), then times torch eager FP32 and each
candidate (OpenVINO, FP32 and BF16 inference precision) in fresh processes, round-robin, ``--rounds`` times,
and reports the median of the per-round speedups (each round's variants measured back to back) beside
cosine vs FP32 on held-out sentences. The result is stored as ``target_check`` in the MiniLM entry of
docs/quantization.json and rendered into docs/quantization.md by bench/quantization.py's writer.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import quantization as bq  # noqa: E402

from effdl.compress import STAGES  # noqa: E402
from effdl.compress.base import ModelArtifact, StageContext  # noqa: E402
from effdl.compress.tuning import AutoQuantConfig  # noqa: E402

CANDIDATES = [
    ("static (NNCF)", "quantize", {"engine": "nncf", "model_type": "transformer", "samples": 32}),
    ("SmoothQuant (NNCF)", "quantize-smoothquant", {"samples": 32}),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "docs" / "quantization.md"))
    args = ap.parse_args()
    from effdl.export import export_onnx, torch_outputs

    work = Path(tempfile.mkdtemp(prefix="effdl-minilm-target-"))
    start_load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    try:
        module, task, ckpt, _ = bq.load("minilm", work)
        held = task.split("heldout").take(args.samples)
        inputs = {k: held.inputs[k] for k in task.input_names}
        ref = torch_outputs(module, task, inputs)
        fp32 = export_onnx(module, task, work / "minilm-fp32.onnx")
        npz = work / "one.npz"
        np.savez(npz, **{k: v[:1] for k, v in inputs.items()})
        ctx = StageContext(task, work, progress=None, teacher=module)
        variants: list[tuple[str, Path, str]] = []
        for label, stage, cfg in CANDIDATES:
            cls = STAGES.get(stage)
            art, _ = cls(cls.Config(**cfg)).apply(ModelArtifact("fp32", "onnx", path=fp32), ctx, bq._slug(label))
            variants += [(f"{label}, OpenVINO FP32", art.path, "f32"), (f"{label}, OpenVINO BF16", art.path, "bf16")]
        variants.append(("FP32 model, OpenVINO BF16", fp32, "bf16"))
        tcfg = AutoQuantConfig(queries=args.queries, warmup=5, threads=args.threads)
        cosine = {}
        for label, path, prec in variants:
            outs = bq.run_outputs(path, "openvino", inputs, precision=prec)
            cosine[label] = task.agreement(ref, outs)
        rounds: list[dict[str, float]] = []
        for _ in range(args.rounds):
            r = {"torch eager FP32": bq.time_torch(ckpt, task, npz, work, args.queries, args.threads)}
            for label, path, prec in variants:
                if prec == "bf16":
                    r[label] = bq._time_ov_bf16(path, npz, work, tcfg)
                else:
                    r[label] = bq.time_model(path, "openvino", npz, work, tcfg)
            rounds.append(r)
            print({k: round(v, 1) for k, v in r.items()}, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for label, _, _ in variants:
        speedups = [r["torch eager FP32"] / r[label] for r in rounds]
        rows.append({"variant": label, "agreement": cosine[label], "p50_ms": [r[label] for r in rounds],
                     "speedups": speedups, "median_speedup": float(np.median(speedups))})  # fmt: skip
    check = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load": start_load, "load_end": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
        "rounds": args.rounds, "queries": args.queries, "threads": args.threads, "samples": len(held),
        "torch_p50_ms": [r["torch eager FP32"] for r in rounds], "rows": rows,
        "command": "python bench/quantization_target.py " + " ".join(sys.argv[1:]),
    }  # fmt: skip
    out = Path(args.out)
    results = bq.previous_results(out.with_suffix(".json"))
    if "minilm" not in results:
        results["minilm"] = {"model": "minilm", "error": "run bench/quantization.py --models minilm first"}
    results["minilm"]["target_check"] = check
    bq.write(results, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
