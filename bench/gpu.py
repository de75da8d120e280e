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

# model name -> (zoo overrides, input shape per sample (None: the task's own), description). GPU-sized: at the
# tasks' tiny shapes (32x32 images, 32 tokens) an H100 is idle between kernel launches and every variant
# measures launch overhead, so the bench feeds 64x64 images (the zoo's ResNet-18 keeps the CIFAR stem, so this
# is 2.2 GMACs per image, about ImageNet ResNet-18's 1.8) and 128-token sequences to a BERT-base-sized encoder.
MODELS: dict[str, tuple[dict[str, Any], tuple[int, ...] | None, str]] = {
    "resnet18": ({"width": 64}, (3, 64, 64), "ResNet-18 layout (CIFAR stem), widths 64-512, 3x64x64 input"),
    "bert_classifier": (
        {"dim": 768, "depth": 12, "heads": 12, "max_len": 128},
        (128,),
        "BERT-base-sized encoder (dim 768, 12 layers, 12 heads), 128 tokens",
    ),
}


def make_inputs(example: dict[str, Any], names: tuple[str, ...], shape: tuple[int, ...] | None, batch: int) -> list:
    """CUDA inputs of ``batch`` samples: the task's example repeated, or seeded random data of ``shape``."""
    import torch

    g = torch.Generator().manual_seed(0)
    out = []
    for n in names:
        x = torch.from_numpy(example[n])
        if shape is None:
            t = x.repeat(batch, *[1] * (x.ndim - 1))
        elif x.is_floating_point():
            t = torch.randn((batch, *shape), generator=g, dtype=x.dtype)
        else:  # token ids: stay inside the vocabulary the example uses
            t = torch.randint(0, int(x.max()) + 1, (batch, *shape), generator=g, dtype=x.dtype)
        out.append(t.cuda())
    return out


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


def _variants(batch: int, has_sparse: bool, image: bool = False) -> list[tuple[str, str, str, bool]]:
    """(label, precision, mode, cuda_graphs) for one batch size.

    Eager FP32 is the reference; eager FP16 is the dense twin of the (eager) 2:4 sparse variant, so the
    sparse speed-up is read against the same execution mode. CUDA graphs matter for small-batch latency,
    BF16 beside FP16 for throughput: each compile costs tens of seconds, so each is run where it matters.
    """
    out = [("eager-fp32", "fp32", "eager", False), ("eager-fp16", "fp16", "eager", False)]
    out.append(("compile-fp16", "fp16", "compile", False))
    if batch <= 8:
        out.append(("compile-fp16-cudagraphs", "fp16", "compile", True))
    else:
        out.append(("compile-bf16", "bf16", "compile", False))
        if image:  # cuDNN's and Triton's fastest FP16 convolutions want NHWC
            out.append(("compile-fp16-channels-last", "fp16", "compile-cl", False))
    if has_sparse:  # torch picks cuSPARSELt when present; CUTLASS's kernels are the other route
        out.append(("sparse24-fp16", "fp16", "sparse", False))
        out.append(("sparse24-fp16-cutlass", "fp16", "sparse-cutlass", False))
    return out


def environment() -> dict[str, Any]:
    """What ran: GPU, driver, torch/CUDA/cuDNN/cuSPARSELt versions and the TF32 switches eager FP32 ran under."""
    import torch

    env: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0),
        "compute_capability": "{}.{}".format(*torch.cuda.get_device_capability(0)),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        # eager FP32 is what torch does by default: convolutions may use TF32 (cuDNN), matmuls do not
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }
    try:
        env["cusparselt"] = torch.backends.cusparselt.version()
    except Exception as e:  # older torch or no cuSPARSELt in this build
        env["cusparselt"] = f"unavailable: {e}"
    return env


