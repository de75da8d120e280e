"""Shared fixtures: a small trained checkpoint, fast recipes, and marker skips."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA"))
        if "tensorrt" in item.keywords and not has_trt:
            item.add_marker(pytest.mark.skip(reason="needs TensorRT's Python package (not installable here)"))


@pytest.fixture(scope="session")
def lenet_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LeNet-5 trained on digits for a few epochs (about 2 s), saved as a zoo safetensors checkpoint."""
    from effdl.sources import save_checkpoint
    from effdl.zoo import get_model_entry
    from effdl.zoo.train import train_entry

    entry = get_model_entry("lenet5")
    result = train_entry(entry, epochs=8, seed=0)
    path = tmp_path_factory.mktemp("ckpt") / "lenet5.safetensors"
    save_checkpoint(result.model, path, arch="lenet5", config=result.config, task=entry.task)
    return path


FAST_RECIPE = """
version: 1
stages:
  - stage: quantize
    config: {engine: onnxruntime, calibration: minmax, samples: 32}
targets:
  - backend: onnxruntime
    models: [fp32, int8]
  - backend: openvino
    models: [fp32, int8]
    options: {inference_precision: fp32}
verify:
  samples: 200
  max_metric_drop: 3.0
  min_agreement: {top1_agreement: 90.0}
benchmark:
  warmup: 5
  queries: 20
"""


@pytest.fixture()
def fast_recipe(tmp_path: Path) -> Path:
    p = tmp_path / "fast.yaml"
    p.write_text(FAST_RECIPE)
    return p
