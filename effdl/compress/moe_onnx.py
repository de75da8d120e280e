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
