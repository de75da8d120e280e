"""Tasks: data + metric per problem. ``get_task(name)`` builds a registered task."""

from __future__ import annotations

from typing import Any

from effdl.registry import Registry
from effdl.tasks.base import SPLITS, MetricSpec, Split, Task


def _load_builtin() -> None:
    from effdl.tasks import generative, graph, sentences, text, vision  # noqa: F401  (registers their tasks)


TASKS: Registry[type[Task]] = Registry("task", _load_builtin)


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator registering a :class:`Task` subclass under ``cls.name``."""
    TASKS.add(cls.name, cls)
    return cls


def get_task(name: str, seed: int = 0, **options: Any) -> Task:
    """An instance of the registered task ``name``."""
    return TASKS.get(name)(seed=seed, options=options)


__all__ = ["SPLITS", "TASKS", "MetricSpec", "Split", "Task", "get_task", "register_task"]
