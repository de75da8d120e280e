"""dispatch="ort_moe": the zoo MoE layer exported as ONNX Runtime's com.microsoft.MoE operator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from effdl.export import export_onnx, torch_outputs
from effdl.recipe import ExportConfig
from effdl.tasks import get_task
from effdl.zoo import get_model_entry


def test_ort_moe_export_matches_torch_with_every_expert_used(tmp_path: Path) -> None:
    entry = get_model_entry("moe_transformer")
    torch.manual_seed(0)
    model = entry.build(**{**entry.tiny, "num_experts": 4, "top_k": 2}).eval()
    task = get_task("seq_majority", n_train=64)
    held = task.split("heldout").take(256)
    exact = torch_outputs(model, task, held.inputs)[0]
    for layer in model.moe_layers():
        layer.dispatch = "ort_moe"
    ref = torch_outputs(model, task, held.inputs)[0]
    assert 0 < np.abs(ref - exact).max() < 1e-2  # GELU's tanh approximation: close, not equal
    used = set()
    with torch.inference_mode():
        for i, layer in enumerate(model.moe_layers()):
            layer.register_forward_pre_hook(
                lambda m, a, i=i: used.update((i, int(e)) for e in m.router(a[0]).topk(m.top_k, -1).indices.unique())
            )
        torch_outputs(model, task, held.inputs)
    assert len(used) == 4 * len(model.moe_layers())
    path = export_onnx(model, task, tmp_path / "m.onnx", ExportConfig(exporter="torchscript"))
    proto = onnx.load(str(path))
    moe = [n for n in proto.graph.node if n.op_type == "MoE" and n.domain == "com.microsoft"]
    assert len(moe) == len(model.moe_layers()) and "NonZero" not in [n.op_type for n in proto.graph.node]
    inits = {i.name: i for i in proto.graph.initializer}
    hidden, dim = model.moe_layers()[0].experts[0].fc1.weight.shape
    # every expert stacked (experts, out, in), nn.Linear's layout, which ORT's operator expects
    assert [tuple(inits[i].dims) for i in moe[0].input[2:6]] == [
        (4, hidden, dim),
        (4, hidden),
        (4, dim, hidden),
        (4, dim),
    ]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = np.concatenate([sess.run(None, {"tokens": held.inputs["tokens"][i : i + 64]})[0] for i in range(0, 256, 64)])
    assert np.abs(out - ref).max() < 1e-4
    layer = model.moe_layers()[0]
    layer.skip_threshold = 0.3
    with pytest.raises(ValueError, match="skipping"):
        torch_outputs(model, task, held.inputs)
