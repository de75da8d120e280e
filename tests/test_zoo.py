"""Every zoo architecture at its tiny size: builds, runs, exports to ONNX with a dynamic batch, and matches
torch on ONNX Runtime and OpenVINO (FP32) at batch 1 and 3. Plus checkpoint round trips and hooks."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from effdl.tasks import get_task
from effdl.zoo import ZOO, get_model_entry
from effdl.zoo.train import evaluate_torch, train_entry

ATOL = 1e-4
RTOL = 1e-4
QUICK = {"seq_majority": {"n_train": 256}, "sbm_nodes": {"n_train": 64}}  # small train splits for fast tests
FAMILIES = {"cnn", "rnn", "transformer", "moe", "generative", "gnn"}


@functools.cache
def _task(name: str):
    """Tasks are deterministic, so one instance per name serves every test (their data is generated once)."""
    return get_task(name)


def export_onnx(module: torch.nn.Module, task, path: Path, dynamo: bool = True) -> Path:
    """The pipeline's own export (``effdl.export.export_onnx``) with a dynamic batch, opset 18."""
    from effdl.export import export_onnx as export
    from effdl.recipe import ExportConfig

    config = ExportConfig(opset=18, dynamic_batch=True, exporter="dynamo" if dynamo else "torchscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export(module, task, path, config)


def _ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # a correctness check; one thread avoids spin-wait thrash on a busy host
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _torch_outputs(model: torch.nn.Module, task, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.inference_mode():
        y = model(*[torch.from_numpy(feed[n]) for n in task.input_names])
    return [t.numpy() for t in (y if isinstance(y, tuple | list) else (y,))]


def test_registry_covers_every_family() -> None:
    families = {get_model_entry(n).family for n in ZOO.names()}
    assert FAMILIES <= families
    for name in ZOO.names():
        entry = get_model_entry(name)
        assert entry.description, name
        get_task(entry.task, **entry.task_options)  # every entry names a registered task


@pytest.mark.parametrize("name", ZOO.names())
def test_tiny_model_exports_and_matches_backends(name: str, tmp_path: Path) -> None:
    import openvino as ov

    entry = get_model_entry(name)
    task = _task(entry.task)
    torch.manual_seed(0)
    model = entry.build(**entry.tiny).eval()

    example = task.example_inputs(2)
    outputs = _torch_outputs(model, task, example)
    assert len(outputs) == len(task.output_names)
    assert outputs[0].shape[0] == 2
    assert np.isfinite(outputs[0]).all()
    assert np.isfinite(
        task.score(
            _torch_outputs(model, task, task.split("heldout").take(16).inputs), task.split("heldout").take(16).targets
        )
    )

    path = export_onnx(model, task, tmp_path / f"{name}.onnx")
    sess = _ort_session(path)
    assert [i.name for i in sess.get_inputs()] == list(task.input_names)
    compiled = ov.Core().compile_model(
        str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
    )
    calib = task.split("calibration")
    for batch in (1, 3):
        feed = {k: v[:batch] for k, v in calib.inputs.items()}
        ref = _torch_outputs(model, task, feed)
        got_ort = sess.run(None, feed)
        got_ov = [compiled(feed)[i] for i in range(len(ref))]
        for r, o, v in zip(ref, got_ort, got_ov, strict=True):
            assert o.shape == r.shape == v.shape
            np.testing.assert_allclose(o, r, atol=ATOL, rtol=RTOL, err_msg=f"{name} onnxruntime batch {batch}")
            np.testing.assert_allclose(v, r, atol=ATOL, rtol=RTOL, err_msg=f"{name} openvino batch {batch}")
        agreement = task.agreement(ref, got_ort)
        assert agreement, f"{task.name} reports no agreement measure"
        for key, value in agreement.items():
            if key.endswith("agreement"):
                assert value == pytest.approx(100.0), (key, value)


@pytest.mark.parametrize("name", ZOO.names())
def test_tiny_model_exports_with_torchscript_exporter(name: str, tmp_path: Path) -> None:
    entry = get_model_entry(name)
    task = _task(entry.task)
    torch.manual_seed(0)
    model = entry.build(**entry.tiny).eval()
    path = export_onnx(model, task, tmp_path / f"{name}.onnx", dynamo=False)
    feed = {k: v[:3] for k, v in task.split("calibration").inputs.items()}
    for r, o in zip(_torch_outputs(model, task, feed), _ort_session(path).run(None, feed), strict=True):
        np.testing.assert_allclose(o, r, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", ["lenet5", "gru_classifier", "moe_transformer", "gan"])
def test_train_save_load_roundtrip(name: str, tmp_path: Path) -> None:
    from effdl.sources import load_checkpoint, save_checkpoint

    entry = get_model_entry(name)
    result = train_entry(entry, overrides=dict(entry.tiny), epochs=1, seed=0, task_options=QUICK.get(entry.task))
    assert np.isfinite(result.metric)
    path = save_checkpoint(
        result.model, tmp_path / f"{name}.safetensors", arch=name, config=result.config, task=entry.task
    )
    loaded = load_checkpoint(path)
    assert loaded.arch == name and loaded.task == entry.task
    feed = result.task.example_inputs(3)
    for a, b in zip(
        _torch_outputs(result.model, result.task, feed), _torch_outputs(loaded.module, result.task, feed), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert evaluate_torch(loaded.module, result.task) == pytest.approx(result.metric, rel=1e-6, abs=1e-6)


def test_training_is_reproducible() -> None:
    entry = get_model_entry("gcn")
    a = train_entry(entry, overrides=dict(entry.tiny), epochs=1, seed=3, task_options=QUICK[entry.task])
    b = train_entry(entry, overrides=dict(entry.tiny), epochs=1, seed=3, task_options=QUICK[entry.task])
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=0, atol=0)


def test_training_improves_a_tiny_model() -> None:
    entry = get_model_entry("lstm_classifier")
    untrained = evaluate_torch(entry.build(**entry.tiny), _task(entry.task))
    trained = train_entry(
        entry, overrides={**entry.tiny, "hidden": 16}, epochs=4, seed=0, task_options={"n_train": 2000}
    ).metric
    assert trained > untrained + 20.0, (untrained, trained)


def test_moe_routing_is_top_k_and_named_for_slimming() -> None:
    from effdl.zoo.moe import MoEFeedForward

    model = get_model_entry("moe_transformer").build()
    names = dict(model.named_modules())
    assert "blocks.0.mlp.router" in names
    assert "blocks.0.mlp.experts.7.fc1" in names and "blocks.0.mlp.experts.7.fc2" in names
    layer = next(m for m in model.modules() if isinstance(m, MoEFeedForward))
    assert layer.num_experts == 8 and layer.top_k == 2
    weights = layer.routing(torch.randn(5, 7, 64))
    assert ((weights > 0).sum(-1) == 2).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(5, 7))
    model.train()
    model(torch.randint(0, 16, (4, 32)))
    assert model.extra_loss().item() > 0  # load-balancing loss recorded in training mode


def test_vae_eval_is_deterministic_and_training_adds_kl() -> None:
    model = get_model_entry("vae").build(**get_model_entry("vae").tiny)
    x = torch.rand(4, 1, 16, 16)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    model(x)
    assert model.extra_loss().item() > 0


def test_causal_lm_does_not_look_ahead() -> None:
    model = get_model_entry("gpt").build(**get_model_entry("gpt").tiny).eval()
    tokens = torch.randint(0, 96, (1, 20))
    changed = tokens.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 96
    with torch.inference_mode():
        torch.testing.assert_close(model(tokens)[:, :10], model(changed)[:, :10])


def test_bad_configs_fail_clearly() -> None:
    with pytest.raises(ValueError, match="divisible"):
        get_model_entry("gpt").build(dim=30, heads=4)
    with pytest.raises(ValueError, match="top_k"):
        get_model_entry("moe_transformer").build(top_k=9)
    with pytest.raises(ValueError, match="depth"):
        get_model_entry("vgg11").build(depth=12)


def test_macs_count_recurrent_layers() -> None:
    from effdl.zoo.profile import count_macs

    entry = get_model_entry("lstm_classifier")
    task = _task(entry.task)
    # embed 32 -> LSTM 64 over 32 steps: 4 gates x (32 + 64) x 64 per step, plus the 64 x 4 head.
    assert count_macs(entry.build().eval(), task.example_inputs(1), task.input_names) == 4 * 96 * 64 * 32 + 64 * 4
