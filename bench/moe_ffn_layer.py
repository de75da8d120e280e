"""One MiniLM-sized FFN layer at 128 tokens, dense vs experts, FP32 and ORT dynamic INT8 (docs/moe.md).

Why MoEfied INT8 is not faster than dense INT8 on ONNX Runtime with two threads: this times one FFN layer
(384 -> 1536 -> 384, GELU) three ways, each exported with the TorchScript exporter and quantized with ORT's
``quantize_dynamic`` (MatMul/Gemm, INT8 weights):

- ``dense``: the FFN on all 128 tokens;
- ``loop``: 8 experts of 192 neurons, each on its own ``--capacity`` gathered tokens (one MatMul pair per
  expert, as effdl's gather dispatch runs them);
- ``batched``: the same experts as one batched MatMul over ``[8, capacity, 384]`` (Switch-style capacity:
  every expert padded to the same token count);
- ``loop-nbits4`` / ``loop-nbits8``: the loop's experts as ORT ``MatMulNBits`` (``--nbits``);
- ``moefied-gather`` / ``moefied-split``: the dense FFN MoEfied by effdl (``moefy_mlp``: 8 experts of 192
  neurons, top-2) with an MLP router (384 -> 128 -> 8, random: about even routing), routing included, in
  the ``gather`` and ``split`` dispatches (expert Gemms rewritten to MatMul before INT8, as the bench does);
- ``moefied-split-routing``: ``moefied-split`` with every expert an identity: what the router, top-k and
  dispatch cost on their own (its INT8 row quantizes the router only).

Each session times 100 calls per round (median), rounds interleaved, best round shown, at 1 and 2
intra-op threads. Only the ``moefied-*`` rows include the routing (router, top-k, dispatch).

    python bench/moe_ffn_layer.py --capacity 32 [--nbits]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

D, H, E, T = 384, 1536, 8, 128


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--capacity", type=int, default=32, help="tokens per expert (top-2 of 8 on 128 tokens: 32 on average)"
    )
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--nbits", action="store_true", help="also time MatMulNBits experts (4 and 8 bits)")
    args = ap.parse_args()

    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    from torch import nn
    from torch.nn.functional import gelu

    from effdl.backends.onnxruntime import cpu_session
    from effdl.compress.moe_moefy_nn import MLPRouter, moefy_mlp
    from effdl.compress.moe_onnx import gemm_experts_to_matmul

    class Dense(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(D, H), nn.GELU(), nn.Linear(H, D)

        def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return self.fc2(self.act(self.fc1(x)))  # idx unused: the same inputs as the expert variants

    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.ModuleList(nn.Linear(D, H // E) for _ in range(E))
            self.fc2 = nn.ModuleList(nn.Linear(H // E, D) for _ in range(E))

        def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.fc2[e](gelu(self.fc1[e](x[idx[e]]))) for e in range(E)])

    class Batched(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w1 = nn.Parameter(torch.randn(E, D, H // E) * 0.05)
            self.b1 = nn.Parameter(torch.zeros(E, 1, H // E))
            self.w2 = nn.Parameter(torch.randn(E, H // E, D) * 0.05)
            self.b2 = nn.Parameter(torch.zeros(E, 1, D))

        def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return torch.matmul(gelu(torch.matmul(x[idx], self.w1) + self.b1), self.w2) + self.b2

    torch.manual_seed(0)
    x, idx = torch.randn(T, D), torch.randint(0, T, (E, args.capacity))
    feeds = {"x": x.numpy(), "idx": idx.numpy()}
    work = Path(tempfile.mkdtemp(prefix="effdl-moe-ffn-"))
    paths: dict[str, Path] = {}
    dense = Dense().eval()
    modules: dict[str, nn.Module] = {"dense": dense, "loop": Loop(), "batched": Batched()}
    for dispatch in ("gather", "split"):
        moe = moefy_mlp(dense, E, 2)
        moe.router, moe.dispatch = MLPRouter(D, 128, E), dispatch
        modules[f"moefied-{dispatch}"] = moe
    routing_only = copy.deepcopy(modules["moefied-split"])  # router, top-k and dispatch; experts pass rows on
    for expert in routing_only.experts:
        expert.fc1, expert.act, expert.fc2 = nn.Identity(), nn.Identity(), nn.Identity()
    modules["moefied-split-routing"] = routing_only
    for name, module in modules.items():
        fp32, int8 = work / f"{name}.onnx", work / f"{name}-int8.onnx"
        args_in, names = ((x,), ["x"]) if name.startswith("moefied") else ((x, idx), ["x", "idx"])
        torch.onnx.export(module.eval(), args_in, str(fp32), input_names=names, dynamo=False, opset_version=17)
        proto = onnx.load(str(fp32))
        gemm_experts_to_matmul(proto)
        onnx.save(proto, str(fp32))
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        paths[name], paths[f"{name}-int8"] = fp32, int8
    if args.nbits:
        for bits in (4, 8):
            q = MatMulNBitsQuantizer(onnx.load(str(paths["loop"])), bits=bits, block_size=32, is_symmetric=True)
            q.process()
            paths[f"loop-nbits{bits}"] = work / f"loop-nbits{bits}.onnx"
            q.model.save_model_to_file(str(paths[f"loop-nbits{bits}"]))
    for threads in (1, 2):
        sessions = {}
        for name, path in paths.items():
            sessions[name] = cpu_session(path, threads)
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, sess in sessions.items():
                f = {i.name: feeds[i.name] for i in sess.get_inputs()}
                for _ in range(10):
                    sess.run(None, f)
                times = []
                for _ in range(100):
                    t = time.perf_counter()
                    sess.run(None, f)
                    times.append(time.perf_counter() - t)
                best[name] = min(best.get(name, float("inf")), statistics.median(times) * 1e6)
        print(
            f"{threads} thread(s), capacity {args.capacity}: " + ", ".join(f"{k} {v:.0f} us" for k, v in best.items())
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
