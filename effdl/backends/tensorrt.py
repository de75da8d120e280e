"""NVIDIA TensorRT backend: ONNX -> serialized TensorRT engine (``.engine``), run with ``execute_async_v3``.

Build (:meth:`TensorRTBackend.compile`), written against TensorRT 10's Python API:

* ``trt.Builder`` -> ``create_network(0)`` (explicit batch is the only mode in TensorRT 10) ->
  ``trt.OnnxParser.parse_from_file``; parser failures are reported with every parser error (node,
  operator, code, description) and the builder's own error log.
* ``IBuilderConfig`` flags from the ``precision`` option: ``fp32`` (TF32 cleared, so FP32 means FP32),
  ``tf32``, ``fp16``, ``bf16``, or ``int8`` for explicitly quantized (QDQ) models. INT8 needs Q/DQ
  nodes in the graph: effdl does not use TensorRT's implicit calibration (deprecated in TensorRT 10).
  ``sparse_weights: true`` sets ``SPARSE_WEIGHTS`` (2:4 structured-sparse kernels where the weights
  have the pattern and the GPU has sparse tensor cores).
* one optimization profile: every dynamic leading dimension (the batch) gets
  ``min_batch``/``opt_batch``/``max_batch`` (defaults 1/1/64); other dynamic dimensions need explicit
  ``shapes: {input: {min: [...], opt: [...], max: [...]}}``.
* a timing cache file in the output folder (``tensorrt.timing.cache``, read before and written after
  each build, so the variants of one package and rebuilds share tactic timings).

The engine's metadata records the TensorRT version, GPU name and compute capability it was built for;
:meth:`TensorRTBackend.load` refuses an engine built for another TensorRT version or another GPU before
handing it to TensorRT (whose own failure is an opaque deserialization error).

Run: ``trt.Runtime.deserialize_cuda_engine``, one execution context, torch CUDA tensors as device
buffers (``set_tensor_address``) and a dedicated CUDA stream (``execute_async_v3``). The runner therefore
needs a CUDA build of torch next to TensorRT.

Nothing here could be exercised on the machines effdl is developed on (no GPU, no TensorRT); the pure
parts (options, profiles, flags, compatibility checks, GPU probing) are unit-tested without TensorRT.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from effdl.backends.base import Availability, Backend, Compiled, TensorSpec, check_feeds
from effdl.errors import BackendUnavailableError, InputError

INSTALL_HINT = (
    "pip install 'effdl[tensorrt]'  (NVIDIA's TensorRT 10 wheels: Linux x86_64/aarch64 with an NVIDIA driver; "
    "on Jetson use the JetPack build); the runner also needs a CUDA build of torch"
)
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")
TIMING_CACHE = "tensorrt.timing.cache"
_BUILD_KEYS = {
    "precision",
    "fp16",
    "sparse_weights",
    "min_batch",
    "opt_batch",
    "max_batch",
    "shapes",
    "workspace_mb",
    "timing_cache",
    "optimization_level",
    "hardware_compatibility",
    "version_compatible",
}
_LOAD_KEYS = {"allow_other_gpu"}
_HW_COMPAT = ("none", "ampere_plus")
# The distributions that provide the ``tensorrt`` module: the pip meta-package, the CUDA-12/13 bindings, apt/JetPack.
_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu12", "tensorrt-cu12-bindings", "tensorrt-cu13", "tensorrt-cu13-bindings")


# --- GPU probing through the CUDA driver API ---------------------------------------------------------


@dataclass(frozen=True)
class GpuIdentity:
    """Name and compute capability (``"8.9"``) of one CUDA device."""

    index: int
    name: str
    compute_capability: str


def _libcuda() -> Any:
    """The CUDA driver library, or a string saying why it cannot be loaded.

    effdl talks to the driver API through ctypes (cuInit, cuDeviceGetCount, cuDeviceGetName,
    cuDeviceGetAttribute) because that stable C ABI is present wherever an NVIDIA driver is, costs no
    heavy import, and works the same on Jetson; no CUDA Python binding is a dependency of effdl.
    """
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return "the CUDA driver library (libcuda.so.1) is not found: no NVIDIA driver on this host"


def cuda_gpu_count(lib: Any = None) -> tuple[int, str]:
    """Number of CUDA devices the driver sees, and why it is zero when it is."""
    lib = _libcuda() if lib is None else lib
    if isinstance(lib, str):
        return 0, lib
    rc = lib.cuInit(0)
    if rc != 0:
        return 0, f"cuInit failed with CUDA driver error {rc} (no usable NVIDIA GPU or driver)"
    n = ctypes.c_int(0)
    rc = lib.cuDeviceGetCount(ctypes.byref(n))
    if rc != 0:
        return 0, f"cuDeviceGetCount failed with CUDA driver error {rc}"
    return (n.value, "") if n.value > 0 else (0, "the CUDA driver reports no GPU")


def cuda_gpu_identity(index: int = 0, lib: Any = None) -> GpuIdentity:
    """Name and compute capability of CUDA device ``index``; raises :class:`BackendUnavailableError` without one."""
    count, reason = cuda_gpu_count(lib)
    lib = _libcuda() if lib is None else lib
    if count == 0:
        raise BackendUnavailableError(f"tensorrt: no CUDA GPU: {reason}", INSTALL_HINT)
    if not 0 <= index < count:
        raise InputError(f"tensorrt: device cuda:{index} does not exist (this host has {count} CUDA GPU(s))")
    dev = ctypes.c_int(0)
    buf = ctypes.create_string_buffer(256)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    for rc in (
        lib.cuDeviceGet(ctypes.byref(dev), index),
        lib.cuDeviceGetName(buf, 256, dev),
        lib.cuDeviceGetAttribute(ctypes.byref(major), 75, dev),  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev),  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
    ):
        if rc != 0:
            raise BackendUnavailableError(f"tensorrt: querying CUDA device {index} failed (driver error {rc})")
    return GpuIdentity(index, buf.value.decode(errors="replace"), f"{major.value}.{minor.value}")


def parse_device(device: str) -> int:
    """``"cuda"`` -> 0, ``"cuda:N"`` -> N; anything else raises :class:`InputError`."""
    m = re.fullmatch(r"cuda(?::(\d+))?", device.strip().lower())
    if not m:
        raise InputError(f"tensorrt: unknown device {device!r}; TensorRT runs on 'cuda' or 'cuda:N'")
    return int(m.group(1) or 0)


# --- build options, profiles, flags ------------------------------------------------------------------


Shape = tuple[int, ...]


@dataclass(frozen=True)
class BuildOptions:
    """Validated build options of the TensorRT backend (see the module docstring)."""

    precision: str | None = None  # None: int8 for QDQ models, fp32 otherwise
    fp16: bool = False  # with int8: let non-quantized layers run in FP16
    sparse_weights: bool = False
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 64
    shapes: dict[str, dict[str, Shape]] = field(default_factory=dict)
    workspace_mb: int | None = None
    timing_cache: bool | str = True  # True: OUT_DIR/tensorrt.timing.cache; a str: that file; False: none
    optimization_level: int | None = None
    hardware_compatibility: str = "none"
    version_compatible: bool = False

    @classmethod
    def parse(cls, options: dict[str, Any] | None) -> BuildOptions:
        """Options from a dict; unknown keys and bad values raise :class:`InputError` naming the option."""
        options = dict(options or {})
        unknown = sorted(set(options) - _BUILD_KEYS - _LOAD_KEYS)
        if unknown:
            raise InputError(
                f"tensorrt: unknown option(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(_BUILD_KEYS))}"
            )
        precision = options.get("precision")
        if precision is not None:
            precision = str(precision).lower()
            if precision not in PRECISIONS:
                raise InputError(
                    f"tensorrt: option 'precision' must be one of {', '.join(PRECISIONS)}, got {precision!r}"
                )
        flags = {}
        for key in ("fp16", "sparse_weights", "version_compatible"):
            value = options.get(key, getattr(cls, key))
            if not isinstance(value, bool):
                raise InputError(f"tensorrt: option {key!r} must be true or false, got {value!r}")
            flags[key] = value
        ints = {}
        for key in ("min_batch", "opt_batch", "max_batch"):
            ints[key] = _positive_int(options.get(key, getattr(cls, key)), key)
        if not ints["min_batch"] <= ints["opt_batch"] <= ints["max_batch"]:
            raise InputError(
                "tensorrt: options must satisfy min_batch <= opt_batch <= max_batch, got "
                f"{ints['min_batch']}, {ints['opt_batch']}, {ints['max_batch']}"
            )
        cache = options.get("timing_cache", True)
        if not isinstance(cache, (bool, str)) or cache == "":
            raise InputError(f"tensorrt: option 'timing_cache' must be true, false or a file path, got {cache!r}")
        workspace = options.get("workspace_mb")
        workspace = None if workspace is None else _positive_int(workspace, "workspace_mb")
        level = options.get("optimization_level")
        if level is not None and (not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 5):
            raise InputError(f"tensorrt: option 'optimization_level' must be an integer 0..5, got {level!r}")
        hw = str(options.get("hardware_compatibility", "none")).lower()
        if hw not in _HW_COMPAT:
            raise InputError(f"tensorrt: option 'hardware_compatibility' must be one of {', '.join(_HW_COMPAT)}")
        return cls(
            precision=precision,
            fp16=flags["fp16"],
            sparse_weights=flags["sparse_weights"],
            min_batch=ints["min_batch"],
            opt_batch=ints["opt_batch"],
            max_batch=ints["max_batch"],
            shapes=_parse_shapes(options.get("shapes") or {}),
            workspace_mb=workspace,
            timing_cache=cache,
            optimization_level=level,
            hardware_compatibility=hw,
            version_compatible=flags["version_compatible"],
        )


def _positive_int(value: Any, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"tensorrt: option {key!r} must be a positive integer, got {value!r}")
    return value


def _parse_shapes(shapes: Any) -> dict[str, dict[str, Shape]]:
    if not isinstance(shapes, dict):
        raise InputError("tensorrt: option 'shapes' must map input names to {min, opt, max} shapes")
    out: dict[str, dict[str, Shape]] = {}
    for name, spec in shapes.items():
        if not isinstance(spec, dict) or set(spec) != {"min", "opt", "max"}:
            raise InputError(f"tensorrt: option shapes.{name} must have exactly the keys min, opt, max")
        triple = {}
        for k in ("min", "opt", "max"):
            s = spec[k]
            if not isinstance(s, (list, tuple)) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in s
            ):
                raise InputError(f"tensorrt: option shapes.{name}.{k} must be a list of positive integers, got {s!r}")
            triple[k] = tuple(s)
        if not (len(triple["min"]) == len(triple["opt"]) == len(triple["max"])):
            raise InputError(f"tensorrt: option shapes.{name}: min, opt and max have different ranks")
        if not all(a <= b <= c for a, b, c in zip(triple["min"], triple["opt"], triple["max"], strict=True)):
            raise InputError(f"tensorrt: option shapes.{name}: need min <= opt <= max in every dimension")
        out[str(name)] = triple
    return out


def optimization_profile(
    inputs: list[tuple[str, tuple[int, ...]]], opts: BuildOptions
) -> dict[str, tuple[Shape, Shape, Shape]]:
    """(min, opt, max) shapes for every input with a dynamic (-1) dimension; static inputs need none.

    ``inputs`` are the network's inputs as (name, shape) with -1 for dynamic dimensions. A dynamic
    leading dimension takes the batch options; any other dynamic dimension needs ``shapes``.
    """
    names = [n for n, _ in inputs]
    stray = sorted(set(opts.shapes) - set(names))
    if stray:
        raise InputError(f"tensorrt: option 'shapes' names {', '.join(stray)}, which the model lacks (inputs: {names})")
    profile: dict[str, tuple[Shape, Shape, Shape]] = {}
    for name, shape in inputs:
        shape = tuple(int(d) for d in shape)
        given = opts.shapes.get(name)
        if given is not None:
            if len(given["min"]) != len(shape):
                raise InputError(
                    f"tensorrt: option shapes.{name} has rank {len(given['min'])}; input {name!r} has rank {len(shape)}"
                )
            for k in ("min", "opt", "max"):
                for i, (d, g) in enumerate(zip(shape, given[k], strict=True)):
                    if d >= 0 and d != g:
                        raise InputError(
                            f"tensorrt: option shapes.{name}.{k}[{i}] is {g} "
                            f"but input {name!r} has fixed size {d} there"
                        )
            profile[name] = (given["min"], given["opt"], given["max"])
            continue
        if all(d >= 0 for d in shape):
            continue
        free = [i for i, d in enumerate(shape) if d < 0 and i != 0]
        if free:
            raise InputError(
                f"tensorrt: input {name!r} has dynamic dimension(s) {free} besides the batch; "
                f"give option shapes.{name} = {{min: [...], opt: [...], max: [...]}}"
            )
        rest = shape[1:]
        profile[name] = ((opts.min_batch, *rest), (opts.opt_batch, *rest), (opts.max_batch, *rest))
    return profile


def builder_flags(opts: BuildOptions, has_qdq: bool) -> tuple[str, list[str], list[str]]:
    """The precision that will run and the ``trt.BuilderFlag`` names to set and to clear."""
    precision = opts.precision or ("int8" if has_qdq else "fp32")
    if precision == "int8" and not has_qdq:
        raise InputError(
            "tensorrt: precision int8 needs an explicitly quantized model (QuantizeLinear/DequantizeLinear nodes); "
            "effdl does not use TensorRT's implicit INT8 calibration (deprecated in TensorRT 10)",
            "quantize the ONNX model to QDQ first (a static quantization stage), or build fp16",
        )
    if has_qdq and precision != "int8":
        raise InputError(
            f"tensorrt: the model has Q/DQ nodes but precision is {precision!r}; an explicitly quantized model "
            "builds with precision int8"
        )
    set_flags: list[str] = []
    clear: list[str] = []
    if precision == "fp32":
        clear.append("TF32")  # TensorRT enables TF32 by default on Ampere+: FP32 must mean FP32
    elif precision == "fp16":
        set_flags.append("FP16")
    elif precision == "bf16":
        set_flags.append("BF16")
    elif precision == "int8":
        set_flags.append("INT8")
        if opts.fp16:
            set_flags.append("FP16")
    if opts.fp16 and precision not in ("int8", "fp16"):
        raise InputError("tensorrt: option 'fp16' only adds FP16 fallback to int8 builds; use precision fp16")
    if opts.sparse_weights:
        set_flags.append("SPARSE_WEIGHTS")
    if opts.version_compatible:
        set_flags.append("VERSION_COMPATIBLE")
    return precision, set_flags, clear


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0].split("post")[0]))


def _cc(value: str) -> tuple[int, int]:
    major, _, minor = str(value).partition(".")
    return int(major), int(minor or 0)


def check_engine_compat(
    meta: dict[str, Any],
    *,
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
    allow_other_gpu: bool = False,
) -> list[str]:
    """Refuse an engine built for another TensorRT version or GPU; returns warnings for what it allows.

    TensorRT engines are tied to the exact TensorRT release that built them (unless built
    version-compatible, then they run on that release or later) and to the GPU's compute capability
    (unless built with hardware compatibility ``ampere_plus``). A different GPU model of the same compute
    capability can run the engine, but its tactics were timed on the other GPU, so effdl refuses that
    too unless ``allow_other_gpu`` is set.
    """
    for key in ("tensorrt_version", "gpu_name", "compute_capability"):
        if not meta.get(key):
            raise InputError(f"tensorrt: engine metadata lacks {key!r}; rebuild the engine with effdl")
    built, here = meta["tensorrt_version"], trt_version
    if meta.get("version_compatible"):
        if _release(here) < _release(built):
            raise BackendUnavailableError(
                f"tensorrt: the engine was built version-compatible with TensorRT {built}; "
                f"this runtime is older ({here})",
                f"install TensorRT >= {built} or rebuild the engine here",
            )
    elif _release(here) != _release(built):
        raise BackendUnavailableError(
            f"tensorrt: the engine was built with TensorRT {built} but this runtime is TensorRT {here}; "
            "TensorRT engines only load in the release that built them",
            f"rebuild the engine here (effdl compress with a tensorrt target), or install TensorRT {built}",
        )
    warnings: list[str] = []
    want_cc, have_cc = _cc(meta["compute_capability"]), _cc(compute_capability)
    if meta.get("hardware_compatibility") == "ampere_plus":
        if have_cc < (8, 0):
            raise BackendUnavailableError(
                f"tensorrt: the engine was built for Ampere and newer GPUs; {gpu_name} has compute capability "
                f"{compute_capability}"
            )
    elif want_cc != have_cc:
        raise BackendUnavailableError(
            f"tensorrt: the engine was built for {meta['gpu_name']} (compute capability {meta['compute_capability']}); "
            f"this GPU is {gpu_name} (compute capability {compute_capability})",
            "rebuild the engine on this GPU, or build with hardware_compatibility: ampere_plus",
        )
    if meta["gpu_name"] != gpu_name:
        msg = (
            f"the engine was built on {meta['gpu_name']} and runs on {gpu_name}: its tactics were timed on the "
            "other GPU"
        )
        if not (allow_other_gpu or meta.get("hardware_compatibility") == "ampere_plus"):
            raise BackendUnavailableError(
                f"tensorrt: {msg}",
                "rebuild the engine on this GPU, or load with option allow_other_gpu: true",
            )
        warnings.append(msg)
    return warnings


def describe_parser_error(err: Any) -> str:
    """One line for a ``trt.ParserError``: node index, name and operator, error code, description."""

    def get(attr: str) -> Any:
        fn = getattr(err, attr, None)
        try:
            return fn() if callable(fn) else None
        except Exception:  # accessor absent or failing in this TensorRT release
            return None

    desc = get("desc") or str(err)
    where = []
    node, name, op = get("node"), get("node_name"), get("node_operator")
    if node is not None and node >= 0:
        where.append(f"node {node}")
    if name:
        where.append(repr(name))
    if op:
        where.append(f"({op})")
    code = get("code")
    code_s = getattr(code, "name", None) or (str(code) if code is not None else "")
    prefix = " ".join(where)
    return (f"{prefix}: " if prefix else "") + (f"[{code_s}] " if code_s else "") + str(desc)


def ort_tensorrt_provider_options(
    inputs: list[tuple[str, tuple[int, ...]]], options: dict[str, Any] | None, cache_dir: Path, device_id: int = 0
) -> dict[str, str]:
    """Provider options for ONNX Runtime's ``TensorrtExecutionProvider`` from effdl's TensorRT build options.

    The second route to TensorRT: ORT partitions the graph, hands what TensorRT supports to it and runs the
    rest on CUDA. The same ``precision`` / batch / ``shapes`` / ``sparse_weights`` options as the native
    backend map onto ORT's ``trt_*`` options; engines and the timing cache go to ``cache_dir``. ``inputs``
    are (name, shape) with -1 for dynamic dimensions (``onnxruntime`` reports them as strings or None).
    """
    opts = BuildOptions.parse(options)
    if opts.precision == "bf16" or opts.hardware_compatibility != "none" or opts.version_compatible:
        raise InputError(
            "tensorrt via onnxruntime: precision bf16, hardware_compatibility and version_compatible are only "
            "supported by effdl's native tensorrt backend"
        )
    provider: dict[str, str] = {
        "device_id": str(device_id),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "True" if opts.timing_cache else "False",
        "trt_timing_cache_path": str(cache_dir),
    }
    if opts.precision == "fp16" or opts.fp16:
        provider["trt_fp16_enable"] = "True"
    if opts.precision == "int8":
        provider["trt_int8_enable"] = "True"  # a QDQ model carries its own scales: no calibration table
    if opts.sparse_weights:
        provider["trt_sparsity_enable"] = "True"
    if opts.workspace_mb:
        provider["trt_max_workspace_size"] = str(opts.workspace_mb << 20)
    if opts.optimization_level is not None:
        provider["trt_builder_optimization_level"] = str(opts.optimization_level)
    profile = optimization_profile(inputs, opts)
    if profile:
        for i, key in enumerate(("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")):
            provider[key] = ",".join(f"{n}:{'x'.join(map(str, shapes[i]))}" for n, shapes in profile.items())
    return provider


# --- TensorRT objects (imported lazily) -------------------------------------------------------------


def _import_trt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError(
            f"tensorrt: the tensorrt Python package cannot be imported ({e})", INSTALL_HINT
        ) from None
    return trt


_LOGGER: Any = None


def _make_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that keeps warnings and errors, so failures can be reported with TensorRT's words.

    One instance per process, emptied on each call: TensorRT releases before 10 required every builder and
    runtime of a process to share one logger.
    """
    global _LOGGER
    if _LOGGER is None:

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.messages: list[str] = []

            def log(self, severity: Any, msg: str) -> None:
                if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR, trt.ILogger.WARNING):
                    self.messages.append(f"{getattr(severity, 'name', severity)}: {msg}")

        _LOGGER = _Logger()
    _LOGGER.messages.clear()
    return _LOGGER


