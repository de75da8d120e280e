"""``distill``: knowledge distillation from a teacher into the current model or a smaller zoo student.

Loss = ``(1 - alpha) * task.loss + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))``
(Hinton et al. 2015) on the first output, plus ``weight * MSE(proj(student_feature), teacher_feature)``
for each hint (FitNets, Romero et al. 2015): named layers of the student and teacher whose outputs are
matched, through a learned 1x1 projection when their widths differ (dropped after training).

The teacher is the original checkpoint (``ctx.teacher``) by default. With ``student: {arch, config}``
a freshly initialised zoo architecture replaces the model (distillation into a smaller network);
without it the stage's input model is the student (recovering accuracy after pruning or QAT).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from effdl.compress import register_stage
from effdl.compress.base import ModelArtifact, Stage, StageConfig, StageContext
from effdl.compress.finetune import (
    FinetuneConfig,
    copy_module,
    example_args,
    finetune,
    heldout_metric,
    macs_of,
    param_count,
)
from effdl.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn


class StudentSpec(StageConfig):
    """A zoo architecture to distill into (initialised from the stage's seed)."""

    arch: str = Field(description="Zoo model name (see `effdl zoo list`).")
    config: dict[str, Any] = Field(default_factory=dict, description="Overrides of the zoo model's default config.")


class HintSpec(StageConfig):
    """One feature hint: the output of ``student`` layer is matched to the output of ``teacher`` layer."""

    student: str = Field(description="Module name in the student (as in named_modules(), e.g. 'layers.1').")
    teacher: str = Field(description="Module name in the teacher.")
    weight: float = Field(1.0, gt=0, description="Weight of this hint's MSE in the loss.")


class DistillConfig(StageConfig):
    """Options of ``distill``."""

    temperature: float = Field(4.0, gt=0, description="Softmax temperature of the logit loss.")
    alpha: float = Field(0.7, ge=0, le=1, description="Weight of the distillation loss vs the task loss.")
    logit_loss: Literal["kl", "mse"] = Field("kl", description="kl (class logits) or mse (any output).")
    teacher: Literal["source", "input"] = Field(
        "source", description="source: the original checkpoint; input: this stage's input model (frozen copy)."
    )
    student: StudentSpec | None = Field(None, description="Distill into this zoo architecture instead of the input.")
    hints: list[HintSpec] = Field(default_factory=list, description="Feature (hint) distillation pairs.")
    finetune: FinetuneConfig = Field(
        default_factory=lambda: FinetuneConfig(epochs=2.0), description="Training budget of the distillation."
    )


def _first(y: Any) -> torch.Tensor:
    return y[0] if isinstance(y, tuple | list) else y


def _module(root: nn.Module, name: str, role: str) -> nn.Module:
    modules = dict(root.named_modules())
    if name not in modules:
        near = [n for n in modules if n and (name in n or n in name)][:8]
        raise InputError(
            f"distill.hints: the {role} has no module {name!r}",
            f"some of its module names: {near or [n for n in modules if n][:8]}",
        )
    return modules[name]


def logit_kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, kind: str) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` over the last axis (or MSE), averaged over all positions."""
    import torch.nn.functional as F

    if kind == "mse":
        return F.mse_loss(student, teacher)
    t = temperature
    s = F.log_softmax(student.reshape(-1, student.shape[-1]) / t, -1)
    p = F.log_softmax(teacher.reshape(-1, teacher.shape[-1]) / t, -1)
    return F.kl_div(s, p, reduction="batchmean", log_target=True) * t * t


class _Hint:
    """Captures the paired features on every forward pass and owns the projection between their widths."""

    def __init__(self, spec: HintSpec, s_mod: nn.Module, t_mod: nn.Module) -> None:
        self.spec = spec
        self.s_feat: torch.Tensor | None = None
        self.t_feat: torch.Tensor | None = None
        self.proj: nn.Module | None = None
        self.axis = -1
        self.handles = [
            s_mod.register_forward_hook(lambda _m, _i, o: setattr(self, "s_feat", _first(o))),
            t_mod.register_forward_hook(lambda _m, _i, o: setattr(self, "t_feat", _first(o))),
        ]
        self.conv1d = type(s_mod).__name__ in ("Conv1d", "BatchNorm1d")

    def build(self) -> dict[str, Any]:
        """Create the projection from the shapes seen on a first forward pass."""
        from torch import nn

        s, t = self.s_feat, self.t_feat
        assert s is not None and t is not None
        if s.ndim != t.ndim:
            raise InputError(f"distill.hints: {self.spec.student} gives rank {s.ndim}, {self.spec.teacher} {t.ndim}")
        self.axis = 1 if s.ndim >= 4 or (s.ndim == 3 and self.conv1d) else -1
        other_s = [d for i, d in enumerate(s.shape) if i not in (0, self.axis % s.ndim)]
        other_t = [d for i, d in enumerate(t.shape) if i not in (0, self.axis % t.ndim)]
        if other_s != other_t:
            raise InputError(
                f"distill.hints: {self.spec.student} {tuple(s.shape)} and {self.spec.teacher} {tuple(t.shape)} differ "
                "beyond the channel axis (only widths can differ)"
            )
        cs, ct = s.shape[self.axis], t.shape[self.axis]
        if cs != ct:
            if self.axis == 1 and s.ndim == 4:
                self.proj = nn.Conv2d(cs, ct, 1, bias=False)
            elif self.axis == 1 and s.ndim == 3:
                self.proj = nn.Conv1d(cs, ct, 1, bias=False)
            elif self.axis == 1:
                raise InputError(f"distill.hints: no projection for rank-{s.ndim} features of different widths")
            else:
                self.proj = nn.Linear(cs, ct, bias=False)
        return {
            "student": self.spec.student,
            "teacher": self.spec.teacher,
            "student_shape": list(s.shape[1:]),
            "teacher_shape": list(t.shape[1:]),
            "projection": None if self.proj is None else f"{type(self.proj).__name__} {cs} -> {ct}",
            "weight": self.spec.weight,
        }

    def loss(self) -> torch.Tensor:
        import torch.nn.functional as F

        assert self.s_feat is not None and self.t_feat is not None
        s = self.s_feat if self.proj is None else self.proj(self.s_feat)
        return self.spec.weight * F.mse_loss(s, self.t_feat.detach())

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@register_stage
class Distill(Stage):
    """Logit (and optional hint) distillation from the original model into the current or a smaller model."""

    name: ClassVar[str] = "distill"
    kind: ClassVar[Literal["torch", "onnx"]] = "torch"
    Config: ClassVar[type[StageConfig]] = DistillConfig
    default_output: ClassVar[str] = "fp32"
    summary: ClassVar[str] = "knowledge distillation (logits, optional feature hints) from the original model"

    def apply(self, model: ModelArtifact, ctx: StageContext, output: str) -> tuple[ModelArtifact, dict[str, Any]]:
        import copy

        import torch

        cfg: DistillConfig = self.config  # type: ignore[assignment]
        task = ctx.task
        if cfg.teacher == "source":
            if not isinstance(ctx.teacher, torch.nn.Module):
                raise InputError("distill: no torch teacher (the checkpoint is not a torch nn.Module)")
            teacher = copy.deepcopy(ctx.teacher)  # hooks and eval() never touch the pipeline's reference
        else:
            teacher = copy_module(model, self.name)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        if cfg.student is not None:
            from effdl.zoo import get_model_entry

            entry = get_model_entry(cfg.student.arch)
            torch.manual_seed(ctx.seed)
            try:
                student = entry.build(**cfg.student.config)
            except TypeError as e:
                raise InputError(f"distill.student.config: {cfg.student.arch} does not take {e}") from None
            student_desc: dict[str, Any] = {
                "arch": cfg.student.arch,
                "config": entry.config(**cfg.student.config),
                "init": "random",
            }
        else:
            student = copy_module(model, self.name)
            student_desc = {"from": model.name, "lineage": model.lineage}
        args = example_args(task, 2)
        with torch.no_grad():
            t_out, s_out = _first(teacher(*args)), _first(student.eval()(*args))
        if t_out.shape != s_out.shape:
            raise InputError(
                f"distill: student output {tuple(s_out.shape)} does not match the teacher's {tuple(t_out.shape)}"
            )
        hints = [
            _Hint(h, _module(student, h.student, "student"), _module(teacher, h.teacher, "teacher")) for h in cfg.hints
        ]
        try:
            hint_info: list[dict[str, Any]] = []
            if hints:
                with torch.no_grad():
                    teacher(*args), student(*args)
                hint_info = [h.build() for h in hints]
            proj_params = [p for h in hints if h.proj is not None for p in h.proj.parameters()]
            teacher_metric = heldout_metric(teacher, task)
            before_metric = heldout_metric(student, task) if cfg.student is None else None

            def loss_fn(module: nn.Module, inputs: list[torch.Tensor], targets: torch.Tensor | None) -> torch.Tensor:
                with torch.no_grad():
                    t_logits = _first(teacher(*inputs))
                out = module(*inputs)
                kd = logit_kd_loss(_first(out), t_logits, cfg.temperature, cfg.logit_loss)
                loss = cfg.alpha * kd
                if cfg.alpha < 1:
                    loss = loss + (1 - cfg.alpha) * task.loss(out, targets)  # type: ignore[arg-type]
                for h in hints:
                    loss = loss + h.loss()
                return loss

            ctx.say(f"distill: {'into ' + cfg.student.arch if cfg.student else 'recovering'}, {len(hints)} hints")
            ft = finetune(student, task, cfg.finetune, seed=ctx.seed, loss_fn=loss_fn, extra_params=proj_params)
        finally:
            for h in hints:
                h.remove()
        student.eval()
        after = heldout_metric(student, task)
        who = f"student {cfg.student.arch}" if cfg.student else "model"
        details = {
            "result": (
                f"{who} ({param_count(student):,} params) held-out {task.metric.name} "
                + (f"{before_metric:.2f} -> " if before_metric is not None else "")
                + f"{after:.2f}, teacher {teacher_metric:.2f}"
            ),
            "method": f"logit distillation ({cfg.logit_loss}, T={cfg.temperature}, alpha={cfg.alpha})"
            + (f" + {len(hints)} feature hints" if hints else ""),
            "teacher": {"which": cfg.teacher, "heldout_metric": teacher_metric, "parameters": param_count(teacher)},
            "student": {**student_desc, "parameters": param_count(student), "macs": macs_of(student, task)},
            "student_metric_before": before_metric,
            "hints": hint_info,
            "finetune": ft,
        }
        lineage = [*model.lineage, self.name] if cfg.student is None else [f"zoo:{cfg.student.arch}", self.name]
        return ModelArtifact(output, "torch", "fp32", module=student, lineage=lineage), details
