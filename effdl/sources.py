"""Loading trained checkpoints safely into a torch model or an ONNX file (and writing zoo checkpoints).

Formats (chosen by suffix):

- ``.safetensors``: weights only; the architecture comes from effdl metadata embedded in the file or a
  sidecar ``<name>.json`` (written by ``effdl zoo train``), or from ``arch=`` / ``factory=``.
- ``.pt`` / ``.pth`` / ``.bin``: a state_dict read with ``torch.load(weights_only=True)``.
- ``.pt2``: a ``torch.export`` archive (``torch.export.load``; no pickled code is executed).
- ``.onnx``: used as is; torch stages are skipped.

Loading never executes code from the checkpoint. The only code run is a factory the user names
explicitly (``--model module:function``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from effdl.errors import CheckpointError, InputError

if TYPE_CHECKING:
    import torch

META_KEY = "effdl"
FORMAT_VERSION = 1
SUFFIXES = {
    ".safetensors": "safetensors",
    ".pt": "state_dict",
    ".pth": "state_dict",
    ".bin": "state_dict",
    ".pt2": "torch-export",
    ".onnx": "onnx",
}


@dataclass
class LoadedModel:
    """A checkpoint, loaded: a torch module (eval mode) or an ONNX file, plus what we know about it."""

    kind: Literal["torch", "onnx"]
    path: Path
    format: str
    sha256: str
    module: Any = None  # torch.nn.Module for kind == "torch"
    onnx_path: Path | None = None
    arch: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    task: str | None = None
    task_options: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "sha256": self.sha256,
            "kind": self.kind,
            "arch": self.arch,
            "config": self.config,
            "task": self.task,
        }


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def import_factory(spec: str) -> Any:
    """Resolve ``module:function`` (the user's explicit model factory)."""
    module, sep, func = spec.partition(":")
    if not sep or not module or not func:
        raise InputError(f"--model must look like 'package.module:function', got {spec!r}")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise InputError(f"cannot import model factory module {module!r}: {e}") from e
    try:
        return getattr(mod, func)
    except AttributeError:
        raise InputError(f"module {module!r} has no attribute {func!r} (from --model {spec})") from None


def _meta_from(path: Path, embedded: dict[str, str] | None) -> dict[str, Any]:
    if embedded and META_KEY in embedded:
        try:
            return json.loads(embedded[META_KEY])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: effdl metadata is not valid JSON ({e})") from e
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            return json.loads(sidecar.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{sidecar}: not valid JSON ({e})") from e
    return {}


def _build_module(path: Path, meta: dict[str, Any], arch: str | None, factory: str | None) -> tuple[Any, str | None]:
    if factory:
        model = import_factory(factory)()
        return model, None
    name = arch or meta.get("arch")
    if not name:
        raise CheckpointError(
            f"{path}: holds weights only and names no architecture",
            "pass --arch NAME (see `effdl zoo list`) or --model package.module:function",
        )
    from effdl.zoo import get_model_entry

    entry = get_model_entry(name)
    return entry.build(**meta.get("config", {})), name


def _load_state(module: Any, state: dict[str, Any], path: Path) -> None:
    import torch

    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{path}: not a state_dict of tensors (entry {bad[0]!r} is {type(state[bad[0]]).__name__})"
        )
    result = module.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the architecture: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )


def _from_meta(
    kind: Literal["torch", "onnx"],
    path: Path,
    fmt: str,
    digest: str,
    meta: dict[str, Any],
    task: str | None,
    *,
    arch: str | None,
    module: Any = None,
    onnx_path: Path | None = None,
) -> LoadedModel:
    """A :class:`LoadedModel` whose config, task and task options come from effdl metadata ``meta``."""
    return LoadedModel(
        kind,
        path,
        fmt,
        digest,
        module=module,
        onnx_path=onnx_path,
        arch=arch,
        config=meta.get("config", {}),
        task=task or meta.get("task"),
        task_options=meta.get("task_options", {}),
        meta=meta,
    )


