"""ONNX-side helpers for MoE models: find each expert's weights and the nodes that use them."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

EXPERT_WEIGHT = re.compile(r"^(?P<layer>.+)\.experts\.(?P<expert>\d+)\.(?P<fc>fc[12])\.weight$")


def expert_weights(proto: Any) -> dict[str, list[int]]:
    """Experts (sorted indices) per MoE layer whose fc1 and fc2 weights are both initializers consumed by
    a node of ``proto``'s main graph. Names are the torch parameter names, which both exporters keep."""
    used = {i for n in proto.graph.node for i in n.input}
    found: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for init in proto.graph.initializer:
        m = EXPERT_WEIGHT.match(init.name)
        if m and init.name in used:
            found[m["layer"]][int(m["expert"])].add(m["fc"])
    return {layer: sorted(e for e, fcs in ex.items() if fcs == {"fc1", "fc2"}) for layer, ex in sorted(found.items())}


def expert_nodes(proto: Any) -> dict[tuple[str, int, str], Any]:
    """The node consuming each expert weight, keyed by ``(layer, expert, "fc1" | "fc2")``."""
    names = {i.name for i in proto.graph.initializer}
    out: dict[tuple[str, int, str], Any] = {}
    for node in proto.graph.node:
        for inp in node.input:
            m = EXPERT_WEIGHT.match(inp) if inp in names else None
            if m:
                out[(m["layer"], int(m["expert"]), m["fc"])] = node
    return out


def expert_initializer_bytes(proto: Any) -> int:
    """Bytes of every initializer that belongs to an expert (weights, biases, and their quantized forms:
    ``..._quantized``, ``..._scale``, ``..._zero_point``, ``..._Q4``, ``..._scales``)."""
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(i).nbytes for i in proto.graph.initializer if EXPERT_PART.search(i.name))


EXPERT_PART = re.compile(r"\.experts\.\d+\.")


def gemm_experts_to_matmul(proto: Any) -> list[str]:
    """Rewrite every expert ``Gemm(A, W, b, transB=1)`` as ``MatMul(A, W^T) + b`` with ``W^T`` stored as an
    ``(in, out)`` initializer; returns the new MatMul node names.

    The transposed-weight trap: both exporters turn ``nn.Linear`` into ``Gemm`` with ``transB=1`` and the
    weight stored ``(out, in)``. ONNX Runtime's dynamic INT8 and MatMulNBits quantizers only handle MatMul
    with an ``(in, out)`` constant B (quantization axis and blocks along ``in``); fed the Gemm they either
    skip it silently or would take scales along the wrong axis. Rewriting first makes every expert eligible,
    and the caller checks that each one was converted.
    """
    import onnx
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    new_nodes: list[Any] = []
    names: list[str] = []
    for node in proto.graph.node:
        m = EXPERT_WEIGHT.match(node.input[1]) if node.op_type == "Gemm" and len(node.input) > 1 else None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if not m or node.input[1] not in inits or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        wt = w.T if attrs.get("transB", 0) else w
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(wt.copy(), node.input[1]))
        base = node.name or node.output[0]
        mm_out = f"{node.output[0]}__matmul" if len(node.input) > 2 else node.output[0]
        name = f"{m['layer']}.experts.{m['expert']}.{m['fc']}/MatMul"
        new_nodes.append(helper.make_node("MatMul", [node.input[0], node.input[1]], [mm_out], name=name))
        names.append(name)
        if len(node.input) > 2 and node.input[2]:
            beta = attrs.get("beta", 1.0)
            if beta != 1.0:
                raise ValueError(f"{base}: Gemm with beta={beta} is not an nn.Linear")
            new_nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=f"{name}_bias"))
    del proto.graph.node[:]
    proto.graph.node.extend(new_nodes)
    # Stale shapes (the exporter's value_info, initializers listed as inputs) would contradict the new layout.
    del proto.graph.value_info[:]
    keep_inputs = [i for i in proto.graph.input if i.name not in inits]
    del proto.graph.input[:]
    proto.graph.input.extend(keep_inputs)
    onnx.checker.check_model(proto)
    return names
