"""Registry of reference architectures: a factory, its default size, a tiny size for tests, its task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from effdl.registry import Registry

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class TrainRecipe:
    """How ``effdl zoo train`` trains an architecture at its default size (fits in ~3 min on 2 cores)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"


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

    def build(self, **overrides: Any) -> nn.Module:
        """Instantiate with the default config updated by ``overrides``."""
        return self.factory(**{**self.defaults, **overrides})

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {**self.defaults, **overrides}


def _load_builtin() -> None:
    from effdl.zoo import cnn  # noqa: F401


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
            ),
        )
        return factory

    return deco


def get_model_entry(name: str) -> ZooEntry:
    return ZOO.get(name)
