"""Sentence embeddings: sentences from CPython's standard-library docstrings, tokenised by the model's own
tokenizer, scored by pair retrieval and compared with the FP32 reference by cosine similarity.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import ClassVar

import numpy as np

from effdl.errors import InputError
from effdl.tasks import register_task
from effdl.tasks.base import MetricSpec, Split, SplitName, Task

_SENTENCE_END = re.compile(r"(?<=[a-z0-9)][.!?])\s+(?=[A-Z])")
_CODEISH = re.compile(r"[<>{}\[\]=|`*_#]|\.\.\.|::|\(\)")


def docstring_sentence_pairs(min_words: int = 5, max_words: int = 40) -> list[tuple[str, str]]:
    """Pairs of adjacent prose sentences from the same docstring paragraph, first occurrence of each.

    Paragraphs with code-like characters are skipped, so the pairs are English prose; the order is the
    corpus order (fixed per CPython minor version).
    """
    from effdl.tasks.text import stdlib_docstring_corpus

    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for para in stdlib_docstring_corpus().split("\n\n"):
        text = " ".join(para.split())
        if _CODEISH.search(text):
            continue
        sents = [s for s in _SENTENCE_END.split(text) if min_words <= len(s.split()) <= max_words]
        for a, b in zip(sents, sents[1:], strict=False):
            if a not in seen and b not in seen:
                seen.update((a, b))
                pairs.append((a, b))
    return pairs


@functools.lru_cache(maxsize=4)
def stdlib_prose_sentences(min_words: int = 4, max_words: int = 60) -> tuple[str, ...]:
    """Every prose sentence (no code-like characters) of every standard-library module's docstrings, first
    occurrence of each, in corpus order: ~11,500 on CPython 3.11, unlabelled text for distillation."""
    from effdl.tasks.text import stdlib_docstrings

    out: list[str] = []
    seen: set[str] = set()
    for doc in stdlib_docstrings(every_module=True):
        for para in doc.split("\n\n"):
            for sent in _SENTENCE_END.split(" ".join(para.split())):
                if min_words <= len(sent.split()) <= max_words and not _CODEISH.search(sent) and sent not in seen:
                    seen.add(sent)
                    out.append(sent)
    return tuple(out)


@register_task
class SentenceSimilarity(Task):
    """Sentence embeddings of standard-library docstring sentences (for Hugging Face encoders).

    Options: ``tokenizer`` (required: a folder with ``tokenizer.json``, normally the model's own folder;
    a Hugging Face checkpoint folder sets it), ``seq_len`` (default 128: every input is padded or cut
    to it), ``train_sentences`` (default none: see below). Inputs ``input_ids`` and ``attention_mask``
    (int64), output ``sentence_embedding``.

    Splits (from :func:`docstring_sentence_pairs`, shuffled with ``seed``): ``heldout`` is 128 pairs
    interleaved (row ``2i`` and ``2i+1`` are adjacent sentences of one paragraph), ``calibration`` 100
    and ``train`` up to 1000 single sentences from other pairs (~360 on CPython 3.11). With
    ``train_sentences: N`` the train split continues with prose sentences from every standard-library
    module (:func:`stdlib_prose_sentences`, shuffled with ``seed``) up to N sentences in all, never a
    held-out or calibration sentence: unlabelled text for distillation, which the pairs alone starve.
    Metric ``pair_top1``: percent of held-out first sentences whose most cosine-similar second sentence
    (among all held-out pairs) is their own partner. Agreement ``cosine``: mean cosine similarity of each
    embedding with the FP32 reference's (1.0 = identical direction); this is what quantization must keep
    (e.g. >= 0.99).
    Training (QAT) has no labels: stages distil towards the reference embeddings.
    """

    name: ClassVar[str] = "sentence_similarity"
    metric: ClassVar[MetricSpec] = MetricSpec("pair_top1", "%", True)
    input_names: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask")
    output_names: ClassVar[tuple[str, ...]] = ("sentence_embedding",)
    default_min_agreement: ClassVar[dict[str, float]] = {"cosine": 0.99}
    n_heldout_pairs: ClassVar[int] = 128

    def _make_splits(self) -> dict[SplitName, Split]:
        from effdl.zoo.hf import load_tokenizer

        folder = self.options.get("tokenizer")
        if not folder:
            raise InputError(
                "task sentence_similarity needs the option `tokenizer` (a folder with tokenizer.json)",
                "pass the Hugging Face model folder as the checkpoint, or set task_options: {tokenizer: DIR}",
            )
        if not Path(folder).is_dir():
            raise InputError(f"task_options.tokenizer: {folder} is not a folder")
        seq_len = int(self.options.get("seq_len", 128))
        tok = load_tokenizer(folder, seq_len)
        pairs = docstring_sentence_pairs()
        order = np.random.default_rng(self.seed).permutation(len(pairs))
        n_held = self.n_heldout_pairs
        if len(pairs) < n_held + 150:
            raise InputError(f"only {len(pairs)} sentence pairs in the docstring corpus (need {n_held + 150})")
        held = [s for i in order[:n_held] for s in pairs[i]]
        rest = [s for i in order[n_held:] for s in pairs[i]]
        parts = {"heldout": held, "calibration": rest[:100], "train": rest[100:1100]}
        extra = self.options.get("train_sentences")
        if extra is not None:
            if not isinstance(extra, int) or isinstance(extra, bool) or extra < 1:
                raise InputError(f"task_options.train_sentences must be a positive integer, got {extra!r}")
            used = set(held) | set(rest[:100]) | set(parts["train"])
            more = [s for s in stdlib_prose_sentences() if s not in used]
            order = np.random.default_rng(self.seed + 1).permutation(len(more))
            parts["train"] = (parts["train"] + [more[i] for i in order])[:extra]

        def encode(sentences: list[str]) -> Split:
            enc = tok.encode_batch(sentences)
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            return Split({"input_ids": ids, "attention_mask": mask})

        return {k: encode(v) for k, v in parts.items()}  # type: ignore[misc]

    def score(self, outputs: list[np.ndarray], targets: np.ndarray | None) -> float:
        emb = _unit(outputs[0])
        n = len(emb) // 2
        if n == 0:
            return float("nan")
        first, second = emb[0 : 2 * n : 2], emb[1 : 2 * n : 2]
        hits = (first @ second.T).argmax(1) == np.arange(n)
        return float(100.0 * hits.mean())

    def agreement(self, reference: list[np.ndarray], outputs: list[np.ndarray]) -> dict[str, float]:
        """Mean (and worst) cosine similarity of each embedding with the reference's."""
        cos = np.sum(_unit(reference[0]) * _unit(outputs[0]), axis=-1)
        return {"cosine": float(cos.mean()), "cosine_min": float(cos.min())}

    def loss(self, outputs, targets):  # noqa: D102
        """Distillation loss: 1 - cosine similarity with target embeddings (the reference's)."""
        import torch.nn.functional as F

        emb = outputs[0] if isinstance(outputs, tuple | list) else outputs
        return (1.0 - F.cosine_similarity(emb, targets, dim=-1)).mean()


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