def _errors(logger: Any, last: int = 20) -> str:
    lines = [m for m in logger.messages if not m.startswith("WARNING")] or logger.messages
    return "\n".join(lines[-last:]) or "(TensorRT logged nothing)"


class TensorRTRunner:
    """A deserialized engine with one execution context; calls are serialised with a lock.

    ``run`` takes and returns numpy; ``run_torch`` takes CUDA tensors and returns CUDA tensors (for GPU
    timing without host copies). All work is queued on ``self.stream``.
    """

    def __init__(self, engine: Any, trt: Any, torch: Any, device_index: int, info: dict[str, Any]) -> None:
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailableError("tensorrt: could not create an execution context (out of GPU memory?)")
        self._torch = torch
        self._device = torch.device("cuda", device_index)
        self.stream = torch.cuda.Stream(device=self._device)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._dtypes: dict[str, np.dtype] = {}
        specs: dict[str, TensorSpec] = {}
        for n in names:
            try:
                dt = np.dtype(trt.nptype(engine.get_tensor_dtype(n)))
            except (TypeError, KeyError):  # e.g. BF16 / FP8 I/O, which numpy lacks
                raise BackendUnavailableError(
                    f"tensorrt: tensor {n!r} has type {engine.get_tensor_dtype(n)}, which numpy cannot hold"
                ) from None
            self._dtypes[n] = dt
            shape = tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(n))
            specs[n] = TensorSpec(n, dt.name, shape)
        self.inputs = [specs[n] for n in names if is_input[n]]
        self.outputs = [specs[n] for n in names if not is_input[n]]
        self._profile = {
            s.name: [tuple(x) for x in engine.get_tensor_profile_shape(s.name, 0)]
            for s in self.inputs
            if None in s.shape
        }
        self.info = info
        self._lock = threading.Lock()

    def run_torch(self, tensors: list[Any]) -> list[Any]:
        """Run on contiguous CUDA tensors (input order); returns output tensors on the GPU."""
        torch = self._torch
        if len(tensors) != len(self.inputs):
            raise InputError(f"tensorrt: expected {len(self.inputs)} input tensors, got {len(tensors)}")
        for spec, t in zip(self.inputs, tensors, strict=True):
            want = _torch_dtype(torch, self._dtypes[spec.name])
            if t.device != self._device or t.dtype != want or not t.is_contiguous():
                raise InputError(
                    f"tensorrt: input {spec.name!r} must be a contiguous {want} tensor on {self._device}, "
                    f"got {t.dtype} on {t.device}"
                )
        caller = torch.cuda.current_stream(self._device)
        with self._lock, torch.cuda.device(self._device), torch.cuda.stream(self.stream):
            self.stream.wait_stream(caller)  # inputs may have been written on the caller's stream
            for spec, t in zip(self.inputs, tensors, strict=True):
                if not self.context.set_input_shape(spec.name, tuple(t.shape)):
                    rng = self._profile.get(spec.name)
                    raise InputError(
                        f"tensorrt: input {spec.name!r} has shape {list(t.shape)}, outside the engine's profile"
                        + (f" (min {list(rng[0])}, max {list(rng[2])})" if rng else f" ({list(spec.shape)})")
                    )
                self.context.set_tensor_address(spec.name, t.data_ptr())
            outs = []
            for spec in self.outputs:
                shape = tuple(self.context.get_tensor_shape(spec.name))
                if any(d < 0 for d in shape):
                    raise BackendUnavailableError(
                        f"tensorrt: output {spec.name!r} has a data-dependent shape; effdl's runner does not "
                        "implement an output allocator"
                    )
                o = torch.empty(shape, dtype=_torch_dtype(torch, self._dtypes[spec.name]), device=self._device)
                self.context.set_tensor_address(spec.name, o.data_ptr())
                outs.append(o)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("tensorrt: execute_async_v3 failed")
            return outs

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        check_feeds(self.inputs, feeds, "tensorrt")
        with torch.cuda.stream(self.stream):
            tensors = [
                torch.from_numpy(np.ascontiguousarray(feeds[s.name])).to(self._device, non_blocking=False)
                for s in self.inputs
            ]
            outs = self.run_torch(tensors)
            return [o.cpu().numpy() for o in outs]  # .cpu() waits for the stream


