"""Token-sequence tasks: character-level text from CPython's own standard library, and synthetic sequences.

Token inputs are int64 arrays of shape ``(batch, length)``.
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

from effdl.errors import InputError
from effdl.tasks import register_task
from effdl.tasks.base import MetricSpec, Split, SplitName, Task
from effdl.tasks.metrics import accuracy, argmax_agreement, perplexity, token_cross_entropy

# Pure-Python standard-library modules whose docstrings make up the character corpus. Modules moved or
# split between CPython versions are simply skipped, so the corpus is fixed per CPython minor version.
STDLIB_DOC_FILES: tuple[str, ...] = (
    "argparse.py", "textwrap.py", "functools.py", "difflib.py", "string.py", "shutil.py", "subprocess.py",
    "tarfile.py", "random.py", "statistics.py", "fractions.py", "_pydecimal.py", "calendar.py", "heapq.py",
    "inspect.py", "typing.py", "dataclasses.py", "enum.py", "logging/__init__.py", "unittest/case.py",
    "email/message.py", "http/client.py", "urllib/parse.py", "pickle.py", "tokenize.py", "pprint.py",
    "configparser.py", "csv.py", "datetime.py", "collections/__init__.py", "json/__init__.py", "ftplib.py",
    "smtplib.py", "gettext.py", "locale.py", "ipaddress.py", "threading.py", "queue.py", "weakref.py",
    "contextlib.py", "abc.py", "zipfile.py", "os.py", "socket.py", "imaplib.py", "optparse.py",
    "doctest.py", "pydoc.py",
)  # fmt: skip

#: Character vocabulary: index 0 is newline, then printable ASCII 32..126; anything else maps to "?".
CHAR_VOCAB: str = "\n" + "".join(chr(c) for c in range(32, 127))
MIN_CORPUS_CHARS = 100_000


#: Parts of the standard library left out of :func:`stdlib_docstrings` when it reads every module: tests
#: (their docstrings describe test cases), IDLE, lib2to3 and installed third-party packages.
STDLIB_SKIP_PARTS: frozenset[str] = frozenset({"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages"})


def _docstrings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                docs.append(doc)
    return docs


def stdlib_docstrings(stdlib_dir: str | Path | None = None, every_module: bool = False) -> list[str]:
    """The docstrings (module, class, function) of :data:`STDLIB_DOC_FILES`, or of every pure-Python
    standard-library module (``every_module``, sorted by path, :data:`STDLIB_SKIP_PARTS` left out).

    Read from the running interpreter's standard-library directory with :mod:`ast`, so no module is
    imported and ``python -OO`` makes no difference; files that do not parse as UTF-8 Python are skipped.
    """
    root = Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
    if every_module:
        files = sorted(p for p in root.rglob("*.py") if not STDLIB_SKIP_PARTS & set(p.relative_to(root).parts))
    else:
        files = [root / rel for rel in STDLIB_DOC_FILES if (root / rel).is_file()]
    docs: list[str] = []
    for path in files:
        try:
            docs.extend(_docstrings(path))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            if not every_module:
                raise
    return docs


def stdlib_docstring_corpus(stdlib_dir: str | Path | None = None) -> str:
    """The docstrings of :data:`STDLIB_DOC_FILES` (see :func:`stdlib_docstrings`), cleaned and joined."""
    root = Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
    text = "\n\n".join(stdlib_docstrings(root))
    if len(text) < MIN_CORPUS_CHARS:
        raise InputError(
            f"the standard library at {root} yields only {len(text)} docstring characters "
            f"(need {MIN_CORPUS_CHARS}); is it a complete CPython install?"
        )
    return text


def encode_chars(text: str) -> np.ndarray:
    """Map text to :data:`CHAR_VOCAB` indices (int64); characters outside it become ``?``."""
    table = np.full(0x110000 if any(ord(c) > 255 for c in text) else 256, CHAR_VOCAB.index("?"), dtype=np.int64)
    for i, c in enumerate(CHAR_VOCAB):
        table[ord(c)] = i
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return table[codes]


def decode_chars(tokens: np.ndarray) -> str:
    """Inverse of :func:`encode_chars` (up to the ``?`` replacement)."""
    return "".join(CHAR_VOCAB[int(t)] for t in np.asarray(tokens).ravel())


@register_task
class StdlibText(Task):
    """Character-level language modelling on the docstrings of CPython's standard library.

    The corpus (:func:`stdlib_docstring_corpus`, ~0.5 M characters on CPython 3.11) is cut into
    non-overlapping windows of ``seq_len + 1`` characters (default 64 + 1); duplicate windows are dropped,
    the rest shuffled with ``seed`` and split into 100 calibration, 500 held-out and up to ``n_train``
    (default 4000) train windows. Input ``tokens`` is a window's first ``seq_len`` characters, the target
    the next character at every position. Metric: perplexity (lower is better) over held-out positions.
    """

    name: ClassVar[str] = "stdlib_text"
    metric: ClassVar[MetricSpec] = MetricSpec("perplexity", "", False)
    input_names: ClassVar[tuple[str, ...]] = ("tokens",)
    output_names: ClassVar[tuple[str, ...]] = ("logits",)
    vocab_size: ClassVar[int] = len(CHAR_VOCAB)

    def _make_splits(self) -> dict[SplitName, Split]:
        seq_len = int(self.options.get("seq_len", 64))
        n_train = int(self.options.get("n_train", 4000))
        ids = encode_chars(stdlib_docstring_corpus())
        n_win = len(ids) // (seq_len + 1)
        windows = ids[: n_win * (seq_len + 1)].reshape(n_win, seq_len + 1)
        _, first = np.unique(windows, axis=0, return_index=True)
        windows = windows[np.sort(first)]
        windows = windows[np.random.default_rng(self.seed).permutation(len(windows))]
        n_cal, n_held = 100, 500
        parts = {
            "calibration": windows[:n_cal],
            "heldout": windows[n_cal : n_cal + n_held],
            "train": windows[n_cal + n_held : n_cal + n_held + n_train],
        }
        return {
            k: Split({"tokens": np.ascontiguousarray(w[:, :-1])}, np.ascontiguousarray(w[:, 1:]))
            for k, w in parts.items()
        }  # type: ignore[misc]

    def score(self, outputs: list[np.ndarray], targets: np.ndarray | None) -> float:
        return perplexity(outputs[0], targets)

    def loss(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], targets: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return token_cross_entropy(outputs, targets)

    def agreement(self, reference: list[np.ndarray], outputs: list[np.ndarray]) -> dict[str, float]:
        """Top-1 (arg-max) agreement with the reference at every position, in percent (``top1_agreement``)."""
        return argmax_agreement(reference, outputs, "top1_agreement")


def unseen_rows(rows: np.ndarray, seen: set[bytes]) -> np.ndarray:
    """Boolean mask of the rows whose bytes are not in ``seen``; adds the kept rows' digests to ``seen``."""
    keep = np.zeros(len(rows), dtype=bool)
    for i, row in enumerate(rows):
        d = hashlib.sha1(np.ascontiguousarray(row).tobytes()).digest()
        if d not in seen:
            seen.add(d)
            keep[i] = True
    return keep


