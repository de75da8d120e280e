"""ONNX Runtime backend (CPU execution provider; CUDA / TensorRT providers where onnxruntime-gpu is installed)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from effdl.backends.base import Backend, Compiled, TensorSpec, numpy_dtype_name
from effdl.errors import InputError

# device -> execution provider. "tensorrt" is ONNX Runtime's route to TensorRT: ORT partitions the graph,
# hands TensorRT what it supports and runs the rest on CUDA (needs onnxruntime-gpu built with TensorRT).
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


class OnnxRuntimeRunner:
    """An ``onnxruntime.InferenceSession`` behind the :class:`~effdl.backends.base.Runner` protocol.

    ``InferenceSession.run`` is thread-safe, so one runner serves concurrent callers.
    """

    def __init__(self, session: Any, info: dict[str, Any]) -> None:
        self.session = session
        self.inputs = [
            TensorSpec(i.name, numpy_dtype_name(i.type), tuple(d if isinstance(d, int) else None for d in i.shape))
            for i in session.get_inputs()
        ]
        self.outputs = [
            TensorSpec(o.name, numpy_dtype_name(o.type), tuple(d if isinstance(d, int) else None for d in o.shape))
            for o in session.get_outputs()
        ]
        self.info = info
        self._run = session.run

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._run(None, feeds)


class OnnxRuntimeBackend(Backend):
    """Runs the ONNX model itself; static INT8 QDQ models use ORT's integer kernels (VNNI/AMX where present)."""

    name: ClassVar[str] = "onnxruntime"
    module: ClassVar[str] = "onnxruntime"
    distribution: ClassVar[str] = "onnxruntime"
    install_hint: ClassVar[str] = "pip install onnxruntime  (or onnxruntime-gpu for CUDA)"
    devices: ClassVar[tuple[str, ...]] = ("cpu",)

    def compile(self, onnx_path: Path, out_dir: Path, name: str, options: dict[str, Any]) -> Compiled:
        import onnxruntime as ort

        src = Path(onnx_path)
        if src.parent.resolve() == Path(out_dir).resolve():
            dest = src  # already in the package: ORT runs the ONNX file itself, no second copy
        else:
            dest = Path(out_dir) / f"{name}.onnx"
            shutil.copyfile(src, dest)
        return Compiled(
            [dest.name], {"format": "onnx", "onnxruntime_version": ort.__version__, "options": dict(options)}
        )

    def load(
        self,
        root: Path,
        compiled: Compiled,
        *,
        device: str = "cpu",
        threads: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> OnnxRuntimeRunner:
        import onnxruntime as ort

        if device not in _PROVIDERS:
            raise InputError(f"onnxruntime backend: unknown device {device!r}; known: {', '.join(_PROVIDERS)}")
        provider = _PROVIDERS[device]
        if provider not in ort.get_available_providers():
            raise InputError(
                f"onnxruntime has no {provider} here (available: {', '.join(ort.get_available_providers())})",
                "install onnxruntime-gpu for CUDA",
            )
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        path = str(root / compiled.files[0])
        providers: list[Any] = [provider]
        if device == "tensorrt":
            from effdl.backends.tensorrt import ort_tensorrt_provider_options

            probe = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            shapes = [(i.name, tuple(d if isinstance(d, int) else -1 for d in i.shape)) for i in probe.get_inputs()]
            opts = {**compiled.meta.get("options", {}), **(options or {})}
            trt_opts = ort_tensorrt_provider_options(shapes, opts, root / "ort-tensorrt-cache")
            providers = [(provider, trt_opts), "CUDAExecutionProvider", "CPUExecutionProvider"]
        session = ort.InferenceSession(path, so, providers=providers)
        info = {
            "backend": self.name,
            "version": ort.__version__,
            "device": device,
            "provider": provider,
            "providers": session.get_providers(),
            "threads": threads,
        }
        return OnnxRuntimeRunner(session, info)
