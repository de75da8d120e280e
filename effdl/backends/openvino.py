"""OpenVINO backend: ONNX -> OpenVINO IR (xml + bin), compiled for the CPU plugin at load.

OpenVINO runs BF16 by default on CPUs with AMX or AVX-512 BF16. effdl pins
``INFERENCE_PRECISION_HINT`` to what the variant asks for (f32 unless told otherwise) and records the
precision the compiled model reports, so a number is never silently BF16.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from effdl.backends.base import Backend, Compiled, TensorSpec, numpy_dtype_name

_HINTS = {"fp32": "f32", "f32": "f32", "bf16": "bf16", "fp16": "f16", "f16": "f16"}


def _raw_infer() -> Any:
    """OpenVINO's compiled ``InferRequest.infer`` without the Python wrapper (or None if this OpenVINO lacks it).

    The public ``InferRequest.infer`` wraps the pybind call in a data dispatcher (for feeds; effdl copies
    inputs into the request's tensors itself) and an ``OVDict`` of the results, ~5 us per call here: on a
    0.05-0.1 ms INT8 model a tenth of the call. The compiled method takes ``(request, inputs, share_outputs,
    decode_strings)`` and returns ``{output port: array}`` in output order."""
    try:
        from openvino._pyopenvino import InferRequest as _Compiled

        return _Compiled.infer
    except (ImportError, AttributeError):  # a future OpenVINO may move it: the public call still works
        return None


def _shape(partial_shape: Any) -> tuple[int | None, ...]:
    return tuple(d.get_length() if d.is_static else None for d in partial_shape)


# Runtime layer types of the CPU plugin that do the multiply-accumulates (what INT8 is meant to speed up).
COMPUTE_LAYERS = frozenset({"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul"})


def compute_precisions(compiled_model: Any) -> dict[str, Any]:
    """How the compiled model's compute layers (convolutions, fully-connected, MatMul) actually run.

    Reads the CPU plugin's runtime graph (``get_runtime_model()``: the graph after OpenVINO's own
    fusions, with each node's ``layerType`` and ``runtimePrecision``). Returns ``{"layers": {type:
    {precision: count}}, "int8": n, "float": n}``: in an INT8 model every compute layer should run
    i8/u8; one that runs f32/bf16 means a dequantize path was left and that layer gained nothing.
    OpenVINO has no public API that answers this directly, hence reading the runtime graph here.
    """
    layers: dict[str, dict[str, int]] = {}
    int8 = floating = 0
    for op in compiled_model.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        if kind not in COMPUTE_LAYERS:
            continue
        precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "unknown"
        per = layers.setdefault(kind, {})
        per[precision] = per.get(precision, 0) + 1
        if precision in ("i8", "u8"):
            int8 += 1
        else:
            floating += 1
    return {"layers": layers, "int8": int8, "float": floating}


class OpenVinoRunner:
    """A compiled OpenVINO model; one infer request per calling thread, so concurrent calls are safe.

    With ``specialize`` (``(core, model, device, config)``) the model is compiled once per distinct set of
    input shapes, each time reshaped to those static shapes (the ``static_shapes`` option): OpenVINO's CPU
    plugin then picks kernels for the exact shapes instead of deciding at every call of a dynamic-shape
    model, which at batch 1 saves a fixed share of each call. ``compiled_model`` is then None until used.
    """

    #: What :meth:`backend_latency_s` measures, for reports.
    backend_latency_what = "OpenVINO InferRequest.latency: the C++ infer call"

    def __init__(
        self, compiled_model: Any, info: dict[str, Any], *, model: Any = None, specialize: tuple | None = None
    ) -> None:
        self.compiled_model = compiled_model
        self._specialize = specialize
        self._by_shape: dict[tuple, Any] = {}
        self._lock = threading.Lock()
        ports = compiled_model if compiled_model is not None else model
        self.inputs = [
            TensorSpec(
                p.get_any_name(), numpy_dtype_name(p.get_element_type().get_type_name()), _shape(p.get_partial_shape())
            )
            for p in ports.inputs
        ]
        self.outputs = [
            TensorSpec(
                p.get_any_name(), numpy_dtype_name(p.get_element_type().get_type_name()), _shape(p.get_partial_shape())
            )
            for p in ports.outputs
        ]
        self.info = info
        self._local = threading.local()
        self._n_out = len(self.outputs)
        self._infer = _raw_infer()

    def _request(self) -> Any:
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled_model.create_infer_request()
        return req

    def _specialized_request(self, feeds: dict[str, np.ndarray]) -> Any:
        assert self._specialize is not None
        key = tuple(sorted((k, tuple(np.shape(v))) for k, v in feeds.items()))
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        req = requests.get(key)
        if req is None:
            with self._lock:
                compiled = self._by_shape.get(key)
                if compiled is None:
                    core, model, device, config = self._specialize
                    static = model.clone()
                    static.reshape({name: list(shape) for name, shape in key})
                    compiled = self._by_shape[key] = core.compile_model(static, device, config)
                    self.compiled_model = compiled
            req = requests[key] = compiled.create_infer_request()
        return req

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs for ``feeds`` (copies).

        Inputs are copied into the request's own input tensors, whose numpy views are kept between calls
        (re-read only when a shape changes), and the request runs on them. Handing OpenVINO a new input
        tensor each call (``infer(feeds)``, shared or not), or even asking the request for its tensor
        again, costs the CPU plugin a re-binding of its input memory: 55-80 us per call on resnet8 here
        (``bench/openvino_call.py``), a quarter to a third of its INT8 call."""
        fast = getattr(self._local, "fast", None)
        if fast is not None and len(feeds) == len(fast[1]):
            # The same inputs as the last call (names, shapes, dtypes): straight to the kept views and request.
            req, names, views = fast
            arrays = [feeds.get(name) for name in names]
            if all(
                isinstance(a, np.ndarray) and a.shape == v.shape and a.dtype == v.dtype
                for a, v in zip(arrays, views, strict=True)
            ):
                for view, arr in zip(views, arrays, strict=True):
                    view[...] = arr
                if self._infer is not None:
                    return list(self._infer(req, {}, False, True).values())  # copies of the outputs, in order
                return list(req.infer().to_tuple())  # infer() returns copies of the outputs
        req = self._request() if self._specialize is None else self._specialized_request(feeds)
        bound = getattr(self._local, "bound", None)
        if bound is None:
            bound = self._local.bound = {}
        views = bound.setdefault(id(req), {})
        arrays = {name: np.asarray(value) for name, value in feeds.items()}
        for name, arr in arrays.items():
            view = views.get(name)
            if view is None or view.shape != arr.shape:
                tensor = req.get_tensor(name)
                if tensor.data.dtype != arr.dtype:  # not what the model was compiled for: OpenVINO converts it
                    views.clear()  # infer(feeds) binds new tensors: the kept views are stale
                    self._local.fast = None
                    self._local.last = req
                    return list(req.infer(arrays).to_tuple())
                if tuple(tensor.shape) != arr.shape:
                    tensor.shape = list(arr.shape)
                view = views[name] = tensor.data
            view[...] = arr
        self._local.fast = (req, tuple(arrays), [views[name] for name in arrays])
        self._local.last = req
        return list(req.infer().to_tuple())

    def backend_latency_s(self) -> float | None:
        """OpenVINO's own duration of this thread's last ``run`` (``InferRequest.latency``: the C++ ``infer``
        call, without Python's call, input copy and output conversion), in seconds; None before any run.

        What OpenVINO's ``benchmark_app`` reports as latency; ``time.perf_counter`` around :meth:`run` adds
        the Python side (10-30 us per call here), which is the same for a large and a small model."""
        req = getattr(self._local, "last", None)
        return None if req is None else float(req.latency) * 1e-3


