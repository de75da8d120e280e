"""2:4 semi-structured sparse linear layers vs dense on an NVIDIA GPU: where the time goes (docs/gpu.md).

``bench/gpu.py`` measured torch's ``to_sparse_semi_structured`` (cuSPARSELt) slower than dense FP16 on an H100
whatever the batch: about 0.6 ms per sparse linear. This separates the GPU's work from the host's: for BERT-base
linear shapes at several token counts it times, in FP16, each of

- ``dense``: ``F.linear(x, w)`` with the 2:4-masked weight stored dense;
- ``sparse``: the same weight as ``to_sparse_semi_structured`` (cuSPARSELt where torch has it);
- ``sparse-cutlass``: the same with torch's CUTLASS kernels forced (refused on GPUs they do not support);
- ``cslt-searched``: cuSPARSELt called directly (``torch._cslt_sparse_mm``) with the algorithm that
  ``torch._cslt_sparse_mm_search`` picked for the shape (torch's tensor subclass uses the default one);

three ways: ``gpu`` (CUDA events around a burst of calls: GPU time per call when the host keeps up), ``host``
(``perf_counter`` around the same burst without synchronising inside it: what launching a call costs the
host), and ``graph`` (the call captured once in a CUDA graph and replayed: no per-call host work). The
sparse and dense outputs are compared (max abs error). Writes JSON (``--out``) and prints a table.

    python bench/gpu_sparse24.py --out runs/gpu-sparse24.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

SHAPES = [(768, 3072), (3072, 768), (4096, 4096)]  # (in, out): BERT-base FFN in/out, a square LLM-sized one
TOKENS = [128, 2048, 16384]


def _events(fn: Any, iters: int) -> float:
    """GPU milliseconds per call: CUDA events around ``iters`` back-to-back calls."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def _host(fn: Any, iters: int) -> float:
    """Host milliseconds per call (launch cost): perf_counter around calls that do not synchronise."""
    import torch

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    host = (time.perf_counter() - t0) * 1e3 / iters
    torch.cuda.synchronize()
    return host


def _graphed(fn: Any) -> Any:
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/gpu-sparse24.json"))
    ap.add_argument("--iters", type=int, default=200)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    if not torch.cuda.is_available():
        print("bench/gpu_sparse24.py needs an NVIDIA GPU and a CUDA build of torch; none here.", file=sys.stderr)
        return 2
    env: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    try:
        env["cusparselt"] = torch.backends.cusparselt.version()
    except Exception as e:  # a torch without cuSPARSELt
        env["cusparselt"] = f"unavailable: {e}"
    rows: list[dict[str, Any]] = []
    torch.manual_seed(0)
    for k, n in SHAPES:
        w = torch.randn(n, k, device="cuda", dtype=torch.float16)
        groups = w.reshape(-1, 4)
        keep = groups.abs().topk(2, dim=1).indices
        w = (groups * torch.zeros_like(groups).scatter_(1, keep, 1.0)).reshape(n, k)
        for tokens in TOKENS:
            x = torch.randn(tokens, k, device="cuda", dtype=torch.float16)
            ref = F.linear(x, w)
            for kind in ("dense", "sparse", "sparse-cutlass", "cslt-searched"):
                row: dict[str, Any] = {"in": k, "out": n, "tokens": tokens, "kind": kind}
                try:
                    out = torch.empty_like(ref)
                    if kind == "cslt-searched":  # cuSPARSELt directly: the best algorithm for this shape, found once
                        packed = torch._cslt_compress(w)
                        xt = x.t().contiguous()
                        alg = torch._cslt_sparse_mm_search(packed, xt)
                        row["alg_id"] = alg

                        def call(xt: Any = xt, packed: Any = packed, out: Any = out, alg: int = alg) -> None:
                            out.copy_(torch._cslt_sparse_mm(packed, xt, alg_id=alg).t())
                    else:
                        if kind == "dense":
                            weight = w
                        else:
                            SparseSemiStructuredTensor._FORCE_CUTLASS = kind == "sparse-cutlass"
                            weight = to_sparse_semi_structured(w)

                        def call(x: Any = x, weight: Any = weight, out: Any = out) -> None:
                            out.copy_(F.linear(x, weight))

                    call()
                    row["max_abs_error"] = float((out - ref).abs().max())
                    for _ in range(10):
                        call()
                    row["gpu_ms"] = _events(call, args.iters)
                    row["host_ms"] = _host(call, args.iters)
                    replay = _graphed(call)
                    row["graph_ms"] = _events(replay, args.iters)
                except Exception as e:  # a kernel family this GPU or build lacks: recorded, not fatal
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                finally:
                    SparseSemiStructuredTensor._FORCE_CUTLASS = False
                rows.append(row)
                print(json.dumps(row), flush=True)
    for row in rows:
        if row["kind"] != "dense" and "graph_ms" in row:
            dense = next(
                r
                for r in rows
                if r["kind"] == "dense" and (r["in"], r["out"], r["tokens"]) == (row["in"], row["out"], row["tokens"])
            )
            row["speedup_graph_vs_dense"] = dense["graph_ms"] / row["graph_ms"]
            row["speedup_gpu_vs_dense"] = dense["gpu_ms"] / row["gpu_ms"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**env, "iters": args.iters, "rows": rows}, indent=1))
    print(f"\n{env}")
    print(f"{'in x out':>12} {'tokens':>6} {'kind':>15} {'gpu ms':>8} {'host ms':>8} {'graph ms':>9} {'vs dense':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['in']:>5}x{r['out']:<6} {r['tokens']:>6} {r['kind']:>15}  {r['error']}")
            continue
        sp = f"{r['speedup_graph_vs_dense']:.2f}x" if "speedup_graph_vs_dense" in r else ""
        print(
            f"{r['in']:>5}x{r['out']:<6} {r['tokens']:>6} {r['kind']:>15} {r['gpu_ms']:8.4f} {r['host_ms']:8.4f} "
            f"{r['graph_ms']:9.4f} {sp:>9}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
