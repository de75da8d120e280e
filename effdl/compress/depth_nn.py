"""The torch module that stands in for a removed residual block (imported by ``prune-depth`` when it runs)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class SkippedBlock(nn.Module):
    """A residual block removed by ``prune-depth``: the identity, or ``ReLU(shortcut(x))`` for a block whose
    shortcut is a projection (a ResNet block that changes width or stride). Extra arguments (e.g. a decoder
    block's context) are ignored."""

    def __init__(self, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.shortcut = shortcut
        self.relu = nn.ReLU() if shortcut is not None else None

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:  # noqa: D102
        if self.shortcut is None or self.relu is None:
            return x
        return self.relu(self.shortcut(x))
