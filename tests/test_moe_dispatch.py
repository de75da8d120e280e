"""Sparse (gather/scatter) MoE dispatch: same outputs as the dense-masked forward, every expert in the ONNX
graph whatever the export's sample input routed, and ONNX Runtime / OpenVINO matching torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from effdl.compress.moe import moe_layers, routing_counts
from effdl.compress.moe_onnx import expert_weights
from effdl.tasks import get_task
from effdl.zoo import get_model_entry
from effdl.zoo.moe import MoEFeedForward

ATOL = 1e-4


@pytest.fixture(scope="module")
def task():  # noqa: ANN201
    return get_task("seq_majority")


def _model(dispatch: str = "sparse", **over: object) -> torch.nn.Module:
    entry = get_model_entry("moe_transformer")
    torch.manual_seed(0)
    return entry.build(**{**entry.tiny, "depth": 2, "num_experts": 4, **over, "dispatch": dispatch}).eval()


def _export(model: torch.nn.Module, path: Path, exporter: str, example: torch.Tensor) -> Path:
    if exporter == "dynamo":
        batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=2, max=128)
        torch.onnx.export(
            model, (example,), str(path), input_names=["tokens"], output_names=["logits"],
            dynamic_shapes=({0: batch, 1: seq},), dynamo=True, opset_version=18, external_data=False,
        )  # fmt: skip
    else:
        torch.onnx.export(
            model, (example,), str(path), input_names=["tokens"], output_names=["logits"],
            dynamic_axes={"tokens": {0: "batch", 1: "seq"}, "logits": {0: "batch"}}, dynamo=False, opset_version=18,
        )  # fmt: skip
    return path


def _inputs(task) -> list[np.ndarray]:  # noqa: ANN001
    """256 held-out sequences in batches of 64, plus odd batch sizes and sequence lengths (dynamic shapes)."""
    held = task.split("heldout").inputs["tokens"][:256]
    rng = np.random.default_rng(1)
    return [held[i : i + 64] for i in range(0, 256, 64)] + [
        rng.integers(1, 16, (3, 17)).astype(np.int64),
        rng.integers(1, 16, (1, 5)).astype(np.int64),
    ]


def test_sparse_and_dense_dispatch_agree(task) -> None:  # noqa: ANN001
    sparse, dense = _model("sparse"), _model("dense")
    dense.load_state_dict(sparse.state_dict())
    assert list(sparse.state_dict()) == list(dense.state_dict())
    with torch.inference_mode():
        for x in _inputs(task):
            t = torch.from_numpy(x)
            torch.testing.assert_close(sparse(t), dense(t), atol=1e-5, rtol=1e-5)
    layer = next(m for m in sparse.modules() if isinstance(m, MoEFeedForward))
    layer.skip_threshold = 0.45  # skipping drops the same secondary experts in both formulations
    next(m for m in dense.modules() if isinstance(m, MoEFeedForward)).skip_threshold = 0.45
    x = torch.from_numpy(task.split("heldout").inputs["tokens"][:64])
    with torch.inference_mode():
        torch.testing.assert_close(sparse(x), dense(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_onnx_keeps_every_expert_and_matches_torch_on_ort_and_openvino(task, exporter: str, tmp_path: Path) -> None:  # noqa: ANN001
    import onnxruntime as ort
    import openvino as ov

    model = _model()
    # Export from a sample of few tokens (one for TorchScript's tracer, 2x2 for torch.export, which
    # specialises sizes 0/1) that cannot exercise every routing, yet all 4 experts must be in the graph.
    example = torch.tensor([[3]]) if exporter == "torchscript" else torch.tensor([[3, 3], [3, 3]])
    path = _export(model, tmp_path / "moe.onnx", exporter, example)
    proto = onnx.load(str(path))
    assert expert_weights(proto) == {f"blocks.{i}.mlp": [0, 1, 2, 3] for i in range(2)}
    assert {"NonZero", "Gather"} <= {n.op_type for n in proto.graph.node}  # routed, not dense-masked

    inputs = _inputs(task)
    # Routing coverage: every expert of every layer receives tokens from the 256 held-out sequences.
    held = torch.from_numpy(np.concatenate(inputs[:4]))
    grabbed: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_pre_hook(lambda _m, a, n=n: grabbed.__setitem__(n, a[0].reshape(-1, a[0].shape[-1])))
        for n, m in moe_layers(model)
    ]
    with torch.inference_mode():
        model(held)
    for h in hooks:
        h.remove()
    for name, layer in moe_layers(model):
        assert (routing_counts(layer, grabbed[name]) > 0).all(), name
    assert set(grabbed) == {"blocks.0.mlp", "blocks.1.mlp"}

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert "float32" in str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    n = 0
    with torch.inference_mode():
        for x in inputs:
            ref = model(torch.from_numpy(x)).numpy()
            got_ort = sess.run(None, {"tokens": x})[0]
            got_ov = compiled({"tokens": x})[compiled.output(0)]
            assert np.abs(got_ort - ref).max() <= ATOL
            assert np.abs(got_ov - ref).max() <= ATOL
            n += len(x)
    assert n >= 256


class _DataDependentMoE(MoEFeedForward):
    """A faulty formulation: skips experts with no tokens in Python, so tracing bakes the sample's routing in."""

    def forward_sparse(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        weights = self.routing(flat)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            idx = torch.nonzero(weights[:, e] > 0).squeeze(-1)
            if idx.numel() == 0:  # Python control flow on data: the trap the test must catch
                continue
            out = out.index_add(0, idx, expert(flat.index_select(0, idx)) * weights.index_select(0, idx)[:, e : e + 1])
        return out.reshape(x.shape)


def test_expert_count_check_catches_experts_dropped_at_export(tmp_path: Path) -> None:
    model = _model()
    for block in model.blocks:
        old = block.mlp
        block.mlp = _DataDependentMoE(16, 8, 4, 2)
        block.mlp.load_state_dict(old.state_dict())
    path = _export(model, tmp_path / "bad.onnx", "torchscript", torch.tensor([[3]]))
    found = expert_weights(onnx.load(str(path)))
    assert any(len(v) < 4 for v in found.values()), found
