"""Reference architectures of every family, each with a task to train and evaluate on."""

from effdl.zoo.registry import ZOO, TrainRecipe, ZooEntry, get_model_entry, register_model

__all__ = ["ZOO", "TrainRecipe", "ZooEntry", "get_model_entry", "register_model"]
