"""Recurrent reference architectures: LSTM/GRU sequence classifiers and a character-level LSTM language model.

They use ``nn.LSTM`` / ``nn.GRU``, which both ONNX exporters turn into the ONNX ``LSTM`` / ``GRU`` ops.
"""

from __future__ import annotations

import torch
from torch import nn

from effdl.tasks.text import CHAR_VOCAB
from effdl.zoo.registry import TrainRecipe, register_model


class RNNClassifier(nn.Module):
    """Token embedding, a stacked LSTM or GRU, and a linear head on the final time step's output."""

    def __init__(
        self,
        cell: str = "lstm",
        vocab_size: int = 16,
        embed_dim: int = 32,
        hidden: int = 64,
        layers: int = 1,
        num_classes: int = 4,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}.get(cell)
        if rnn_cls is None:
            raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.rnn = rnn_cls(embed_dim, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.hidden = hidden
        self.bidirectional = bidirectional
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, tokens):  # noqa: D102
        out, _ = self.rnn(self.embed(tokens))
        if self.bidirectional:
            # The forward direction has read everything at the last step, the backward one at the first.
            last = out[:, -1, : self.hidden]
            first = out[:, 0, self.hidden :]
            return self.fc(torch.cat([last, first], -1))
        return self.fc(out[:, -1])


@register_model(
    "lstm_classifier",
    family="rnn",
    task="seq_majority",
    defaults={"vocab_size": 16, "embed_dim": 32, "hidden": 64, "layers": 1, "num_classes": 4, "bidirectional": False},
    tiny={"embed_dim": 8, "hidden": 8},
    train=TrainRecipe(epochs=8, lr=1e-2, batch_size=64, grad_clip=1.0),
)
def lstm_classifier(
    vocab_size: int = 16,
    embed_dim: int = 32,
    hidden: int = 64,
    layers: int = 1,
    num_classes: int = 4,
    bidirectional: bool = False,
) -> nn.Module:
    """LSTM sequence classifier (embedding, LSTM, linear head on the last step)."""
    return RNNClassifier("lstm", vocab_size, embed_dim, hidden, layers, num_classes, bidirectional)


@register_model(
    "gru_classifier",
    family="rnn",
    task="seq_majority",
    defaults={"vocab_size": 16, "embed_dim": 32, "hidden": 64, "layers": 1, "num_classes": 4, "bidirectional": False},
    tiny={"embed_dim": 8, "hidden": 8},
    train=TrainRecipe(epochs=8, lr=1e-2, batch_size=64, grad_clip=1.0),
)
def gru_classifier(
    vocab_size: int = 16,
    embed_dim: int = 32,
    hidden: int = 64,
    layers: int = 1,
    num_classes: int = 4,
    bidirectional: bool = False,
) -> nn.Module:
    """GRU sequence classifier (embedding, GRU, linear head on the last step)."""
    return RNNClassifier("gru", vocab_size, embed_dim, hidden, layers, num_classes, bidirectional)


class CharLSTM(nn.Module):
    """Character-level LSTM language model: next-character logits at every position."""

    def __init__(
        self, vocab_size: int = len(CHAR_VOCAB), embed_dim: int = 64, hidden: int = 256, layers: int = 1
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.rnn = nn.LSTM(embed_dim, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, tokens):  # noqa: D102
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out)


@register_model(
    "char_lstm",
    family="rnn",
    task="stdlib_text",
    defaults={"vocab_size": len(CHAR_VOCAB), "embed_dim": 64, "hidden": 256, "layers": 1},
    tiny={"embed_dim": 8, "hidden": 16},
    train=TrainRecipe(epochs=6, lr=5e-3, batch_size=64, grad_clip=1.0),
)
def char_lstm(vocab_size: int = len(CHAR_VOCAB), embed_dim: int = 64, hidden: int = 256, layers: int = 1) -> nn.Module:
    """Character-level LSTM language model on standard-library docstrings."""
    return CharLSTM(vocab_size, embed_dim, hidden, layers)
