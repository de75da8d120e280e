"""Zoo checkpoint -> `effdl compress` for the families the other pipeline tests do not cover (they use
LeNet-5, ResNet-8, the MoE transformer and a tiny Hugging Face BERT): RNN classifier, character LSTM,
GPT decoder, seq2seq, ViT, autoencoder, GAN generator and GCN, each at its tiny size after one epoch.
Also the rule that picks a task's own agreement limits when a recipe's do not apply."""

from __future__ import annotations

from pathlib import Path

import pytest
from testutil import run_cli

from effdl.pipeline import agreement_limits, compress
from effdl.recipe import parse_recipe
from effdl.tasks import get_task

QUICK = {"seq_majority": {"n_train": 256}, "sbm_nodes": {"n_train": 64}, "stdlib_text": {"n_train": 256}}
QUICK |= {"shapes": {"n_train": 256}, "seq_reverse": {"n_train": 256}}

# The default recipe's quantization and verify limits (top1_agreement 97), ONNX Runtime only, no benchmark:
# the zoo export test already checks every model's numerics on OpenVINO.
RECIPE = {
    "stages": [{"stage": "quantize", "config": {"engine": "onnxruntime", "calibration": "minmax", "samples": 32}}],
    "targets": [{"backend": "onnxruntime", "models": ["fp32", "int8"]}],
    "verify": {"samples": 64, "max_metric_drop": 1.0, "min_agreement": {"top1_agreement": 97.0}},
    "benchmark": {"enabled": False},
}


def _checkpoint(name: str, path: Path) -> Path:
    from effdl.sources import save_checkpoint
    from effdl.zoo import get_model_entry
    from effdl.zoo.train import train_entry

    entry = get_model_entry(name)
    result = train_entry(entry, overrides=dict(entry.tiny), epochs=1, seed=0, task_options=QUICK.get(entry.task))
    return save_checkpoint(
        result.model, path, arch=name, config=result.config, task=entry.task, task_options=entry.task_options
    )


@pytest.mark.parametrize(
    ("name", "agreement"),
    [
        ("lstm_classifier", "top1_agreement"),
        ("char_lstm", "top1_agreement"),
        ("gpt", "top1_agreement"),
        ("seq2seq_transformer", "top1_agreement"),
        ("vit", "top1_agreement"),
        ("autoencoder", "psnr_db"),
        ("gcn", "top1_agreement"),
    ],
)
def test_zoo_family_through_pipeline(name: str, agreement: str, tmp_path: Path) -> None:
    ckpt = _checkpoint(name, tmp_path / f"{name}.safetensors")
    report = compress(ckpt, parse_recipe(RECIPE), tmp_path / "out").report
    by_name = {v["name"]: v for v in report["variants"]}
    assert by_name["onnxruntime-fp32"]["accepted"], by_name["onnxruntime-fp32"]["reason"]
    int8 = by_name["onnxruntime-int8"]["verification"]
    assert int8 is not None and agreement in int8 and f"min_{agreement}" in int8["limits"]
    verify = next(s for s in report["stages"] if s["name"] == "verify")["details"]
    assert ("min_agreement_note" in verify) == (agreement != "top1_agreement")
    if agreement == "psnr_db":  # INT8 of a trained-for-one-epoch autoencoder is far above 30 dB
        assert by_name["onnxruntime-int8"]["accepted"], by_name["onnxruntime-int8"]["reason"]
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_cli_zoo_train_then_compress_gan(monkeypatch, capsys, tmp_path: Path) -> None:
    """`effdl zoo train gan` then `effdl compress` with a recipe asking top1_agreement: the GAN task's PSNR applies."""
    import yaml

    def run(*args: str) -> tuple[int, str]:
        return run_cli(monkeypatch, capsys, *args)

    ckpt, recipe, out = tmp_path / "gan.safetensors", tmp_path / "r.yaml", tmp_path / "out"
    code, text = run("zoo", "train", "gan", "--tiny", "--epochs", "1", "-o", str(ckpt))
    assert code == 0, text
    recipe.write_text(yaml.safe_dump(RECIPE))
    code, text = run("compress", str(ckpt), "-r", str(recipe), "-o", str(out))
    assert code == 0, text
    import json

    report = json.loads((out / "report.json").read_text())
    int8 = next(v for v in report["variants"] if v["name"] == "onnxruntime-int8")
    assert int8["verification"]["limits"]["min_psnr_db"] == get_task("digits_gen").default_min_agreement["psnr_db"]
    assert int8["verification"]["psnr_db"] > 30.0


def test_agreement_limits_rule() -> None:
    recon, digits = get_task("digits_recon"), get_task("digits")
    image_keys = {"relative_error_pct": 1.0, "max_abs_error": 0.1, "psnr_db": 40.0}
    # The recipe names nothing the task gives: the task's default, with a note naming both.
    limits, note = agreement_limits(recon, {"top1_agreement": 97.0}, image_keys)
    assert limits == {"psnr_db": 30.0} and note and "top1_agreement" in note and "digits_recon" in note
    # The recipe's own limits win where they apply, even if only some do (a typo then refuses, visibly).
    assert agreement_limits(recon, {"psnr_db": 45.0}, image_keys) == ({"psnr_db": 45.0}, None)
    mixed = {"psnr_db": 45.0, "psnr": 1.0}
    assert agreement_limits(recon, mixed, image_keys) == (mixed, None)
    # No limits asked: none applied. A task whose default does not apply either: the recipe's stay (and refuse).
    assert agreement_limits(digits, {}, {"top1_agreement": 100.0}) == ({}, None)
    assert agreement_limits(digits, {"cosine": 0.99}, {}) == ({"cosine": 0.99}, None)


def test_cached_checkpoint_matches_only_the_default_training(tmp_path: Path) -> None:
    """bench/zoo.py reuses a checkpoint only while arch, config, task options, epochs and seed are the entry's."""
    import json

    from effdl.sources import load_checkpoint
    from effdl.zoo import get_model_entry
    from effdl.zoo.train import TrainResult, save_trained, trained_with_defaults

    entry = get_model_entry("gcn")
    task = get_task(entry.task, **entry.task_options)
    result = TrainResult(entry.build(), task, entry.config(), 50.0, 0.1, entry.train.epochs)
    path = save_trained(result, entry, tmp_path / "gcn.safetensors")
    assert trained_with_defaults(path, entry) and not trained_with_defaults(path, entry, seed=1)
    assert load_checkpoint(path).arch == "gcn"
    assert not trained_with_defaults(path, get_model_entry("graphsage"))
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    recipe = {**meta["trained"]["recipe"], "lr": meta["trained"]["recipe"]["lr"] * 2}
    for key, value in [
        ("epochs", entry.train.epochs + 1),
        ("recipe", recipe),
        ("config", {**entry.config(), "hidden": 7}),
    ]:
        changed = json.loads(json.dumps(meta))
        (changed["trained"] if key in ("epochs", "recipe") else changed)[key] = value
        side.write_text(json.dumps(changed))
        assert not trained_with_defaults(path, entry), key
    side.unlink()
    assert not trained_with_defaults(path, entry)
    tiny = TrainResult(entry.build(**entry.tiny), task, entry.config(**entry.tiny), 50.0, 0.1, entry.train.epochs)
    assert not trained_with_defaults(save_trained(tiny, entry, tmp_path / "tiny.safetensors"), entry)