def load_checkpoint(
    path: str | Path,
    *,
    arch: str | None = None,
    factory: str | None = None,
    task: str | None = None,
) -> LoadedModel:
    """Load ``path`` without executing code from it; see the module docstring for formats."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint not found: {path}")
    if path.is_dir():
        return _load_hf_folder(path, task)
    if not path.is_file():
        raise InputError(f"checkpoint is not a file: {path}")
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown checkpoint type {path.suffix!r}; known: {', '.join(sorted(SUFFIXES))}")
    digest = sha256_file(path)
    if fmt == "onnx":
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
            onnx.checker.check_model(proto)
        except Exception as e:
            raise CheckpointError(f"{path}: not a valid ONNX model ({type(e).__name__}: {str(e)[:200]})") from e
        props = {p.key: p.value for p in proto.metadata_props}
        meta = _meta_from(path, props)
        return _from_meta("onnx", path, fmt, digest, meta, task, arch=meta.get("arch"), onnx_path=path)

    import torch

    if fmt == "torch-export":
        try:
            extra = {"effdl.json": ""}
            ep = torch.export.load(str(path), extra_files=extra)
        except Exception as e:
            raise CheckpointError(
                f"{path}: not a readable torch.export archive ({type(e).__name__}: {str(e)[:200]})"
            ) from e
        meta = json.loads(extra["effdl.json"]) if extra.get("effdl.json") else _meta_from(path, None)
        module = ep.module()
        return _from_meta(
            "torch", path, fmt, digest, {**meta, "exported": ep}, task, arch=meta.get("arch"), module=module
        )

    if fmt == "safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                embedded = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
        meta = _meta_from(path, embedded)
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(
                f"{path}: cannot be read as a weights-only state_dict "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                "effdl never unpickles code from a checkpoint; save `model.state_dict()` or use safetensors",
            ) from e
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path}: expected a state_dict (a dict of tensors), found {type(obj).__name__}")
        state = obj
        meta = _meta_from(path, None)

    module, name = _build_module(path, meta, arch, factory)
    _load_state(module, state, path)
    module.eval()
    task_name = task or meta.get("task")
    if task_name is None and name is not None:
        from effdl.zoo import get_model_entry

        task_name = get_model_entry(name).task
    return _from_meta("torch", path, fmt, digest, meta, task_name, arch=name, module=module)


# --- Hugging Face model folders (config.json + *.safetensors): owned by effdl/zoo/hf.py -----------------
def _load_hf_folder(path: Path, task: str | None) -> LoadedModel:
    """A Hugging Face folder as a sentence encoder (``input_ids``, ``attention_mask`` -> embedding)."""
    from effdl.zoo import hf

    if not hf.is_hf_folder(path):
        raise InputError(
            f"checkpoint is not a file: {path} (a folder must be a Hugging Face model folder with config.json)"
        )
    h = hashlib.sha256()
    for f in [path / "config.json", *hf.weight_files(path)]:
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    info = hf.folder_info(path)
    module = hf.build_sentence_encoder(path)
    return LoadedModel(
        "torch",
        path,
        "hf-folder",
        h.hexdigest(),
        module=module,
        arch=f"hf-{info['model_type']}",
        config=info,
        task=task or hf.HF_TASK,
        task_options={"tokenizer": str(path.resolve()), "seq_len": 128},
        meta={},
    )


def save_checkpoint(
    module: torch.nn.Module,
    path: str | Path,
    *,
    arch: str,
    config: dict[str, Any],
    task: str,
    task_options: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``module``'s weights as safetensors with effdl metadata embedded and in a sidecar JSON."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(f"zoo checkpoints are safetensors files; got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "config": config,
        "task": task,
        "task_options": task_options or {},
        **(extra or {}),
    }
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    tmp = path.with_suffix(".safetensors.tmp")
    save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta)})
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return path
