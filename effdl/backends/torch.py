"""PyTorch backend: a ``torch.export`` archive (``.pt2``) run eagerly or through ``torch.compile``, on CPU or CUDA.

Unlike the other backends this one compiles from a torch module, not from ONNX (``source = "torch"``):
:meth:`TorchBackend.compile_torch` exports the module with :func:`torch.export.export` (dynamic batch
dimension) and saves the archive; :meth:`TorchBackend.load` reads it back with :func:`torch.export.load`
after checking that nothing in it would be unpickled with arbitrary code, then applies the run options:

``mode``
    ``"eager"`` runs the exported graph as is; ``"compile"`` wraps it in ``torch.compile`` (Inductor), the
    honest "compiled PyTorch" baseline. Compilation happens on the first call per input shape, so
    benchmarks must warm up.
``precision``
    ``"fp32"`` | ``"bf16"`` | ``"fp16"``: the module is cast at load (``module.to(dtype)``), floating
    inputs are cast to that dtype and floating outputs back to float32. On CPU, bf16 runs through oneDNN,
    which uses AVX-512 BF16 / AMX where the CPU has them.
``cuda_graphs``
    CUDA only. With ``mode="compile"`` this is ``torch.compile(mode="reduce-overhead")``; with
    ``mode="eager"`` the runner captures one ``torch.cuda.CUDAGraph`` per input shape (static batch) and
    replays it.
``sparse_24``
    CUDA only. ``aten.linear`` weights that already have a 2:4 pattern (two non-zeros in every group of
    four along the input dimension) are replaced with ``torch.sparse.to_sparse_semi_structured`` so that
    cuSPARSELt runs them; refuses when no linear weight qualifies.

The runner takes and returns numpy arrays, runs under ``torch.inference_mode`` and needs nothing of
effdl's ONNX machinery.
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from effdl.backends.base import Availability, Backend, Compiled, TensorSpec, check_feeds
from effdl.errors import BackendUnavailableError, InputError

MODES = ("eager", "compile")
PRECISIONS = ("fp32", "bf16", "fp16")
_OPTION_KEYS = {"mode", "precision", "cuda_graphs", "sparse_24", "max_batch", "dynamic_batch"}
# cuSPARSELt's semi-structured kernels (torch.sparse.SparseSemiStructuredTensorCUSPARSELT) take these dtypes
# and need both weight dimensions to be multiples of 16 (torch's own _DTYPE_SHAPE_CONSTRAINTS for fp16/bf16).
_SPARSE_PRECISIONS = ("fp16", "bf16")
_SPARSE_MULTIPLE = 16


@dataclass(frozen=True)
class TorchOptions:
    """Validated run options of the torch backend (see the module docstring)."""

    mode: str = "eager"
    precision: str = "fp32"
    cuda_graphs: bool = False
    sparse_24: bool = False

    @classmethod
    def parse(cls, options: dict[str, Any] | None, *, base: TorchOptions | None = None) -> TorchOptions:
        """Options from a dict (unknown keys and bad values raise :class:`InputError` naming the option).

        ``base`` supplies the defaults (e.g. what was recorded at compile time).
        """
        options = dict(options or {})
        unknown = sorted(set(options) - _OPTION_KEYS)
        if unknown:
            raise InputError(
                f"torch backend: unknown option(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(sorted(_OPTION_KEYS))}"
            )
        b = base or cls()
        mode = str(options.get("mode", b.mode)).lower()
        if mode not in MODES:
            raise InputError(f"torch backend: option 'mode' must be one of {', '.join(MODES)}, got {mode!r}")
        precision = str(options.get("precision", b.precision)).lower()
        precision = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}.get(precision, precision)
        if precision not in PRECISIONS:
            raise InputError(
                f"torch backend: option 'precision' must be one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        flags = {}
        for key in ("cuda_graphs", "sparse_24"):
            value = options.get(key, getattr(b, key))
            if not isinstance(value, bool):
                raise InputError(f"torch backend: option {key!r} must be true or false, got {value!r}")
            flags[key] = value
        return cls(mode, precision, flags["cuda_graphs"], flags["sparse_24"])

    def check_device(self, device: str) -> None:
        """Refuse CUDA-only options on another device, and sparse_24 at a precision cuSPARSELt lacks."""
        if device != "cuda":
            for key in ("cuda_graphs", "sparse_24"):
                if getattr(self, key):
                    raise InputError(
                        f"torch backend: option {key!r} needs device 'cuda' (got device {device!r})",
                        f"drop {key} or load on a CUDA GPU",
                    )
        if self.sparse_24 and self.precision not in _SPARSE_PRECISIONS:
            raise InputError(
                f"torch backend: sparse_24 runs on cuSPARSELt, which takes {' or '.join(_SPARSE_PRECISIONS)} weights; "
                f"precision is {self.precision!r}",
                "set precision: fp16 (or bf16) together with sparse_24",
            )


def is_24_sparse(weight: np.ndarray) -> bool:
    """Whether a 2-D weight has at most two non-zeros in every group of four along its last dimension."""
    w = np.asarray(weight)
    if w.ndim != 2 or w.shape[1] % 4:
        return False
    groups = (w != 0).reshape(w.shape[0], w.shape[1] // 4, 4)
    return bool((groups.sum(axis=-1) <= 2).all())


def sparse_24_reason(weight: np.ndarray) -> str | None:
    """Why a linear weight cannot be run as 2:4 semi-structured sparse, or ``None`` when it can."""
    w = np.asarray(weight)
    if w.ndim != 2:
        return f"weight has {w.ndim} dimensions, not 2"
    rows, cols = w.shape
    if rows % _SPARSE_MULTIPLE or cols % _SPARSE_MULTIPLE:
        return f"shape {rows}x{cols} is not a multiple of {_SPARSE_MULTIPLE} in both dimensions (cuSPARSELt)"
    if not is_24_sparse(w):
        return "weights do not have a 2:4 pattern (prune to 2:4 first)"
    return None


def _torch_dtype(precision: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def check_pt2_archive(path: Path) -> None:
    """Refuse a ``.pt2`` archive whose loading would unpickle anything beyond plain tensors.

    ``torch.export.load`` reads the graph from JSON and plain weights from raw bytes, but it unpickles
    tensor-subclass weights and custom objects (``weights_only=False``), and it retries the sample inputs
    with ``weights_only=False`` when the safe load fails. This check, written by hand because torch offers
    no "safe only" switch, makes sure none of those paths is taken, so no pickled code runs.
    """
    import torch

    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise InputError(f"torch backend: {path} is not a torch.export archive: {e}") from None
    with zf:
        for member in zf.namelist():
            parts = member.split("/")
            if len(parts) >= 3 and parts[-2] in ("weights", "constants") and parts[-1].endswith("_config.json"):
                try:
                    config = json.loads(zf.read(member)).get("config", {})
                except (json.JSONDecodeError, AttributeError):
                    raise InputError(f"torch backend: {path}: {member} is not valid JSON") from None
                pickled = sorted(k for k, v in config.items() if isinstance(v, dict) and v.get("use_pickle"))
                if pickled:
                    raise InputError(
                        f"torch backend: {path} stores {', '.join(pickled)} as pickles; effdl does not unpickle "
                        "archives (tensor subclasses and custom objects are not supported)"
                    )
            if parts[-2:-1] == ["constants"] and parts[-1].startswith("custom_obj"):
                raise InputError(f"torch backend: {path} holds a pickled custom object ({member}); refused")
            if parts[-2:-1] == ["sample_inputs"]:
                data = zf.read(member)
                if data:
                    try:
                        torch.load(io.BytesIO(data), weights_only=True)
                    except Exception as e:
                        raise InputError(
                            f"torch backend: {path}: sample inputs {member} do not load with weights_only=True ({e})"
                        ) from None


def _flatten(out: Any, output_names: tuple[str, ...]) -> list[Any]:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        if set(out) == set(output_names):
            return [out[n] for n in output_names]
        return list(out.values())
    if isinstance(out, (tuple, list)):
        flat: list[Any] = []
        for o in out:
            flat.extend(_flatten(o, output_names) if not isinstance(o, torch.Tensor) else [o])
        return flat
    raise InputError(f"torch backend: the model returned {type(out).__name__}; expected tensors")


class _CudaGraphCall:
    """Replays one ``torch.cuda.CUDAGraph`` per input-shape signature (captured on first use).

    Written by hand because ``torch.compile(mode="reduce-overhead")`` is the library route only for the
    compiled mode; eager mode has no wrapper in torch that captures lazily per shape.
    """

    def __init__(self, fn: Callable[..., Any], warmup: int = 3) -> None:
        self.fn = fn
        self.warmup = warmup
        self.graphs: dict[tuple[Any, ...], tuple[Any, list[Any], Any]] = {}

    def __call__(self, *args: Any) -> Any:
        import torch

        key = tuple((tuple(a.shape), a.dtype) for a in args)
        entry = self.graphs.get(key)
        if entry is None:
            static_in = [a.clone() for a in args]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.fn(*static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.fn(*static_in)
            entry = self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = entry
        for dst, src in zip(static_in, args, strict=True):
            dst.copy_(src)
        graph.replay()
        return static_out


class TorchRunner:
    """A loaded torch module behind the :class:`~effdl.backends.base.Runner` protocol (numpy in, numpy out).

    Calls are serialised with a lock (CUDA-graph replays share static buffers).
    """

    def __init__(
        self,
        call: Callable[..., Any],
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        info: dict[str, Any],
        *,
        device: str,
        dtype: Any,
        max_batch: int | None = None,
    ) -> None:
        self._call = call
        self._max_batch = max_batch
        self.inputs = inputs
        self.outputs = outputs
        self.info = info
        self._device = device
        self._dtype = dtype
        self._names = tuple(s.name for s in outputs)
        self._lock = threading.Lock()

    def to_device(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        """Check feeds and turn them into torch tensors on the runner's device and precision."""
        import torch

        check_feeds(self.inputs, feeds, "torch backend")
        if self._max_batch is not None:
            for spec in self.inputs:
                if feeds[spec.name].shape[0] > self._max_batch:
                    raise InputError(
                        f"torch backend: input {spec.name!r} has batch {feeds[spec.name].shape[0]}; "
                        f"this archive was exported for batch 1..{self._max_batch}"
                    )
        tensors = []
        for spec in self.inputs:
            t = torch.from_numpy(np.ascontiguousarray(feeds[spec.name])).to(self._device)
            if t.is_floating_point():
                t = t.to(self._dtype)
            tensors.append(t)
        return tensors

    def run_torch(self, args: list[Any]) -> list[Any]:
        """Run on tensors already on the device (for GPU timing without host copies); returns device tensors.

        With ``cuda_graphs`` the returned tensors are the graph's static outputs, overwritten by the next
        call: clone them to keep them.
        """
        import torch

        with self._lock, torch.inference_mode():
            return _flatten(self._call(*args), self._names)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = self.run_torch(self.to_device(feeds))
        result = []
        for t in out:
            t = t.detach()
            if t.is_floating_point():
                t = t.float()
            result.append(t.cpu().numpy())
        return result


