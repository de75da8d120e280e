"""Registry of reference architectures: a factory, its default size, a tiny size for tests, its task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from effdl.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from effdl.tasks import Task

#: ``train_fn(model, task, recipe, epochs, rng, progress)`` trains ``model`` in place on ``task``'s train
#: split; ``progress(epoch, epochs, loss)`` is called after every epoch (it may be None).
TrainFn = Callable[
    ["nn.Module", "Task", "TrainRecipe", int, "np.random.Generator", "Callable[[int, int, float], None] | None"], None
]


@dataclass(frozen=True)
class TrainRecipe:
    """How ``effdl zoo train`` trains an architecture at its default size (fits in ~3 min on 2 cores)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    grad_clip: float | None = None
    """Clip the gradients' global L2 norm to this value (None: no clipping)."""


@dataclass(frozen=True)
class ZooEntry:
    """One reference architecture."""

    name: str
    family: str
    task: str
    factory: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    tiny: dict[str, Any] = field(default_factory=dict)
    train: TrainRecipe = TrainRecipe()
    description: str = ""
    task_options: dict[str, Any] = field(default_factory=dict)
    train_fn: TrainFn | None = None
    """Custom training loop (e.g. adversarial training of a GAN); None uses the generic supervised loop."""

    def build(self, **overrides: Any) -> nn.Module:
        """Instantiate with the default config updated by ``overrides``."""
        return self.factory(**{**self.defaults, **overrides})

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {**self.defaults, **overrides}


def _load_builtin() -> None:
    from effdl.zoo import cnn, generative, gnn, moe, rnn, transformer  # noqa: F401  (register their models)


ZOO: Registry[ZooEntry] = Registry("zoo model", _load_builtin)


def register_model(
    name: str,
    *,
    family: str,
    task: str,
    defaults: dict[str, Any] | None = None,
    tiny: dict[str, Any] | None = None,
    train: TrainRecipe | None = None,
    description: str = "",
    task_options: dict[str, Any] | None = None,
    train_fn: TrainFn | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model factory in the zoo."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        ZOO.add(
            name,
            ZooEntry(
                name=name,
                family=family,
                task=task,
                factory=factory,
                defaults=dict(defaults or {}),
                tiny=dict(tiny or {}),
                train=train or TrainRecipe(),
                description=description or (factory.__doc__ or "").strip().splitlines()[0],
                task_options=dict(task_options or {}),
                train_fn=train_fn,
            ),
        )
        return factory

    return deco


def get_model_entry(name: str) -> ZooEntry:
    return ZOO.get(name)