def run(args: argparse.Namespace, write: Any = None) -> dict[str, Any]:
    """Measure every model x batch x variant; ``write(data)`` is called after each row (partial results)."""
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
    env = environment()
    profile = load_profile("nvidia-h100-sxm") if "H100" in env["gpu"] else None
    results: list[dict[str, Any]] = []
    data: dict[str, Any] = {
        **env,
        "method": "CUDA events around each synchronised query (single stream) after "
        f"{args.warmup} warm-up calls, {args.iters} timed; throughput = batch / p50; peak memory from torch's "
        f"allocator; energy from NVML's total-energy counter over >= {args.energy_seconds} s of back-to-back "
        "calls (whole-GPU energy, idle power included)",
        "results": results,
    }
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    for name in args.models:
        overrides, shape, desc = MODELS[name]
        entry = get_model_entry(name)
        task = get_task(entry.task, **entry.task_options)
        base = entry.build(**overrides).eval()
        macs = count_macs(
            base,
            {
                n: x[:1].cpu().numpy()
                for n, x in zip(
                    task.input_names,
                    make_inputs(task.example_inputs(1), tuple(task.input_names), shape, 1),
                    strict=True,
                )
            },
            task.input_names,
        )
        # 2:4 masks once per model (magnitude), shared by every batch size
        sparse_base = entry.build(**overrides).eval()
        sparse_base.load_state_dict(base.state_dict())
        masked = mask_24(sparse_base)
        for batch in args.batches:
            inputs = make_inputs(task.example_inputs(1), tuple(task.input_names), shape, batch)
            image = any(x.ndim == 4 for x in inputs)
            for label, prec, mode, graphs in _variants(batch, bool(masked), image):
                row: dict[str, Any] = {
                    "model": name,
                    "description": desc,
                    "batch": batch,
                    "variant": label,
                    "precision": prec,
                }
                module: Any = None
                try:
                    dtype = dtypes[prec]
                    if mode.startswith("sparse"):
                        from torch.sparse import SparseSemiStructuredTensor

                        SparseSemiStructuredTensor._FORCE_CUTLASS = mode == "sparse-cutlass"
                        module = entry.build(**overrides).eval()
                        module.load_state_dict(sparse_base.state_dict())
                        module = module.to(dev, dtype)
                        row["sparse_linear_layers"] = to_sparse(module)
                        row["sparse_kernels"] = "cutlass" if mode == "sparse-cutlass" else "default (cuSPARSELt)"
                    else:
                        module = entry.build(**overrides).eval()
                        module.load_state_dict(base.state_dict())
                        module = module.to(dev, dtype)
                        if mode == "compile-cl":
                            module = torch.compile(module.to(memory_format=torch.channels_last))
                        elif mode == "compile":
                            module = torch.compile(module, mode="reduce-overhead" if graphs else None)
                    xs = [x.to(dtype) if x.is_floating_point() else x for x in inputs]
                    if mode == "compile-cl":
                        xs = [x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x for x in xs]

                    def fn(module: Any = module, xs: list[Any] = xs) -> Any:
                        with torch.inference_mode():
                            return module(*xs)

                    before = gpu_snapshot()
                    t0 = time.perf_counter()
                    fn()  # compile / first call
                    torch.cuda.synchronize()
                    row["first_call_s"] = time.perf_counter() - t0
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
                    row.update(
                        latency_ms=stats["latency_ms"],
                        cv=stats["cv"],
                        noisy=stats["noisy"],
                        throughput_per_s=stats["throughput_per_s"],
                        peak_memory_bytes=peak,
                        energy=energy,
                        joules_per_inference=energy["energy_per_call_j"] / batch
                        if energy.get("energy_per_call_j") is not None
                        else None,
                        roofline_efficiency=eff,
                        gpu_before=before,
                        gpu_after=after,
                    )
                    per_inf = row["joules_per_inference"]
                    print(
                        f"{name:16s} b{batch:<3d} {label:24s} p50 {stats['latency_ms']['p50']:8.3f} ms  "
                        f"{stats['throughput_per_s']:10.1f}/s  peak {peak / 2**20:7.1f} MiB  "
                        f"{(per_inf or 0) * 1e3:8.3f} mJ/inf  first call {row['first_call_s']:.1f} s",
                        flush=True,
                    )
                except Exception as e:  # one failing variant must not lose the others' figures
                    row["error"] = f"{type(e).__name__}: {e}"[:2000]
                    print(f"{name:16s} b{batch:<3d} {label:24s} FAILED {row['error'][:300]}", flush=True)
                results.append(row)
                if write is not None:
                    write(data)
                del module
                torch.cuda.empty_cache()
        if not masked:
            results.append(
                {
                    "model": name,
                    "description": desc,
                    "batch": None,
                    "variant": "sparse24-fp16",
                    "precision": "fp16",
                    "skipped": "no nn.Linear with both dimensions multiples of 64: torch's semi-structured "
                    "sparsity covers Linear layers only (this model's compute is in convolutions; TensorRT's "
                    "sparse-weights flag covers 2:4 convolutions)",
                }
            )
    return data


