"""GPU benchmark (issue 9): eager FP32 vs torch.compile FP16/BF16 vs 2:4 sparse FP16 on NVIDIA GPUs.

For the ResNet-18-layout and BERT-style zoo models at batch 1 and 64, side by side in one process run
(one model at a time on the GPU): CUDA-event latency percentiles (each query synchronised), throughput,
peak device memory (torch's allocator), joules per inference from NVML's total-energy counter (never
from power samples), GPU clocks/temperature before and after, and roofline efficiency against the H100
profile when the GPU is an H100.

    python bench/gpu.py --out runs/gpu            # writes gpu.json and gpu.md there

Needs torch with CUDA and nvidia-ml-py; exits 2 with a clear message on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# model name -> (zoo overrides for a GPU-sized instance, description)
MODELS: dict[str, tuple[dict[str, Any], str]] = {
    "resnet18": ({"width": 64}, "ResNet-18 layout, widths 64-512, 3x32x32 input"),
    "bert_classifier": (
        {"dim": 512, "depth": 6, "heads": 8},
        "BERT-style encoder, dim 512, 6 layers, the task's sequence length",
    ),
}


def mask_24(module: Any) -> list[str]:
    """Magnitude 2:4 masks on every Linear weight cuSPARSELt can take (both dims multiples of 64)."""
    import torch

    done = []
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Linear) and m.in_features % 64 == 0 and m.out_features % 64 == 0:
            w = m.weight.data
            groups = w.reshape(-1, 4)
            keep = groups.abs().topk(2, dim=1).indices
            mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, keep, True)
            m.weight.data = (groups * mask).reshape(w.shape)
            done.append(name)
    return done


def to_sparse(module: Any) -> int:
    import torch
    from torch.sparse import to_sparse_semi_structured

    n = 0
    for m in module.modules():
        if isinstance(m, torch.nn.Linear) and m.in_features % 64 == 0 and m.out_features % 64 == 0:
            m.weight = torch.nn.Parameter(to_sparse_semi_structured(m.weight.data), requires_grad=False)
            n += 1
    return n


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from effdl.benchmark.gpu import cuda_event_latencies, gpu_snapshot, measure_energy, peak_memory
    from effdl.benchmark.stats import summarize
    from effdl.devices import load_profile, peak_ops
    from effdl.tasks import get_task
    from effdl.zoo import get_model_entry
    from effdl.zoo.profile import count_macs

    if not torch.cuda.is_available():
        print("bench/gpu.py needs an NVIDIA GPU and a CUDA build of torch; none here.", file=sys.stderr)
        sys.exit(2)
    dev = torch.device("cuda")
    gpu = torch.cuda.get_device_name(0)
    profile = load_profile("nvidia-h100-sxm") if "H100" in gpu else None
    results: list[dict[str, Any]] = []
    for name in args.models:
        overrides, desc = MODELS[name]
        entry = get_model_entry(name)
        task = get_task(entry.task, **entry.task_options)
        base = entry.build(**overrides).eval()
        macs = count_macs(base, task.example_inputs(1), task.input_names)
        for batch in args.batches:
            example = task.example_inputs(1)
            inputs = [
                torch.from_numpy(example[n]).repeat(batch, *[1] * (example[n].ndim - 1)).to(dev)
                for n in task.input_names
            ]
            variants: list[tuple[str, str, Any]] = []
            eager = entry.build(**overrides).eval().to(dev)
            eager.load_state_dict(base.state_dict())
            variants.append(("eager-fp32", "fp32", eager))
            for prec, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
                m = entry.build(**overrides).eval()
                m.load_state_dict(base.state_dict())
                variants.append((f"compile-{prec}", prec, torch.compile(m.to(dev, dtype))))
            sp = entry.build(**overrides).eval()
            sp.load_state_dict(base.state_dict())
            masked = mask_24(sp)
            sp = sp.to(dev, torch.float16)
            n_sparse = to_sparse(sp) if masked else 0
            if n_sparse:
                variants.append(("sparse24-fp16", "fp16", sp))
            for label, prec, module in variants:
                dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[prec]
                xs = [x.to(dtype) if x.is_floating_point() else x for x in inputs]

                def fn(module: Any = module, xs: list[Any] = xs) -> Any:
                    with torch.inference_mode():
                        return module(*xs)

                before = gpu_snapshot()
                t0 = time.perf_counter()
                fn()  # compile / first call
                first_call_s = time.perf_counter() - t0
                lat = cuda_event_latencies(fn, iters=args.iters, warmup=args.warmup)
                _, peak = peak_memory(fn)
                energy = measure_energy(fn, min_duration_s=args.energy_seconds)
                after = gpu_snapshot()
                stats = summarize(lat, batch=batch)
                eff = None
                if profile is not None:
                    peak_ops_s = peak_ops(profile, prec, unit=None)
                    if peak_ops_s:
                        eff = 2.0 * macs * batch / (stats["latency_ms"]["p50"] / 1e3) / peak_ops_s
                per_inf = energy["energy_per_call_j"] / batch
                results.append(
                    {
                        "model": name,
                        "description": desc,
                        "batch": batch,
                        "variant": label,
                        "precision": prec,
                        "first_call_s": first_call_s,
                        "latency_ms": stats["latency_ms"],
                        "cv": stats["cv"],
                        "noisy": stats["noisy"],
                        "throughput_per_s": stats["throughput_per_s"],
                        "peak_memory_bytes": peak,
                        "energy": energy,
                        "joules_per_inference": per_inf,
                        "roofline_efficiency": eff,
                        "gpu_before": before,
                        "gpu_after": after,
                        "sparse_linear_layers": n_sparse if label.startswith("sparse") else None,
                    }
                )
                print(
                    f"{name:16s} b{batch:<3d} {label:14s} p50 {stats['latency_ms']['p50']:8.3f} ms  "
                    f"{stats['throughput_per_s']:10.1f}/s  peak {peak / 2**20:7.1f} MiB  "
                    f"{(per_inf or 0) * 1e3:8.3f} mJ/inf",
                    flush=True,
                )
            del variants
            torch.cuda.empty_cache()
    return {
        "gpu": gpu,
        "torch": torch.__version__,
        "method": "CUDA events around each synchronised query after "
        f"{args.warmup} warm-up calls, {args.iters} timed; energy from NVML total-energy counter over "
        f">= {args.energy_seconds} s of back-to-back calls",
        "results": results,
    }


def markdown(data: dict[str, Any]) -> str:
    lines = [
        f"# GPU benchmark on {data['gpu']} (torch {data['torch']})",
        "",
        data["method"],
        "",
        "| model | batch | variant | p50 ms | p99 ms | throughput/s | vs eager FP32 | peak MiB | mJ/inference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    eager = {(r["model"], r["batch"]): r["throughput_per_s"] for r in data["results"] if r["variant"] == "eager-fp32"}
    for r in data["results"]:
        ratio = r["throughput_per_s"] / eager[(r["model"], r["batch"])]
        jpi = r["joules_per_inference"]
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['variant']} | {r['latency_ms']['p50']:.3f} | "
            f"{r['latency_ms']['p99']:.3f} | {r['throughput_per_s']:.1f} | {ratio:.2f}x | "
            f"{r['peak_memory_bytes'] / 2**20:.1f} | {'-' if jpi is None else f'{jpi * 1e3:.3f}'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/gpu"))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--energy-seconds", type=float, default=3.0)
    args = p.parse_args()
    data = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(data, indent=2, default=str))
    (args.out / "gpu.md").write_text(markdown(data))
    print(f"wrote {args.out / 'gpu.json'} and {args.out / 'gpu.md'}")


if __name__ == "__main__":
    main()