class OpenVinoBackend(Backend):
    """Intel OpenVINO on CPU (the GPU and NPU plugins work the same way where present)."""

    name: ClassVar[str] = "openvino"
    module: ClassVar[str] = "openvino"
    distribution: ClassVar[str] = "openvino"
    install_hint: ClassVar[str] = "pip install openvino"
    devices: ClassVar[tuple[str, ...]] = ("cpu", "gpu", "npu")

    def compile(self, onnx_path: Path, out_dir: Path, name: str, options: dict[str, Any]) -> Compiled:
        import openvino as ov

        model = ov.convert_model(str(onnx_path))
        xml = out_dir / f"{name}.xml"
        # compress_to_fp16 defaults to True: that would silently change an FP32 variant's weights.
        ov.save_model(model, str(xml), compress_to_fp16=bool(options.get("compress_to_fp16", False)))
        hint = _HINTS.get(str(options.get("inference_precision", "fp32")).lower())
        static = options.get("static_shapes", False)
        if not isinstance(static, bool):
            from effdl.errors import InputError

            raise InputError(f"openvino: static_shapes must be true or false, not {static!r}")
        if hint is None:
            from effdl.errors import InputError

            raise InputError(
                f"openvino: unknown inference_precision {options.get('inference_precision')!r}; "
                f"known: {', '.join(sorted(_HINTS))}"
            )
        return Compiled(
            [xml.name, xml.with_suffix(".bin").name],
            {
                "format": "openvino-ir",
                "openvino_version": ov.get_version(),
                "inference_precision": hint,
                **({"static_shapes": True} if static else {}),
            },
        )

    def load(
        self,
        root: Path,
        compiled: Compiled,
        *,
        device: str = "cpu",
        threads: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> OpenVinoRunner:
        import openvino as ov

        core = ov.Core()
        hint = (options or {}).get("inference_precision") or compiled.meta.get("inference_precision", "f32")
        hint = _HINTS.get(str(hint).lower(), hint)
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
        }
        ov_device = device.upper()
        if ov_device == "CPU":
            config["INFERENCE_PRECISION_HINT"] = hint
            if threads:
                config["INFERENCE_NUM_THREADS"] = int(threads)
        model = core.read_model(str(root / compiled.files[0]))
        static = bool((options or {}).get("static_shapes", compiled.meta.get("static_shapes", False)))
        if static and any(i.get_partial_shape().is_dynamic for i in model.inputs):
            info = {
                "backend": self.name,
                "version": ov.get_version(),
                "device": ov_device,
                "inference_precision": hint,
                "threads": threads,
                "static_shapes": True,
            }
            return OpenVinoRunner(None, info, model=model, specialize=(core, model, ov_device, config))
        cm = core.compile_model(model, ov_device, config)
        try:
            prop = cm.get_property("INFERENCE_PRECISION_HINT")
            ran = prop.get_type_name() if hasattr(prop, "get_type_name") else str(prop)
        except Exception:  # property not exposed by every plugin
            ran = hint
        info = {
            "backend": self.name,
            "version": ov.get_version(),
            "device": ov_device,
            "inference_precision": ran,
            "threads": threads,
        }
        return OpenVinoRunner(cm, info)
