"""The CLI's messages and exit codes for good and bad input (one clear line, non-zero exit, no OUT/)."""

from __future__ import annotations

from pathlib import Path

from testutil import run_cli


def test_version(monkeypatch, capsys) -> None:
    from effdl import __version__

    code, out = run_cli(monkeypatch, capsys, "--version")
    assert code == 0 and __version__ in out


def test_backends_lists_both(monkeypatch, capsys) -> None:
    code, out = run_cli(monkeypatch, capsys, "backends")
    assert code == 0 and "onnxruntime" in out and "openvino" in out


def test_help_documents_options(monkeypatch, capsys) -> None:
    code, out = run_cli(monkeypatch, capsys, "compress", "--help")
    assert code == 0
    for opt in ("--recipe", "--output", "--arch", "--model", "--task", "--force"):
        assert opt in out


def test_missing_checkpoint(monkeypatch, capsys, tmp_path: Path) -> None:
    code, out = run_cli(
        monkeypatch, capsys, "compress", str(tmp_path / "no.safetensors"), "-r", "default", "-o", str(tmp_path / "out")
    )
    assert code == 2 and "error: checkpoint not found" in out
    assert not (tmp_path / "out").exists()


def test_corrupt_checkpoint(monkeypatch, capsys, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x07\x00\x00garbage")
    code, out = run_cli(monkeypatch, capsys, "compress", str(bad), "-r", "default", "-o", str(tmp_path / "out"))
    assert code == 2 and "not a readable safetensors file" in out and str(bad) in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]


def test_recipe_typo(monkeypatch, capsys, tmp_path: Path, lenet_ckpt: Path) -> None:
    r = tmp_path / "r.yaml"
    r.write_text("stages:\n  - stage: quantize\n    config: {calibration: minmax, sampels: 10}\n")
    code, out = run_cli(monkeypatch, capsys, "compress", str(lenet_ckpt), "-r", str(r), "-o", str(tmp_path / "o"))
    assert code == 2 and "stages.0.config.sampels: unknown key" in out and f"{r}:3" in out
    assert not (tmp_path / "o").exists()


def test_unknown_stage(monkeypatch, capsys, tmp_path: Path, lenet_ckpt: Path) -> None:
    r = tmp_path / "r.yaml"
    r.write_text("stages:\n  - stage: prune-everything\n")
    code, out = run_cli(monkeypatch, capsys, "compress", str(lenet_ckpt), "-r", str(r), "-o", str(tmp_path / "o"))
    assert code == 2 and "unknown stage 'prune-everything'" in out
    assert "known: " in out and "quantize" in out and "prune-structured" in out


def test_unknown_backend(monkeypatch, capsys, tmp_path: Path, lenet_ckpt: Path) -> None:
    r = tmp_path / "r.yaml"
    r.write_text("targets:\n  - backend: coreml\n")
    code, out = run_cli(monkeypatch, capsys, "compress", str(lenet_ckpt), "-r", str(r), "-o", str(tmp_path / "o"))
    assert code == 2 and "unknown backend 'coreml'" in out and "onnxruntime" in out and "openvino" in out


def test_missing_optional_backend_gives_install_hint(monkeypatch, capsys, tmp_path: Path, lenet_ckpt: Path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    code, out = run_cli(monkeypatch, capsys, "compress", str(lenet_ckpt), "-r", "default", "-o", str(tmp_path / "o"))
    assert code == 3 and "backend 'openvino' is unavailable" in out and "pip install openvino" in out
    assert not (tmp_path / "o").exists()


def test_unknown_arch(monkeypatch, capsys, tmp_path: Path) -> None:
    import torch

    from effdl.zoo import get_model_entry

    p = tmp_path / "w.pt"
    torch.save(get_model_entry("lenet5").build().state_dict(), p)
    code, out = run_cli(
        monkeypatch, capsys, "compress", str(p), "--arch", "lenet7", "-r", "default", "-o", str(tmp_path / "o")
    )
    assert code == 2 and "unknown zoo model 'lenet7'" in out and "lenet5" in out


def test_compress_end_to_end(monkeypatch, capsys, tmp_path: Path, lenet_ckpt: Path, fast_recipe: Path) -> None:
    out_dir = tmp_path / "o"
    code, out = run_cli(monkeypatch, capsys, "compress", str(lenet_ckpt), "-r", str(fast_recipe), "-o", str(out_dir))
    assert code == 0, out
    for name in ("torch-fp32", "onnxruntime-int8", "openvino-int8", "speedup", "report.html"):
        assert name in out
    assert (out_dir / "report.html").is_file()


def test_zoo_train_and_list(monkeypatch, capsys, tmp_path: Path) -> None:
    ck = tmp_path / "l.safetensors"
    code, out = run_cli(monkeypatch, capsys, "zoo", "train", "lenet5", "-o", str(ck), "--epochs", "1")
    assert code == 0 and ck.is_file() and ck.with_suffix(".json").is_file() and "held-out top1" in out
    code, out = run_cli(monkeypatch, capsys, "zoo", "train", "lenet5", "-o", str(tmp_path / "l.pt"))
    assert code == 2 and "must end in .safetensors" in out
    code, out = run_cli(monkeypatch, capsys, "zoo", "list", "--family", "cnn")
    assert code == 0 and "resnet8" in out and "lenet5" in out


def test_recipes_commands(monkeypatch, capsys, tmp_path: Path) -> None:
    code, out = run_cli(monkeypatch, capsys, "recipes", "list")
    assert code == 0 and "default" in out and "openvino-int8" in out and "torch-compile-fp32" in out
    code, out = run_cli(monkeypatch, capsys, "recipes", "stages")
    assert code == 0 and "quantize" in out and "calibration='minmax'" in out and "exclude=[]" in out
    bad = tmp_path / "r.yaml"
    bad.write_text("stages:\n  - stage: quantize\n    config: {samples: 0}\n")
    code, out = run_cli(monkeypatch, capsys, "recipes", "check", str(bad))
    assert code == 2 and "stages.0.config.samples" in out


def test_inspect_package(monkeypatch, capsys, tmp_path: Path, lenet_ckpt: Path) -> None:
    from effdl.pipeline import compress
    from effdl.recipe import parse_recipe

    compress(lenet_ckpt, parse_recipe({"benchmark": {"enabled": False}, "verify": {"samples": 50}}), tmp_path / "p")
    code, out = run_cli(monkeypatch, capsys, "inspect", str(tmp_path / "p"), "--verify")
    assert code == 0 and "onnxruntime-fp32" in out and "image['?', 1, 32, 32]:float32" in out
    assert "files match their sha256" in out
    (tmp_path / "p" / "models" / "fp32.onnx").write_bytes(b"x")
    code, out = run_cli(monkeypatch, capsys, "inspect", str(tmp_path / "p"), "--verify")
    assert code == 2 and "fp32.onnx" in out
