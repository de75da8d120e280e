"""Helpers shared by several test files (not collected: the name does not start with ``test_``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run ``effdl ARGS`` in this process: (exit code, stdout + stderr on one whitespace-normalised line)."""
    from effdl.cli import main

    monkeypatch.setattr(sys, "argv", ["effdl", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    cap = capsys.readouterr()
    return code, " ".join((cap.out + cap.err).split())


def wordpiece_tokenizer(folder: Path) -> list[str]:
    """Write a tiny BERT-style WordPiece ``tokenizer.json`` (letters, digits, punctuation) into ``folder``;
    returns its vocabulary ([CLS] is id 2, [SEP] id 3)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,;:'()-")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *[f"##{c}" for c in letters]]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.save(str(folder / "tokenizer.json"))
    return vocab


def tiny_bert_folder(folder: Path) -> Path:
    """Save a tiny random BERT (2 layers, hidden 32, seed 0) with its tokenizer into ``folder``, as Hugging
    Face does (config.json + model.safetensors + tokenizer.json)."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = wordpiece_tokenizer(folder)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(cfg).save_pretrained(str(folder), safe_serialization=True)
    return folder


def experts_in_graph(proto: object) -> int:
    """Experts of MoEfied layers present in an exported graph: each counted when its fc1 weight (an initializer
    under its torch name) and its fc2 product (a node in its ``experts.N/fc2`` scope; fc2 has no bias, so the
    exporter multiplies by a transposed, renamed copy of the weight) are both there."""
    import re

    graph = proto.graph  # type: ignore[attr-defined]
    used = {i for n in graph.node for i in n.input}
    fc1 = {
        m.groups()
        for i in graph.initializer
        if i.name in used and (m := re.match(r"(.+)\.experts\.(\d+)\.fc1\.weight$", i.name))
    }
    fc2 = {m.groups() for n in graph.node if (m := re.match(r"/(.+)/experts\.(\d+)/fc2/", n.name))}
    fc2 = {(layer.replace("/", "."), e) for layer, e in fc2}
    return len(fc1 & fc2)