@register_task
class SeqMajority(Task):
    """Synthetic sequence classification: which of four marker tokens occurs most often?

    Sequences of ``length`` (default 32) tokens over a vocabulary of 16: tokens 1-4 are markers, 5-15
    filler (0 is never drawn). Each sequence holds 8-16 markers whose counts have a unique maximum; the
    label (0-3) is the most frequent marker. Needs counting over the whole sequence, so it exercises
    recurrence and attention alike. Splits: 200 calibration, 1000 held-out, ``n_train`` (default 8000)
    train, generated from independent ``seed`` streams with cross-split duplicates removed.
    """

    name: ClassVar[str] = "seq_majority"
    metric: ClassVar[MetricSpec] = MetricSpec("top1", "%", True)
    input_names: ClassVar[tuple[str, ...]] = ("tokens",)
    output_names: ClassVar[tuple[str, ...]] = ("logits",)
    vocab_size: ClassVar[int] = 16
    num_classes: ClassVar[int] = 4

    def _generate(self, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        tokens = np.empty((0, length), np.int64)
        labels = np.empty(0, np.int64)
        while len(tokens) < n:
            m = rng.integers(8, 17, 2 * n)
            counts = np.stack([rng.multinomial(k, [0.25] * 4) for k in m])
            top = counts.max(1, keepdims=True)
            ok = (counts == top).sum(1) == 1
            counts, m = counts[ok], m[ok]
            seq = rng.integers(5, self.vocab_size, (len(m), length))
            for i in range(len(m)):
                pos = rng.permutation(length)[: m[i]]
                seq[i, pos] = np.repeat(np.arange(1, 5), counts[i])
            tokens = np.concatenate([tokens, seq])
            labels = np.concatenate([labels, counts.argmax(1)])
        return tokens[:n], labels[:n].astype(np.int64)

    def _make_splits(self) -> dict[SplitName, Split]:
        length = int(self.options.get("length", 32))
        sizes = {"heldout": 1000, "calibration": 200, "train": int(self.options.get("n_train", 8000))}
        out: dict[SplitName, Split] = {}
        seen: set[bytes] = set()
        for i, (split, n) in enumerate(sizes.items()):
            tokens, labels = self._generate(n, length, np.random.default_rng([self.seed, 202, i]))
            keep = unseen_rows(tokens, seen)
            out[split] = Split({"tokens": tokens[keep]}, labels[keep])  # type: ignore[index]
        return out

    def score(self, outputs: list[np.ndarray], targets: np.ndarray | None) -> float:
        return accuracy(outputs[0], targets)


@register_task
class SeqReverse(Task):
    """Synthetic sequence-to-sequence: output the source token sequence reversed.

    ``src``: ``length`` (default 12) tokens drawn from 3..15 (vocabulary 16; 1 is BOS, 0 and 2 unused).
    ``tgt_in``: BOS followed by the reversed source without its last token (teacher forcing), so one
    forward pass scores every position; a deployed model decodes greedily by feeding its own outputs back.
    Target: the reversed source. Metric: token accuracy (percent of positions). Splits: 200 calibration,
    1000 held-out, ``n_train`` (default 10000) train, with cross-split duplicates removed.
    """

    name: ClassVar[str] = "seq_reverse"
    metric: ClassVar[MetricSpec] = MetricSpec("token_accuracy", "%", True)
    input_names: ClassVar[tuple[str, ...]] = ("src", "tgt_in")
    output_names: ClassVar[tuple[str, ...]] = ("logits",)
    vocab_size: ClassVar[int] = 16
    bos: ClassVar[int] = 1

    def _make_splits(self) -> dict[SplitName, Split]:
        length = int(self.options.get("length", 12))
        sizes = {"heldout": 1000, "calibration": 200, "train": int(self.options.get("n_train", 10000))}
        out: dict[SplitName, Split] = {}
        seen: set[bytes] = set()
        for i, (split, n) in enumerate(sizes.items()):
            rng = np.random.default_rng([self.seed, 303, i])
            src = rng.integers(3, self.vocab_size, (n, length)).astype(np.int64)
            src = src[unseen_rows(src, seen)]
            tgt = np.ascontiguousarray(src[:, ::-1])
            tgt_in = np.concatenate([np.full((len(src), 1), self.bos, np.int64), tgt[:, :-1]], 1)
            out[split] = Split({"src": src, "tgt_in": tgt_in}, tgt)  # type: ignore[index]
        return out

    def score(self, outputs: list[np.ndarray], targets: np.ndarray | None) -> float:
        return accuracy(outputs[0], targets)

    def loss(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], targets: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return token_cross_entropy(outputs, targets)

    def agreement(self, reference: list[np.ndarray], outputs: list[np.ndarray]) -> dict[str, float]:
        """Top-1 (arg-max) agreement with the reference at every position, in percent (``top1_agreement``)."""
        return argmax_agreement(reference, outputs, "top1_agreement")
