"""The Backend interface: compile an ONNX model for a runtime, and load what was compiled.

One file per backend (``onnxruntime.py``, ``openvino.py``, ``tensorrt.py`` ...), imported only when
that backend is used. A backend's module must not import torch: ``effdl.runtime`` loads packages
through these same classes on devices that have only numpy and one inference runtime.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from effdl.errors import InputError


@dataclass(frozen=True)
class Availability:
    """Whether a backend can be used here, and if not, why and how to fix it."""

    available: bool
    version: str | None = None
    reason: str = ""
    install_hint: str | None = None
    devices: tuple[str, ...] = ()


@dataclass
class Compiled:
    """What :meth:`Backend.compile` wrote: file names relative to the output folder, and metadata.

    ``meta`` records what the runtime needs to load the files again (and what it ran: the backend
    version, the precision that executes, the device it was built for).
    """

    files: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type (numpy dtype name) and shape of one input or output; ``None`` is dynamic."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(d["name"], d["dtype"], tuple(d["shape"]))


class Runner(Protocol):
    """A loaded model: numpy arrays by input name in, numpy arrays in output order out."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    info: dict[str, Any]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


class Backend(ABC):
    """A deployment runtime. Subclasses are registered in :mod:`effdl.backends` by name."""

    name: ClassVar[str]
    module: ClassVar[str]  # the Python module the backend needs, e.g. "onnxruntime"
    distribution: ClassVar[str]  # the PyPI distribution that provides it
    install_hint: ClassVar[str]
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    # What compile() starts from: "onnx" (compile(onnx_path, ...)) or "torch" (the backend's compile_torch).
    source: ClassVar[str] = "onnx"

    @classmethod
    def availability(cls) -> Availability:
        """Cheap check (no heavy import) whether the backend's library is installed."""
        if importlib.util.find_spec(cls.module) is None:
            return Availability(False, None, f"Python package {cls.module!r} is not installed", cls.install_hint)
        try:
            version = importlib.metadata.version(cls.distribution)
        except importlib.metadata.PackageNotFoundError:
            version = None
        return Availability(True, version, "", None, cls.devices)

    @abstractmethod
    def compile(self, onnx_path: Path, out_dir: Path, name: str, options: dict[str, Any]) -> Compiled:
        """Turn an ONNX model into this backend's deployable files inside ``out_dir``."""

    @abstractmethod
    def load(
        self,
        root: Path,
        compiled: Compiled,
        *,
        device: str = "cpu",
        threads: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> Runner:
        """Load compiled files (relative to ``root``) into a runner."""


def numpy_dtype_name(type_str: str) -> str:
    """Map ONNX Runtime / OpenVINO element type names to numpy dtype names."""
    t = type_str.lower().replace("tensor(", "").replace(")", "")
    return {
        "float": "float32",
        "f32": "float32",
        "float16": "float16",
        "f16": "float16",
        "double": "float64",
        "f64": "float64",
        "int64": "int64",
        "i64": "int64",
        "int32": "int32",
        "i32": "int32",
        "int8": "int8",
        "i8": "int8",
        "uint8": "uint8",
        "u8": "uint8",
        "bool": "bool",
        "boolean": "bool",
    }.get(t, t)


def check_feeds(inputs: list[TensorSpec], feeds: dict[str, np.ndarray], who: str) -> None:
    """Raise :class:`InputError` naming the tensor when feeds miss an input, add one, or mismatch dtype/shape."""
    names = [s.name for s in inputs]
    missing = [n for n in names if n not in feeds]
    extra = sorted(set(feeds) - set(names))
    if missing or extra:
        raise InputError(
            f"{who}: inputs must be exactly {', '.join(names)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(extra)}" if extra else "")
        )
    for spec in inputs:
        a = feeds[spec.name]
        if not isinstance(a, np.ndarray):
            raise InputError(f"{who}: input {spec.name!r} must be a numpy array, got {type(a).__name__}")
        if a.dtype.name != spec.dtype:
            raise InputError(f"{who}: input {spec.name!r} has dtype {a.dtype.name}, expected {spec.dtype}")
        if a.ndim != len(spec.shape) or any(
            isinstance(d, int) and d != s for d, s in zip(spec.shape, a.shape, strict=False)
        ):
            raise InputError(f"{who}: input {spec.name!r} has shape {list(a.shape)}, expected {list(spec.shape)}")
