"""Quantization-aware training (``qat``): fake-quantize Conv/Linear weights and inputs, fine-tune, export QDQ.

Each ``nn.Conv1d/2d`` and ``nn.Linear`` is wrapped: its weight goes through a symmetric INT8 fake-quant
(per output channel by default) and its input through an asymmetric UINT8 (or symmetric INT8) per-tensor
fake-quant whose range follows an exponential moving average of the batch min/max during training and is
frozen afterwards. Gradients pass straight through (``torch.fake_quantize_*`` ops' STE). The module is then
fine-tuned on the task's train split with ``task.loss`` (or, for tasks without labels, towards the FP32
teacher's outputs), and stays a plain torch module whose fake-quant ops export to ONNX as
``QuantizeLinear``/``DequantizeLinear`` pairs, so the pipeline's ordinary export yields a QDQ model that
ONNX Runtime and OpenVINO run in INT8.

Written with ``torch.fake_quantize_per_*_affine`` rather than ``torch.ao.quantization.prepare_qat``:
eager-mode ``prepare_qat`` needs QuantStub/DeQuantStub edits of the user's model and its modules export
less predictably with the dynamo exporter; these wrappers work on any module tree and export either way.
"""

from __future__ import annotations

import copy
import time
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from effdl.compress import register_stage
from effdl.compress.base import ModelArtifact, Stage, StageConfig, StageContext
from effdl.compress.overrides import REGEX_PREFIX
from effdl.errors import InputError


class QATConfig(StageConfig):
    """Options of the ``qat`` stage."""

    epochs: int = Field(2, ge=0, description="Fine-tuning epochs over the task's train split.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate.")
    batch_size: int = Field(64, ge=1, description="Training batch size.")
    per_channel: bool = Field(True, description="Per-output-channel weight scales.")
    symmetric_activations: bool = Field(False, description="INT8 symmetric activations (else UINT8 asymmetric).")
    calibration_batches: int = Field(4, ge=1, description="Batches run to initialise activation ranges.")
    momentum: float = Field(0.9, ge=0, lt=1, description="EMA momentum of activation min/max during training.")
    exclude: list[str] = Field(
        default_factory=list, description="Module names (exact or 're:' regex) left unquantized."
    )


def _qmodules() -> tuple[type, ...]:
    from torch import nn

    return (nn.Conv1d, nn.Conv2d, nn.Linear)


def _make_wrapper() -> type:
    import torch
    from torch import nn

    class FakeQuantWrapped(nn.Module):
        """A Conv/Linear whose input and weight are fake-quantized to INT8 (STE gradients)."""

        def __init__(self, inner: nn.Module, per_channel: bool, sym_act: bool, momentum: float) -> None:
            super().__init__()
            self.inner = inner
            self.per_channel, self.sym_act, self.momentum = per_channel, sym_act, momentum
            self.register_buffer("act_min", torch.tensor(float("inf")))
            self.register_buffer("act_max", torch.tensor(float("-inf")))
            self.observe = True
            self.frozen: tuple[float, int, int, int] | None = None  # python qparams once training is over

        def freeze(self) -> None:
            """Fix the activation range; forward then uses constant qparams (what exporters need)."""
            scale, zp, qmin, qmax = self._act_qparams()
            self.frozen = (float(scale), int(zp), qmin, qmax)
            self.observe = False
            with torch.no_grad():
                amax = (
                    self.inner.weight.abs().flatten(1).amax(1) if self.per_channel else self.inner.weight.abs().amax()
                )
                self.register_buffer("w_scale", torch.clamp(amax / 127.0, min=1e-8))
                self.register_buffer("w_zp", torch.zeros_like(self.w_scale, dtype=torch.int32))

        def _act_qparams(self) -> tuple[torch.Tensor, torch.Tensor, int, int]:
            lo = torch.clamp(self.act_min, max=0.0)
            hi = torch.clamp(self.act_max, min=0.0)
            if self.sym_act:
                scale = torch.clamp(torch.maximum(-lo, hi) / 127.0, min=1e-8)
                return scale.reshape(1), torch.zeros(1, dtype=torch.int32), -128, 127
            scale = torch.clamp((hi - lo) / 255.0, min=1e-8)
            zp = torch.clamp(torch.round(-lo / scale), 0, 255).to(torch.int32)
            return scale.reshape(1), zp.reshape(1), 0, 255

        def _weight_fq(self) -> torch.Tensor:
            w = self.inner.weight
            if self.frozen is not None and self.per_channel:  # constants, so the export holds no scale math
                return torch.fake_quantize_per_channel_affine(w, self.w_scale, self.w_zp, 0, -128, 127)
            if self.per_channel:
                amax = w.detach().abs().flatten(1).amax(1)
                scale = torch.clamp(amax / 127.0, min=1e-8)
                zp = torch.zeros_like(scale, dtype=torch.int32)
                return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, -128, 127)
            if self.frozen is not None:
                return torch.fake_quantize_per_tensor_affine(w, float(self.w_scale), 0, -128, 127)
            scale = torch.clamp(w.detach().abs().amax() / 127.0, min=1e-8).reshape(1)
            return torch.fake_quantize_per_tensor_affine(w, scale, torch.zeros(1, dtype=torch.int32), -128, 127)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.observe:
                with torch.no_grad():
                    mn, mx = x.detach().min(), x.detach().max()
                    if torch.isinf(self.act_min):
                        self.act_min.copy_(mn)
                        self.act_max.copy_(mx)
                    elif self.training:
                        self.act_min.mul_(self.momentum).add_((1 - self.momentum) * mn)
                        self.act_max.mul_(self.momentum).add_((1 - self.momentum) * mx)
                    else:  # calibration pass: widen to what is seen
                        self.act_min.copy_(torch.minimum(self.act_min, mn))
                        self.act_max.copy_(torch.maximum(self.act_max, mx))
            if self.frozen is not None:
                fs, fz, qmin, qmax = self.frozen
                xq = torch.fake_quantize_per_tensor_affine(x, fs, fz, qmin, qmax)
            else:
                scale, zp, qmin, qmax = self._act_qparams()
                xq = torch.fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax)
            w = self._weight_fq()
            inner = self.inner
            if isinstance(inner, nn.Linear):
                return nn.functional.linear(xq, w, inner.bias)
            return inner._conv_forward(xq, w, inner.bias)  # type: ignore[operator]

    return FakeQuantWrapped


