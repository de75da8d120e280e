"""Hugging Face folders (config.json + safetensors) as checkpoints, and the sentence_similarity task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from testutil import tiny_bert_folder  # noqa: E402

from effdl.errors import CheckpointError  # noqa: E402
from effdl.pipeline import compress  # noqa: E402
from effdl.recipe import parse_recipe  # noqa: E402
from effdl.sources import load_checkpoint  # noqa: E402
from effdl.tasks import get_task  # noqa: E402


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """A tiny random BERT saved the way Hugging Face does, with a sentence-transformers layout."""
    folder = tiny_bert_folder(tmp_path_factory.mktemp("hf") / "tiny-bert")
    (folder / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Normalize"}]))
    return folder


def test_load_folder_as_sentence_encoder(hf_folder: Path) -> None:
    loaded = load_checkpoint(hf_folder)
    assert loaded.kind == "torch" and loaded.format == "hf-folder" and loaded.arch == "hf-bert"
    assert loaded.task == "sentence_similarity" and loaded.task_options["seq_len"] == 128
    assert loaded.config["normalize"] and loaded.config["pooling"] == "mean"
    task = get_task(loaded.task, **loaded.task_options)
    held = task.split("heldout")
    assert held.inputs["input_ids"].shape == (256, 128) and held.inputs["input_ids"].dtype == np.int64
    assert (held.inputs["attention_mask"].sum(1) < 128).any() and (held.inputs["input_ids"][:, 0] == 2).all()
    from effdl.export import torch_outputs

    emb = torch_outputs(loaded.module, task, held.inputs)
    assert emb[0].shape == (256, 32)
    assert np.allclose(np.linalg.norm(emb[0], axis=1), 1.0, atol=1e-5)
    assert task.agreement(emb, emb)["cosine"] == pytest.approx(1.0)
    assert 0.0 <= task.score(emb, None) <= 100.0
    noisy = [emb[0] + np.random.default_rng(0).normal(0, 0.5, emb[0].shape)]
    assert task.agreement(emb, noisy)["cosine"] < 0.95
    # padding must not change an embedding: the mask is honoured
    ids, mask = held.inputs["input_ids"][:1].copy(), held.inputs["attention_mask"][:1].copy()
    ids2 = ids.copy()
    ids2[0, mask[0] == 0] = 7
    a = torch_outputs(loaded.module, task, {"input_ids": ids, "attention_mask": mask})[0]
    b = torch_outputs(loaded.module, task, {"input_ids": ids2, "attention_mask": mask})[0]
    assert np.abs(a - b).max() < 1e-5


def test_folder_errors(tmp_path: Path, hf_folder: Path) -> None:
    (tmp_path / "config.json").write_text((hf_folder / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="no \\*.safetensors.*never unpickles"):
        load_checkpoint(tmp_path)
    from effdl.errors import InputError

    with pytest.raises(InputError, match="tokenizer"):
        get_task("sentence_similarity").split("heldout")


def test_compress_hf_folder_on_both_backends(hf_folder: Path, tmp_path: Path) -> None:
    recipe = parse_recipe(
        {
            "stages": [
                {"stage": "quantize-dynamic", "output": "dyn"},
                {"stage": "quantize", "input": "fp32", "output": "int8", "config": {"samples": 16}},
            ],
            "targets": [
                {"backend": "onnxruntime", "models": ["fp32", "dyn", "int8"]},
                {"backend": "openvino", "models": ["fp32", "int8"]},
            ],
            "export": {"check_samples": 16},
            "verify": {"samples": 32, "max_metric_drop": 100, "min_agreement": {"cosine": 0.9}},
            "benchmark": {"enabled": False},
        }
    )
    result = compress(hf_folder, recipe, tmp_path / "out")
    rows = {v["name"]: v for v in result.report["variants"]}
    assert rows["onnxruntime-fp32"]["verification"]["cosine"] > 0.9999
    assert rows["openvino-fp32"]["verification"]["cosine"] > 0.9999
    for name in ("onnxruntime-dyn", "onnxruntime-int8", "openvino-int8"):
        assert rows[name]["accepted"], rows[name]["reason"]
        assert 0.9 < rows[name]["verification"]["cosine"] <= 1.0 + 1e-6


def test_train_sentences_extends_the_train_split_without_heldout_text(hf_folder: Path) -> None:
    """``train_sentences`` continues the train split with other standard-library sentences (for distillation):
    the pair splits stay as they were and no held-out or calibration sentence is trained on."""
    from effdl.errors import InputError
    from effdl.tasks.sentences import stdlib_prose_sentences

    base = get_task("sentence_similarity", tokenizer=str(hf_folder), seed=3)
    big = get_task("sentence_similarity", tokenizer=str(hf_folder), seed=3, train_sentences=3000)
    for split in ("heldout", "calibration"):
        for name in ("input_ids", "attention_mask"):
            assert np.array_equal(base.split(split).inputs[name], big.split(split).inputs[name])
    small, large = base.split("train").inputs["input_ids"], big.split("train").inputs["input_ids"]
    assert len(small) < 1000 and len(large) == 3000
    assert np.array_equal(large[: len(small)], small)  # the pair sentences come first, as before
    rows = {r.tobytes() for r in large}
    for split in ("heldout", "calibration"):
        assert not rows & {r.tobytes() for r in big.split(split).inputs["input_ids"]}
    assert len(stdlib_prose_sentences()) > 5000
    with pytest.raises(InputError, match="train_sentences"):
        get_task("sentence_similarity", tokenizer=str(hf_folder), train_sentences=0).split("train")
