"""Per-expert precision for MoE ONNX models (stage ``moe-quantize``): experts quantized by how often the
router uses them, with the accuracy cost of each choice recorded.

- frequent experts: INT8 with dynamic activation quantization (ONNX Runtime ``quantize_dynamic``:
  DynamicQuantizeLinear + MatMulInteger, per-output-channel weight scales), or INT8 weight-only;
- rare experts: INT4 weight-only (ONNX Runtime's ``MatMulNBits``, symmetric blocks along the input axis).

Usage is counted on the task's calibration split by running the model with each expert's gathered input
as an extra output. Every scale comes from the weights (and, for dynamic INT8, from the activations at
run time), so experts that see no calibration token are quantized like any other; the stage checks
that every expert node was converted, so none stays FP32 silently.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from effdl.compress import register_stage
from effdl.compress.base import ModelArtifact, Stage, StageConfig, StageContext
from effdl.compress.moe_onnx import expert_initializer_bytes, gemm_experts_to_matmul
from effdl.errors import InputError

Precision = Literal["int8_dynamic", "int4_weight", "fp32"]


class MoEQuantConfig(StageConfig):
    """Options of the ``moe-quantize`` stage."""

    frequent: Precision = Field("int8_dynamic", description="Precision of frequently routed experts.")
    rare: Precision = Field("int4_weight", description="Precision of rarely routed experts.")
    rare_below: float = Field(
        0.25, ge=0, le=1, description="An expert is rare when it gets less than this fraction of a uniform share."
    )
    calibration_samples: int = Field(200, ge=1, description="Calibration samples for the usage counts.")
    block_size: int = Field(32, ge=16, description="INT4 block size along the input axis (power of 2).")
    evaluate: bool = Field(True, description="Record the held-out metric of each choice applied alone.")


def _session(proto: Any) -> Any:
    from effdl.backends.onnxruntime import cpu_session

    return cpu_session(proto.SerializeToString())


def expert_usage(proto: Any, matmuls: list[str], task: Any, samples: int) -> dict[str, int]:
    """Tokens each expert fc1 MatMul receives over ``samples`` calibration samples (its input's row count)."""
    from onnx import helper

    probe = copy.deepcopy(proto)
    by_name = {n.name: n for n in probe.graph.node}
    fc1 = [m for m in matmuls if ".fc1/" in m]
    for m in fc1:
        probe.graph.output.append(helper.make_empty_tensor_value_info(by_name[m].input[0]))
    sess = _session(probe)
    names = [o.name for o in sess.get_outputs()][-len(fc1) :]
    counts = dict.fromkeys(fc1, 0)
    data = task.split("calibration").take(samples)
    feeds_names = [i.name for i in sess.get_inputs()]
    for feeds, _ in data.batches(64):
        outs = sess.run(names, {n: feeds[n] for n in feeds_names})
        for m, o in zip(fc1, outs, strict=True):
            counts[m] += int(o.shape[0])
    return {m.split("/")[0].rsplit(".", 1)[0]: c for m, c in counts.items()}  # key: "<layer>.experts.<i>"


def _apply(proto: Any, plan: dict[str, Precision], block_size: int, workdir: Path) -> Any:
    """Quantize the expert MatMuls of ``proto`` as ``plan`` says (expert prefix -> precision)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = copy.deepcopy(proto)
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul" and ".experts." in n.name]

    def nodes(p: str) -> list[str]:
        return [m for m in matmuls if plan.get(m.split("/")[0].rsplit(".", 1)[0]) == p]

    int4, int8 = nodes("int4_weight"), nodes("int8_dynamic")
    if int4:
        # nodes_to_include only adds to the op types quantized by default, so exclude every other node.
        others = [n.name for n in model.graph.node if n.name not in set(int4)]
        q = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=True, nodes_to_exclude=others)
        q.process()
        model = q.model.model
        left = {n.name for n in model.graph.node if n.op_type == "MatMul"} & set(int4)
        wrong = [
            n.name for n in model.graph.node if n.op_type == "MatMulNBits" and n.name.removesuffix("_Q4") not in int4
        ]
        if wrong:
            raise RuntimeError(f"moe-quantize: INT4 quantized nodes outside the plan: {wrong}")
        if left:
            raise RuntimeError(f"moe-quantize: INT4 left these expert nodes in FP32: {sorted(left)}")
    if int8:
        src, dst = workdir / "moe-quant-in.onnx", workdir / "moe-quant-out.onnx"
        onnx.save(model, str(src))
        quantize_dynamic(
            src,
            dst,
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=int8,
            op_types_to_quantize=["MatMul"],
        )
        model = onnx.load(str(dst))
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)
        left = {n.name for n in model.graph.node if n.op_type == "MatMul"} & set(int8)
        if left:
            raise RuntimeError(f"moe-quantize: INT8 left these expert nodes in FP32: {sorted(left)}")
    return model


def _metric(proto: Any, task: Any) -> float:
    sess = _session(proto)
    held = task.split("heldout")
    names = [i.name for i in sess.get_inputs()]
    outs = [sess.run(None, {n: f[n] for n in names}) for f, _ in held.batches(128)]
    merged = [np.concatenate([o[j] for o in outs]) for j in range(len(outs[0]))]
    return float(task.score(merged, held.targets))


@register_stage
class MoEQuantize(Stage):
    """Quantize MoE experts by routing frequency (INT8 frequent, INT4 weight-only rare) on the ONNX model."""

    name: ClassVar[str] = "moe-quantize"
    kind: ClassVar[Literal["torch", "onnx"]] = "onnx"
    Config: ClassVar[type[StageConfig]] = MoEQuantConfig
    default_output: ClassVar[str] = "moe-int8"
    summary: ClassVar[str] = "per-expert precision: INT8 for frequent experts, INT4 weight-only for rare ones"

    def apply(self, model: ModelArtifact, ctx: StageContext, output: str) -> tuple[ModelArtifact, dict[str, Any]]:
        import onnx

        cfg: MoEQuantConfig = self.config  # type: ignore[assignment]
        self.onnx_input(model)
        start = time.perf_counter()
        proto = onnx.load(str(model.path))
        matmuls = gemm_experts_to_matmul(proto)
        if not matmuls:
            raise InputError(
                f"moe-quantize: {model.path.name} has no expert weights named '<layer>.experts.<i>.fc1/fc2.weight'",
                "export a mixture-of-experts model (e.g. the zoo's moe_transformer) with parameter names kept",
            )
        usage = expert_usage(proto, matmuls, ctx.task, cfg.calibration_samples)
        by_layer: dict[str, list[str]] = {}
        for key in usage:
            by_layer.setdefault(key.rsplit(".experts.", 1)[0], []).append(key)
        plan: dict[str, Precision] = {}
        for keys in by_layer.values():
            share = sum(usage[k] for k in keys) / len(keys)
            for k in keys:
                plan[k] = cfg.rare if usage[k] < cfg.rare_below * share else cfg.frequent
        quantized = _apply(proto, plan, cfg.block_size, ctx.workdir)
        dst = ctx.workdir / f"{output}.onnx"
        onnx.save(quantized, str(dst))
        before, after = expert_initializer_bytes(proto), expert_initializer_bytes(quantized)
        details: dict[str, Any] = {
            "plan": plan,
            "tokens_per_expert": usage,
            "expert_bytes": {"before": before, "after": after, "ratio": round(before / max(after, 1), 3)},
            "rewritten_gemm_to_matmul": len(matmuls),
        }
        if cfg.evaluate:
            ref = _metric(proto, ctx.task)
            costs: dict[str, Any] = {"fp32": ref}
            for p in sorted(set(plan.values()) - {"fp32"}):
                alone = {k: (v if v == p else "fp32") for k, v in plan.items()}
                costs[p] = {"experts": sum(v == p for v in plan.values())}
                costs[p]["metric_drop"] = ref - _metric(_apply(proto, alone, cfg.block_size, ctx.workdir), ctx.task)
            costs["all"] = {"metric_drop": ref - _metric(quantized, ctx.task)}
            details["heldout_metric_cost"] = costs
        details["seconds"] = round(time.perf_counter() - start, 2)
        return ModelArtifact(output, "onnx", "mixed", path=dst, lineage=[*model.lineage, self.name]), details
