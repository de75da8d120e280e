"""Parameter and MAC counts of a torch model on a task's example inputs."""

from __future__ import annotations

from typing import Any

import numpy as np


def count_params(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def count_macs(module: Any, example: dict[str, np.ndarray], input_names: tuple[str, ...]) -> int:
    """Multiply-accumulates of one forward pass, from torch's own FLOP counter (FLOPs / 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    args = [torch.from_numpy(example[n]) for n in input_names]
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(*args)
    return int(counter.get_total_flops() // 2)