def _torch_dtype(torch: Any, dt: np.dtype) -> Any:
    return torch.from_numpy(np.empty(0, dtype=dt)).dtype


class TensorRTBackend(Backend):
    """NVIDIA TensorRT 10 on a CUDA GPU: FP32/TF32/FP16/BF16 and QDQ INT8 engines, 2:4 sparse weights."""

    name: ClassVar[str] = "tensorrt"
    module: ClassVar[str] = "tensorrt"
    distribution: ClassVar[str] = "tensorrt"
    install_hint: ClassVar[str] = INSTALL_HINT
    devices: ClassVar[tuple[str, ...]] = ("cuda",)

    @classmethod
    def availability(cls) -> Availability:
        """Unavailable, with the reason, when the tensorrt package is missing or no CUDA GPU is visible."""
        if _find_tensorrt() is None:
            return Availability(False, None, "Python package 'tensorrt' is not installed", INSTALL_HINT)
        version = None
        for dist in _DISTRIBUTIONS:
            try:
                version = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        count, reason = cuda_gpu_count()
        if count == 0:
            return Availability(
                False, version, f"no CUDA GPU: {reason}", "TensorRT needs an NVIDIA GPU with its driver installed"
            )
        return Availability(True, version, "", None, ("cuda",))

    def compile(self, onnx_path: Path, out_dir: Path, name: str, options: dict[str, Any]) -> Compiled:
        """Build ``{name}.engine`` in ``out_dir`` from an ONNX file for GPU 0 (see the module docstring)."""
        opts = BuildOptions.parse(options)
        trt = _import_trt()
        gpu = cuda_gpu_identity(0)
        onnx_path, out_dir = Path(onnx_path), Path(out_dir)
        if not onnx_path.is_file():
            raise InputError(f"tensorrt: ONNX file {onnx_path} does not exist")
        logger = _make_logger(trt)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errs = [describe_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
            raise InputError(
                f"tensorrt: TensorRT's ONNX parser rejected {onnx_path.name}:\n  "
                + "\n  ".join(errs or [_errors(logger)])
            )
        inputs = [(network.get_input(i).name, tuple(network.get_input(i).shape)) for i in range(network.num_inputs)]
        qdq_types = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
        has_qdq = any(network.get_layer(i).type in qdq_types for i in range(network.num_layers))
        precision, set_flags, clear_flags = builder_flags(opts, has_qdq)
        profile = optimization_profile(inputs, opts)

        config = builder.create_builder_config()
        for f in set_flags:
            config.set_flag(getattr(trt.BuilderFlag, f))
        for f in clear_flags:
            config.clear_flag(getattr(trt.BuilderFlag, f))
        if opts.workspace_mb:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mb << 20)
        if opts.optimization_level is not None:
            config.builder_optimization_level = opts.optimization_level
        if opts.hardware_compatibility == "ampere_plus":
            config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
        if profile:
            p = builder.create_optimization_profile()
            for n, (lo, mid, hi) in profile.items():
                p.set_shape(n, lo, mid, hi)
            config.add_optimization_profile(p)
        out_dir.mkdir(parents=True, exist_ok=True)
        cache_path = out_dir / TIMING_CACHE if opts.timing_cache is True else Path(str(opts.timing_cache))
        cache_hit = False
        if opts.timing_cache:
            data = cache_path.read_bytes() if cache_path.is_file() else b""
            cache = config.create_timing_cache(data) if data else None
            # a cache from another GPU or TensorRT release is refused; then start from an empty one
            cache_hit = cache is not None and bool(config.set_timing_cache(cache, ignore_mismatch=False))
            if not cache_hit:
                config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

        t0 = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        build_s = time.perf_counter() - t0
        if serialized is None:
            raise InputError(f"tensorrt: building the engine for {onnx_path.name} failed:\n{_errors(logger)}")
        engine_path = out_dir / f"{name}.engine"
        tmp = out_dir / f".{name}.engine.partial"
        with open(tmp, "wb") as f:
            f.write(serialized)
        tmp.replace(engine_path)
        if opts.timing_cache:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_name(f".{cache_path.name}.partial")
            with open(tmp, "wb") as f:
                f.write(config.get_timing_cache().serialize())
            tmp.replace(cache_path)
        meta = {
            "format": "tensorrt-engine",
            "tensorrt_version": trt.__version__,
            "gpu_name": gpu.name,
            "compute_capability": gpu.compute_capability,
            "precision": precision,
            "builder_flags": set_flags,
            "cleared_flags": clear_flags,
            "profile": {n: {"min": list(a), "opt": list(b), "max": list(c)} for n, (a, b, c) in profile.items()},
            "hardware_compatibility": opts.hardware_compatibility,
            "version_compatible": opts.version_compatible,
            "optimization_level": opts.optimization_level,
            "workspace_mb": opts.workspace_mb,
            "timing_cache": (TIMING_CACHE if opts.timing_cache is True else str(cache_path))
            if opts.timing_cache
            else None,
            "timing_cache_reused": cache_hit,
            "build_seconds": round(build_s, 3),
            "builder_warnings": [m for m in logger.messages if m.startswith("WARNING")][-20:],
        }
        return Compiled([engine_path.name], meta)

    def load(
        self,
        root: Path,
        compiled: Compiled,
        *,
        device: str = "cuda",
        threads: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> TensorRTRunner:
        """Deserialize the engine after checking it was built for this TensorRT release and this GPU."""
        options = dict(options or {})
        unknown = sorted(set(options) - _LOAD_KEYS - _BUILD_KEYS)
        if unknown:
            raise InputError(f"tensorrt: unknown load option(s) {', '.join(unknown)}; known: allow_other_gpu")
        allow_other = options.get("allow_other_gpu", False)
        if not isinstance(allow_other, bool):
            raise InputError(f"tensorrt: option 'allow_other_gpu' must be true or false, got {allow_other!r}")
        if device == "cpu":
            raise InputError("tensorrt: TensorRT runs on a CUDA GPU only; device must be 'cuda' or 'cuda:N'")
        index = parse_device(device)
        path = Path(root) / compiled.files[0]
        if not path.is_file():
            raise InputError(f"tensorrt: engine file {path} does not exist")
        trt = _import_trt()
        gpu = cuda_gpu_identity(index)
        warnings = check_engine_compat(
            compiled.meta,
            trt_version=trt.__version__,
            gpu_name=gpu.name,
            compute_capability=gpu.compute_capability,
            allow_other_gpu=allow_other,
        )
        try:
            import torch
        except ImportError:
            raise BackendUnavailableError(
                "tensorrt: the runner uses torch CUDA tensors as device buffers, and torch is not installed",
                "pip install torch (a CUDA build)",
            ) from None
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"tensorrt: torch {torch.__version__} cannot see a CUDA GPU (CPU-only build?); the runner needs one",
                "install a CUDA build of torch",
            )
        logger = _make_logger(trt)
        runtime = trt.Runtime(logger)
        if compiled.meta.get("version_compatible"):
            runtime.engine_host_code_allowed = True  # version-compatible plans embed their lean runtime
        with torch.cuda.device(index):
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BackendUnavailableError(f"tensorrt: deserializing {path.name} failed:\n{_errors(logger)}")
        mem = getattr(engine, "device_memory_size_v2", None)
        if mem is None:
            mem = getattr(engine, "device_memory_size", None)
        info = {
            "backend": self.name,
            "version": trt.__version__,
            "device": f"cuda:{index}",
            "gpu": gpu.name,
            "compute_capability": gpu.compute_capability,
            "precision": compiled.meta.get("precision"),
            "builder_flags": compiled.meta.get("builder_flags"),
            "profile": compiled.meta.get("profile"),
            "device_memory_bytes": mem,
            "warnings": warnings,
            "threads": threads,
        }
        return TensorRTRunner(engine, trt, torch, index, info)


def _find_tensorrt() -> Any:
    """The import spec of ``tensorrt`` (None when missing); a function so tests can simulate an install."""
    return importlib.util.find_spec("tensorrt")