def _excluded(name: str, patterns: list[str]) -> bool:
    import re

    for p in patterns:
        if p.startswith(REGEX_PREFIX):
            if re.fullmatch(p[len(REGEX_PREFIX) :], name):
                return True
        elif p == name:
            return True
    return False


def insert_fake_quant(module: Any, cfg: QATConfig) -> list[str]:
    """Wrap every Conv1d/Conv2d/Linear of ``module`` in place (except ``cfg.exclude``); returns their names."""
    wrapper = _make_wrapper()
    kinds = _qmodules()
    wrapped: list[str] = []
    for name, child in list(module.named_modules()):
        for cname, sub in list(child.named_children()):
            full = f"{name}.{cname}" if name else cname
            if isinstance(sub, kinds) and not isinstance(child, wrapper) and not _excluded(full, cfg.exclude):
                setattr(child, cname, wrapper(sub, cfg.per_channel, cfg.symmetric_activations, cfg.momentum))
                wrapped.append(full)
    return wrapped


def freeze_fake_quant(module: Any) -> None:
    """Freeze every wrapper's activation range (after training, before export)."""
    for m in module.modules():
        if hasattr(m, "freeze") and hasattr(m, "act_min"):
            m.freeze()


@register_stage
class QuantizationAwareTraining(Stage):
    """Fake-quant INT8 fine-tuning in torch; the export becomes a QDQ ONNX model."""

    name: ClassVar[str] = "qat"
    kind: ClassVar[Literal["torch", "onnx"]] = "torch"
    Config: ClassVar[type[StageConfig]] = QATConfig
    default_output: ClassVar[str] = "fp32"
    summary: ClassVar[str] = "quantization-aware training (fake-quant INT8 on Conv/Linear, exports QDQ)"

    def apply(self, model: ModelArtifact, ctx: StageContext, output: str) -> tuple[ModelArtifact, dict[str, Any]]:
        import torch

        cfg: QATConfig = self.config  # type: ignore[assignment]
        if model.kind != "torch" or model.module is None:
            raise InputError("qat works on a torch model; put it before the ONNX stages")
        start = time.perf_counter()
        module = copy.deepcopy(model.module)
        wrapped = insert_fake_quant(module, cfg)
        if not wrapped:
            raise InputError("qat: the model has no Conv1d/Conv2d/Linear layer to quantize (all excluded?)")
        task = ctx.task
        names = task.input_names
        teacher = ctx.teacher if ctx.teacher is not None else model.module

        # 1. Initialise activation ranges on the calibration split (eval mode: running min/max).
        module.eval()
        calib = task.split("calibration")
        with torch.no_grad():
            for b, (inputs, _) in enumerate(calib.batches(cfg.batch_size)):
                if b >= cfg.calibration_batches:
                    break
                module(*[torch.from_numpy(inputs[n]) for n in names])

        # 2. Fine-tune with fake quantization (EMA ranges), on labels or towards the teacher.
        data = task.split("train")
        if cfg.epochs and len(data) == 0:
            raise InputError(f"qat: task {task.name!r} has an empty train split")
        opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
        rng = np.random.default_rng(ctx.seed)
        torch.manual_seed(ctx.seed)
        steps, losses = 0, []
        distil = data.targets is None
        for _ in range(cfg.epochs):
            module.train()
            order = rng.permutation(len(data))
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                args = [torch.from_numpy(data.inputs[n][idx]) for n in names]
                if distil:
                    with torch.no_grad():
                        t = teacher(*args)
                    targets = t[0] if isinstance(t, tuple | list) else t
                else:
                    targets = torch.from_numpy(data.targets[idx])  # type: ignore[index]
                loss = task.loss(module(*args), targets)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                steps += 1
                if cfg.max_steps and steps >= cfg.max_steps:
                    break
            if cfg.max_steps and steps >= cfg.max_steps:
                break
        # 3. Freeze ranges: from here the module is a deterministic fake-quant model that exports QDQ.
        freeze_fake_quant(module)
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        details = {
            "method": "qat",
            "engine": "torch.fake_quantize_per_{channel,tensor}_affine (straight-through estimator)",
            "quantized_modules": len(wrapped),
            "modules": wrapped[:50],
            "steps": steps,
            "epochs": cfg.epochs,
            "loss": "distillation to the FP32 outputs" if distil else "task loss on labels",
            "first_loss": losses[0] if losses else None,
            "last_loss": float(np.mean(losses[-10:])) if losses else None,
            "per_channel": cfg.per_channel,
            "activation_type": "int8" if cfg.symmetric_activations else "uint8",
            "export": "fake-quant ops export as QuantizeLinear/DequantizeLinear (QDQ)",
            "seconds": round(time.perf_counter() - start, 3),
        }
        lineage = [*model.lineage, "qat"]
        return ModelArtifact(output, "torch", "int8", module=module, lineage=lineage), details
