import pickle
from pathlib import Path

import pytest
import torch

from effdl.errors import CheckpointError, InputError, UnknownNameError
from effdl.sources import load_checkpoint, save_checkpoint
from effdl.zoo import get_model_entry


@pytest.fixture()
def lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return get_model_entry("lenet5").build().eval()


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-6)


def test_safetensors_round_trip_with_embedded_metadata(tmp_path: Path, lenet: torch.nn.Module) -> None:
    p = save_checkpoint(lenet, tmp_path / "m.safetensors", arch="lenet5", config={}, task="digits")
    assert p.with_suffix(".json").is_file()
    p.with_suffix(".json").unlink()  # metadata embedded in the file is enough
    lm = load_checkpoint(p)
    assert lm.kind == "torch" and lm.arch == "lenet5" and lm.task == "digits" and len(lm.sha256) == 64
    assert _same(lenet, lm.module)


def test_state_dict_needs_an_architecture(tmp_path: Path, lenet: torch.nn.Module) -> None:
    p = tmp_path / "m.pt"
    torch.save(lenet.state_dict(), p)
    with pytest.raises(CheckpointError, match="names no architecture"):
        load_checkpoint(p)
    lm = load_checkpoint(p, arch="lenet5")
    assert lm.task == "digits" and _same(lenet, lm.module)


def test_state_dict_with_wrong_architecture(tmp_path: Path, lenet: torch.nn.Module) -> None:
    p = tmp_path / "m.pt"
    torch.save(lenet.state_dict(), p)
    with pytest.raises(CheckpointError, match="do not match the architecture"):
        load_checkpoint(p, arch="resnet8")


def test_unknown_arch(tmp_path: Path, lenet: torch.nn.Module) -> None:
    p = tmp_path / "m.pt"
    torch.save(lenet.state_dict(), p)
    with pytest.raises(UnknownNameError, match="unknown zoo model 'lenet6'.*lenet5"):
        load_checkpoint(p, arch="lenet6")


class Evil:
    def __reduce__(self):  # would run code if unpickled
        return (print, ("pwned",))


def test_pickled_code_is_never_executed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "evil.pt"
    with open(p, "wb") as f:
        pickle.dump({"w": Evil()}, f)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(p, arch="lenet5")
    assert "pwned" not in capsys.readouterr().out


def test_full_module_pickle_is_refused(tmp_path: Path, lenet: torch.nn.Module) -> None:
    p = tmp_path / "full.pt"
    torch.save(lenet, p)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(p, arch="lenet5")


def test_corrupt_safetensors(tmp_path: Path, lenet: torch.nn.Module) -> None:
    p = save_checkpoint(lenet, tmp_path / "m.safetensors", arch="lenet5", config={}, task="digits")
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(p)


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    (tmp_path / "m.h5").write_bytes(b"x")
    with pytest.raises(InputError, match="unknown checkpoint type '.h5'"):
        load_checkpoint(tmp_path / "m.h5")
    with pytest.raises(InputError, match="not a file"):
        load_checkpoint(tmp_path)


def test_torch_export_archive(tmp_path: Path, lenet: torch.nn.Module) -> None:
    ep = torch.export.export(lenet, (torch.randn(2, 1, 32, 32),))
    p = tmp_path / "m.pt2"
    torch.export.save(ep, p)
    lm = load_checkpoint(p, task="digits")
    assert lm.kind == "torch" and lm.format == "torch-export" and lm.task == "digits"
    assert _same(lenet, lm.module)


def test_corrupt_pt2(tmp_path: Path) -> None:
    p = tmp_path / "m.pt2"
    p.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="torch.export archive"):
        load_checkpoint(p)


def test_onnx_file_and_corrupt_onnx(tmp_path: Path, lenet: torch.nn.Module) -> None:
    p = tmp_path / "m.onnx"
    torch.onnx.export(lenet, (torch.randn(1, 1, 32, 32),), str(p), input_names=["image"], dynamo=False)
    lm = load_checkpoint(p, task="digits")
    assert lm.kind == "onnx" and lm.onnx_path == p and lm.task == "digits"
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a valid ONNX model"):
        load_checkpoint(bad)


def test_user_factory(tmp_path: Path, lenet: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mymodels.py").write_text(
        "from effdl.zoo import get_model_entry\n\ndef make():\n    return get_model_entry('lenet5').build()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    p = tmp_path / "w.pt"
    torch.save(lenet.state_dict(), p)
    lm = load_checkpoint(p, factory="mymodels:make", task="digits")
    assert _same(lenet, lm.module)
    with pytest.raises(InputError, match="has no attribute 'nope'"):
        load_checkpoint(p, factory="mymodels:nope")
    with pytest.raises(InputError, match="package.module:function"):
        load_checkpoint(p, factory="mymodels")
