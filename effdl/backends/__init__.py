"""Backend registry. Backends are imported only when asked for, so ``import effdl`` loads none."""

from __future__ import annotations

import importlib

from effdl.backends.base import Availability, Backend, Compiled, Runner, TensorSpec
from effdl.errors import BackendUnavailableError, UnknownNameError

# name -> "module:Class"; adding a backend is one file plus one line here.
BACKENDS: dict[str, str] = {
    "onnxruntime": "effdl.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "effdl.backends.openvino:OpenVinoBackend",
    "tensorrt": "effdl.backends.tensorrt:TensorRTBackend",
    "torch": "effdl.backends.torch:TorchBackend",
}


def backend_class(name: str) -> type[Backend]:
    """The class of backend ``name`` (its module is imported, its library is not)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise UnknownNameError("backend", name, list(BACKENDS)) from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def get_backend(name: str) -> Backend:
    """An instance of backend ``name``; raises with an install hint when its library is missing."""
    cls = backend_class(name)
    avail = cls.availability()
    if not avail.available:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {avail.reason}", avail.install_hint)
    return cls()


def availability() -> dict[str, Availability]:
    """Availability of every registered backend on this host."""
    return {name: backend_class(name).availability() for name in BACKENDS}


__all__ = [
    "BACKENDS",
    "Availability",
    "Backend",
    "Compiled",
    "Runner",
    "TensorSpec",
    "availability",
    "backend_class",
    "get_backend",
]