class TorchBackend(Backend):
    """PyTorch itself: eager or ``torch.compile``, FP32 / BF16 / FP16, CUDA graphs and 2:4 sparsity on CUDA."""

    name: ClassVar[str] = "torch"
    module: ClassVar[str] = "torch"
    distribution: ClassVar[str] = "torch"
    install_hint: ClassVar[str] = "pip install torch"
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    source: ClassVar[str] = "torch"

    @classmethod
    def availability(cls) -> Availability:
        """torch installed; devices: cpu, plus cuda when ``torch.cuda.is_available()``."""
        avail = super().availability()
        if not avail.available:
            return avail
        import torch

        devices = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
        return Availability(True, avail.version or torch.__version__, "", None, devices)

    def compile(self, onnx_path: Path, out_dir: Path, name: str, options: dict[str, Any]) -> Compiled:
        raise InputError(
            "torch backend compiles from a torch module, not from ONNX",
            "call TorchBackend.compile_torch(module, example_inputs, ...) (the pipeline does this for source='torch')",
        )

    def compile_torch(
        self,
        module: Any,
        example_inputs: dict[str, np.ndarray],
        input_names: tuple[str, ...],
        output_names: tuple[str, ...],
        out_dir: Path,
        name: str,
        options: dict[str, Any],
    ) -> Compiled:
        """Export ``module`` with ``torch.export`` (dynamic batch, min 1) and save ``{name}.pt2`` in ``out_dir``.

        ``example_inputs`` maps each of ``input_names`` (the forward's positional arguments, in order) to an
        array; its first dimension is the batch. Options: the run options (recorded as load defaults),
        ``dynamic_batch`` (default true) and ``max_batch`` (upper bound of the batch dimension, default none).
        """
        import torch

        opts = TorchOptions.parse(options)
        dynamic = options.get("dynamic_batch", True)
        max_batch = options.get("max_batch")
        if not isinstance(dynamic, bool):
            raise InputError(f"torch backend: option 'dynamic_batch' must be true or false, got {dynamic!r}")
        if max_batch is not None and (not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 2):
            raise InputError(f"torch backend: option 'max_batch' must be an integer >= 2, got {max_batch!r}")
        missing = [n for n in input_names if n not in example_inputs]
        if missing:
            raise InputError(f"torch backend: example_inputs lack {', '.join(missing)}")
        arrays = [np.ascontiguousarray(example_inputs[n]) for n in input_names]
        batch = None
        if dynamic:
            for n, a in zip(input_names, arrays, strict=True):
                if a.ndim == 0:
                    raise InputError(f"torch backend: input {n!r} is a scalar; it has no batch dimension")
            sizes = {a.shape[0] for a in arrays}
            if len(sizes) != 1:
                raise InputError(f"torch backend: example inputs disagree on the batch size ({sorted(sizes)})")
            # torch.export specialises a dimension whose example size is 1, so trace with batch 2.
            if sizes == {1}:
                arrays = [np.concatenate([a, a]) for a in arrays]
            batch = torch.export.Dim("batch", min=1, max=max_batch) if max_batch else torch.export.Dim("batch", min=1)
        try:
            module = module.eval()
        except NotImplementedError:  # a module from torch.export (e.g. a .pt2 checkpoint) is already in eval form
            pass
        args = tuple(torch.from_numpy(a) for a in arrays)
        dynamic_shapes = tuple({0: batch} for _ in args) if dynamic else None
        try:
            ep = torch.export.export(module, args, dynamic_shapes=dynamic_shapes)
        except Exception as e:  # torch raises several types; the message is what the user needs
            raise InputError(f"torch backend: torch.export failed for {name!r}: {type(e).__name__}: {e}") from None
        with torch.inference_mode():
            outs = _flatten(ep.module()(*args), output_names)
        if len(outs) != len(output_names):
            raise InputError(
                f"torch backend: the model returns {len(outs)} outputs but output_names has {len(output_names)}"
            )

        traced_batch = int(args[0].shape[0]) if dynamic and args else None

        def spec(n: str, t: Any, dtype: str) -> TensorSpec:
            shape: tuple[int | None, ...] = tuple(int(d) for d in t.shape)
            if dynamic and shape and shape[0] == traced_batch:
                shape = (None, *shape[1:])
            return TensorSpec(n, dtype, shape)

        in_specs = [spec(n, t, str(t.numpy().dtype)) for n, t in zip(input_names, args, strict=True)]
        out_specs = [
            spec(n, t, "float32" if t.is_floating_point() else str(t.numpy().dtype))
            for n, t in zip(output_names, outs, strict=True)
        ]
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        dest = out_dir / f"{name}.pt2"
        tmp = out_dir / f"{name}.partial.pt2"  # torch.export.save wants the .pt2 suffix
        torch.export.save(ep, str(tmp))
        tmp.replace(dest)
        meta = {
            "format": "torch-export",
            "torch_version": torch.__version__,
            "inputs": [s.to_json() for s in in_specs],
            "outputs": [s.to_json() for s in out_specs],
            "dynamic_batch": {"min": 1, "max": max_batch} if dynamic else None,
            "mode": opts.mode,
            "precision": opts.precision,
            "cuda_graphs": opts.cuda_graphs,
            "sparse_24": opts.sparse_24,
        }
        return Compiled([dest.name], meta)

    def load(
        self,
        root: Path,
        compiled: Compiled,
        *,
        device: str = "cpu",
        threads: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> TorchRunner:
        import torch

        if device not in ("cpu", "cuda"):
            raise InputError(f"torch backend: unknown device {device!r}; known: cpu, cuda")
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(
                "torch backend: device 'cuda' requested but torch.cuda.is_available() is false "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})",
                "install a CUDA build of torch on a machine with an NVIDIA GPU",
            )
        meta = compiled.meta
        base = TorchOptions.parse({k: meta[k] for k in ("mode", "precision", "cuda_graphs", "sparse_24") if k in meta})
        opts = TorchOptions.parse(options, base=base)
        opts.check_device(device)
        path = Path(root) / compiled.files[0]
        if not path.is_file():
            raise InputError(f"torch backend: archive {path} does not exist")
        check_pt2_archive(path)
        ep = torch.export.load(str(path))
        gm = ep.module()
        dtype = _torch_dtype(opts.precision)
        gm = gm.to(device=device, dtype=dtype)
        if threads:
            torch.set_num_threads(int(threads))
        info: dict[str, Any] = {
            "backend": self.name,
            "version": torch.__version__,
            "device": device,
            "mode": opts.mode,
            "precision": opts.precision,
            "cuda_graphs": opts.cuda_graphs,
            "sparse_24": opts.sparse_24,
            "threads": torch.get_num_threads() if device == "cpu" else None,
        }
        if device == "cpu":
            info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        else:
            info["gpu"] = torch.cuda.get_device_name()
            info["compute_capability"] = "{}.{}".format(*torch.cuda.get_device_capability())
        if opts.sparse_24:
            info["sparse_24_layers"] = _apply_sparse_24(gm)
        call: Callable[..., Any] = gm
        if opts.mode == "compile":
            call = torch.compile(gm, mode="reduce-overhead" if opts.cuda_graphs else None)
            info["compiled_on"] = "first call per input shape (warm up before timing)"
        elif opts.cuda_graphs:
            call = _CudaGraphCall(gm)
        inputs = [TensorSpec.from_json(d) for d in meta["inputs"]]
        outputs = [TensorSpec.from_json(d) for d in meta["outputs"]]
        max_batch = (meta.get("dynamic_batch") or {}).get("max")
        return TorchRunner(call, inputs, outputs, info, device=device, dtype=dtype, max_batch=max_batch)


