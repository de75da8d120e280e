"""Parameter and MAC counts of a torch model on a task's example inputs."""

from __future__ import annotations

from typing import Any

import numpy as np

_RNN_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def count_params(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _rnn_macs(rnn: Any, x: Any) -> int:
    """Multiply-accumulates of an ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` on input ``x`` (gate matmuls only)."""
    gates = _RNN_GATES[type(rnn).__name__]
    steps_x_batch = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]
    dirs = 2 if rnn.bidirectional else 1
    total = 0
    for layer in range(rnn.num_layers):
        cin = rnn.input_size if layer == 0 else rnn.hidden_size * dirs
        total += dirs * gates * (cin + rnn.hidden_size) * rnn.hidden_size
    return int(total * steps_x_batch)


def count_macs(module: Any, example: dict[str, np.ndarray], input_names: tuple[str, ...]) -> int:
    """Multiply-accumulates of one forward pass, from torch's own FLOP counter (FLOPs / 2).

    torch's counter sees no matmuls inside the fused CPU LSTM kernel, so recurrent layers it reports as
    free are counted analytically (gate matrix products per time step).
    """
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    args = [torch.from_numpy(example[n]) for n in input_names]
    rnn_inputs: dict[str, Any] = {}

    def record(name: str) -> Any:
        def hook(mod: Any, inputs: tuple[Any, ...], output: Any) -> None:
            rnn_inputs.setdefault(name, inputs[0])

        return hook

    hooks = [
        sub.register_forward_hook(record(name))
        for name, sub in module.named_modules()
        if isinstance(sub, nn.LSTM | nn.GRU | nn.RNN)
    ]
    counter = FlopCounterMode(display=False)
    try:
        with torch.inference_mode(), counter:
            module(*args)
    finally:
        for h in hooks:
            h.remove()
    flops = counter.get_total_flops()
    per_module = counter.get_flop_counts()
    root = type(module).__name__
    for name, x in rnn_inputs.items():
        if not sum(per_module.get(f"{root}.{name}", {}).values()):
            flops += 2 * _rnn_macs(module.get_submodule(name), x)
    return int(flops // 2)