def markdown(data: dict[str, Any]) -> str:
    """The report as Markdown: one table of measured rows, the 3x target check, failures and skips."""
    lines = [
        f"# GPU benchmark on {data['gpu']} (torch {data['torch']}, CUDA {data['cuda']})",
        "",
        data["method"] + ".",
        f"Eager FP32 ran with torch's defaults: TF32 for cuDNN convolutions {data['tf32_cudnn']}, "
        f"for matmuls {data['tf32_matmul']}. cuSPARSELt: {data.get('cusparselt')}.",
        "",
        "| model | batch | variant | p50 ms | p99 ms | throughput/s | vs eager FP32 | peak MiB | mJ/inference "
        "| SM MHz after | first call s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ok = [r for r in data["results"] if "latency_ms" in r]
    eager = {(r["model"], r["batch"]): r["throughput_per_s"] for r in ok if r["variant"] == "eager-fp32"}
    for r in ok:
        ref = eager.get((r["model"], r["batch"]))
        ratio = f"{r['throughput_per_s'] / ref:.2f}x" if ref else "-"
        jpi = r["joules_per_inference"]
        sm = ((r.get("gpu_after") or {}).get("clocks_mhz") or {}).get("sm")
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['variant']} | {r['latency_ms']['p50']:.3f} | "
            f"{r['latency_ms']['p99']:.3f} | {r['throughput_per_s']:.1f} | {ratio} | "
            f"{r['peak_memory_bytes'] / 2**20:.1f} | {'-' if jpi is None else f'{jpi * 1e3:.3f}'} | "
            f"{sm if sm is not None else '-'} | {r['first_call_s']:.1f} |"
        )
    lines += ["", "## Target: compiled FP16 or BF16 >= 3x eager FP32 throughput at batch 64", ""]
    for model in dict.fromkeys(r["model"] for r in ok):
        ref = eager.get((model, 64))
        best = max(
            (r for r in ok if r["model"] == model and r["batch"] == 64 and r["variant"].startswith("compile")),
            key=lambda r: r["throughput_per_s"],
            default=None,
        )
        if ref and best:
            x = best["throughput_per_s"] / ref
            verdict = "met" if x >= 3.0 else "NOT met"
            lines.append(f"- {model}: {best['variant']} {x:.2f}x eager FP32 ({verdict})")
        else:
            lines.append(f"- {model}: not measured at batch 64")
    bad = [r for r in data["results"] if "error" in r or "skipped" in r]
    if bad:
        lines += ["", "## Not measured", ""]
        for r in bad:
            why = r.get("error") or r.get("skipped")
            lines.append(f"- {r['model']} batch {r['batch']} {r['variant']}: {why}")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/gpu"))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--energy-seconds", type=float, default=2.0)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    def write(data: dict[str, Any]) -> None:
        (args.out / "gpu.json").write_text(json.dumps(data, indent=2, default=str))
        (args.out / "gpu.md").write_text(markdown(data))

    data = run(args, write)
    write(data)
    print(f"wrote {args.out / 'gpu.json'} and {args.out / 'gpu.md'}")


if __name__ == "__main__":
    main()