def _apply_sparse_24(gm: Any) -> dict[str, str]:
    """Swap every 2:4 ``aten.linear`` weight of an exported module for a semi-structured sparse tensor.

    Returns, per linear weight, ``"sparse"`` or the reason it stayed dense; raises when none qualifies.
    """
    import torch

    linear = torch.ops.aten.linear.default
    weights: dict[str, bool] = {}  # weight attribute -> used only as a linear weight
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            users = list(node.users)
            weights[node.target] = bool(users) and all(
                u.op == "call_function" and u.target is linear and len(u.args) > 1 and u.args[1] is node for u in users
            )
    report: dict[str, str] = {}
    for target, only_linear in weights.items():
        if not only_linear:
            continue
        owner_path, _, attr = target.rpartition(".")
        owner = gm.get_submodule(owner_path) if owner_path else gm
        w = getattr(owner, attr)
        reason = sparse_24_reason(w.detach().float().cpu().numpy())
        if reason:
            report[target] = reason
            continue
        sparse = torch.sparse.to_sparse_semi_structured(w.detach())
        setattr(owner, attr, torch.nn.Parameter(sparse, requires_grad=False))
        report[target] = "sparse"
    if "sparse" not in report.values():
        detail = "; ".join(f"{k}: {v}" for k, v in report.items()) or "the model has no linear layers"
        raise InputError(f"torch backend: sparse_24 found no 2:4 linear weight to run sparse ({detail})")
    return report
