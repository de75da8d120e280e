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


def session_options(threads: int | None = None, *, flush_denormals: bool = True) -> Any:
    """The ``onnxruntime.SessionOptions`` every effdl session starts from.

    ``flush_denormals`` (default on) sets ONNX Runtime's ``session.set_denormal_as_zero``: float32 values below
    ~1.2e-38 are read and written as zero (the CPU's FTZ/DAZ modes) on the session's pool threads, and on the
    calling thread when this is the first ONNX Runtime session of the process (ORT applies it to that thread
    once). Why on: a masked attention Softmax (padding positions at -1e4 or the dtype's minimum) produces
    denormals for every masked score, and each costs a microcode assist: ORT's Softmax on a [1, 12, 128, 128]
    input with 108 of 128 keys masked takes ~10x longer (0.78 ms instead of 0.08 ms, one thread, Intel Xeon),
    which made all-MiniLM-L6-v2 INT8 ~1.5x slower with one thread. Results change only where a value falls
    below float32's normal range. Whether the calling thread flushes: :func:`denormals_flushed`.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
    so.add_session_config_entry("session.set_denormal_as_zero", "1" if flush_denormals else "0")
    return so


def cpu_session(model: str | Path | bytes, threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU provider with :func:`session_options` (a path or model bytes)."""
    import onnxruntime as ort

    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, session_options(threads), providers=["CPUExecutionProvider"])


def denormals_flushed() -> bool:
    """Whether the calling thread flushes float32 denormals to zero (FTZ): a product below FLT_MIN reads 0."""
    tiny = np.array([1e-38], dtype=np.float32)
    return bool((tiny * np.float32(0.25))[0] == 0)


def flush_denormals_option(options: dict[str, Any]) -> bool:
    """The ``flush_denormals`` backend option (default true), checked."""
    value = options.get("flush_denormals", True)
    if not isinstance(value, bool):
        raise InputError(f"onnxruntime option flush_denormals must be true or false, got {value!r}")
    return value


def denormals_note(flush: bool) -> str:
    """How the session treats float32 denormals, for run records (see :func:`session_options`)."""
    if not flush:
        return "kept (flush_denormals: false)"
    if denormals_flushed():
        return "flushed to zero (ORT's pool threads and the calling thread)"
    return (
        "flushed to zero on ORT's pool threads only: the calling thread keeps denormals (an earlier ONNX Runtime "
        "session of this process was made without set_denormal_as_zero)"
    )


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
        opts = {**compiled.meta.get("options", {}), **(options or {})}
        flush = flush_denormals_option(opts)
        so = session_options(threads, flush_denormals=flush)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.inter_op_num_threads = 1
        path = str(root / compiled.files[0])
        providers: list[Any] = [provider]
        if device == "tensorrt":
            from effdl.backends.tensorrt import ort_tensorrt_provider_options

            probe = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            shapes = [(i.name, tuple(d if isinstance(d, int) else -1 for d in i.shape)) for i in probe.get_inputs()]
            trt_build = {k: v for k, v in opts.items() if k != "flush_denormals"}
            trt_opts = ort_tensorrt_provider_options(shapes, trt_build, root / "ort-tensorrt-cache")
            providers = [(provider, trt_opts), "CUDAExecutionProvider", "CPUExecutionProvider"]
        session = ort.InferenceSession(path, so, providers=providers)
        info = {
            "backend": self.name,
            "version": ort.__version__,
            "device": device,
            "provider": provider,
            "providers": session.get_providers(),
            "threads": threads,
            "flush_denormals": flush,
            "denormals": denormals_note(flush),
        }
        return OnnxRuntimeRunner(session, info)
