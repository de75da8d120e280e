"""Per-layer quantization overrides: match ONNX nodes by exact name or ``re:`` regex, keep them in FP32 or
change their weight granularity.

A recipe writes them on a static ``quantize`` stage::

    overrides:
      - {match: "re:.*attention.*", action: fp32}     # every node whose name matches stays FP32
      - {match: "/fc/Gemm", per_channel: false}      # this node's weight gets one scale (per tensor)

They resolve to ONNX Runtime's ``nodes_to_exclude`` plus ``TensorQuantOverrides`` (per weight tensor),
or NNCF's ``IgnoredScope``. A pattern that matches no node is an error (it is almost always a typo).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from effdl.errors import InputError

REGEX_PREFIX = "re:"


class LayerOverride(BaseModel):
    """One override: which nodes (``match``) and what to do with them."""

    model_config = ConfigDict(extra="forbid")

    match: str = Field(description="Exact ONNX node name, or 're:' followed by a regex matched against the full name.")
    action: Literal["quantize", "fp32"] = Field("quantize", description="'fp32' keeps the matched nodes unquantized.")
    per_channel: bool | None = Field(None, description="Per-channel (true) or per-tensor (false) weight scales.")

    @field_validator("match")
    @classmethod
    def _valid_regex(cls, v: str) -> str:
        if v.startswith(REGEX_PREFIX):
            try:
                re.compile(v[len(REGEX_PREFIX) :])
            except re.error as e:
                raise ValueError(f"invalid regex {v!r}: {e}") from e
        if not v.strip():
            raise ValueError("match must not be empty")
        return v

    def matches(self, name: str) -> bool:
        """Whether node ``name`` is selected (regexes must match the whole name)."""
        if self.match.startswith(REGEX_PREFIX):
            return re.fullmatch(self.match[len(REGEX_PREFIX) :], name) is not None
        return name == self.match


@dataclass
class ResolvedOverrides:
    """Overrides applied to one ONNX graph."""

    exclude: list[str] = field(default_factory=list)  # node names kept in FP32
    tensor_overrides: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # ORT TensorQuantOverrides
    matched: dict[str, list[str]] = field(default_factory=dict)  # pattern -> node names (for the report)


# Which input of an op holds the weight, and its output-channel axis (ORT's per-channel defaults).
_WEIGHT_INPUT: dict[str, tuple[int, int]] = {"Conv": (1, 0), "ConvTranspose": (1, 1), "Gemm": (1, 0), "MatMul": (1, -1)}


def _weight_axis(node: Any) -> int:
    _, axis = _WEIGHT_INPUT[node.op_type]
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return axis


def resolve_overrides(
    model_path: Path, overrides: list[LayerOverride], symmetric_weights: bool = True
) -> ResolvedOverrides:
    """Match ``overrides`` against the nodes of ``model_path``; later overrides win over earlier ones."""
    import onnx

    out = ResolvedOverrides()
    if not overrides:
        return out
    graph = onnx.load(str(model_path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    for i, ov in enumerate(overrides):
        hits = [n for n in graph.node if ov.matches(n.name)]
        if not hits:
            sample = ", ".join(n.name for n in graph.node[:8])
            raise InputError(
                f"overrides[{i}].match: {ov.match!r} matches no ONNX node name",
                f"node names look like: {sample} ... (`effdl inspect MODEL.onnx` lists them)",
            )
        out.matched[ov.match] = [n.name for n in hits]
        for node in hits:
            if ov.action == "fp32":
                if node.name not in out.exclude:
                    out.exclude.append(node.name)
                continue
            if node.name in out.exclude:
                out.exclude.remove(node.name)
            if ov.per_channel is None:
                continue
            if node.op_type not in _WEIGHT_INPUT or len(node.input) <= _WEIGHT_INPUT[node.op_type][0]:
                raise InputError(
                    f"overrides[{i}]: per_channel applies to Conv/Gemm/MatMul weights; "
                    f"node {node.name!r} is a {node.op_type}"
                )
            weight = node.input[_WEIGHT_INPUT[node.op_type][0]]
            if weight not in inits:
                raise InputError(f"overrides[{i}]: node {node.name!r} has no constant weight to quantize per channel")
            entry: dict[str, Any] = {"symmetric": symmetric_weights}
            if ov.per_channel:
                entry["axis"] = _weight_axis(node)
            out.tensor_overrides[weight] = [entry]
    return out
