"""``Session``: a loaded package variant that takes numpy arrays and returns numpy arrays."""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from effdl.backends.base import Compiled, Runner, TensorSpec
from effdl.errors import BackendUnavailableError, InputError
from effdl.runtime.manifest import read_manifest, verify_files

log = logging.getLogger("effdl.runtime")

_BACKEND_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt", "torch": "torch"}


class Session:
    """One variant of a package, ready to run.

    ``session.run({"image": x})``, ``session.run([x])``, ``session(x)`` or ``session(image=x)`` all
    return the outputs as a list of numpy arrays in ``session.outputs`` order. Inputs are checked
    against ``session.inputs`` (name, dtype, rank, static sizes) before they reach the backend.
    """

    def __init__(self, root: Path, manifest: dict[str, Any], variant: dict[str, Any], runner: Runner) -> None:
        self.root = root
        self.manifest = manifest
        self.variant = variant
        self.runner = runner
        self.inputs = [TensorSpec.from_json(d) for d in manifest["inputs"]]
        self.outputs = [TensorSpec.from_json(d) for d in manifest["outputs"]]
        self.input_names = [s.name for s in self.inputs]
        self._checks = [
            (s.name, np.dtype(s.dtype), len(s.shape), [(i, d) for i, d in enumerate(s.shape) if isinstance(d, int)])
            for s in self.inputs
        ]
        self._run = runner.run

    @property
    def backend(self) -> str:
        return self.variant["backend"]

    @property
    def name(self) -> str:
        return self.variant["name"]

    @property
    def precision(self) -> str:
        return self.variant.get("precision", "fp32")

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}{list(s.shape)}:{s.dtype}" for s in self.inputs)
        return f"Session({self.root.name!r}, variant={self.name!r}, inputs=[{ins}])"

    def _feeds(self, inputs: Any, named: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if isinstance(inputs, Mapping):
            feeds = dict(inputs)
        elif inputs is None:
            feeds = {}
        elif isinstance(inputs, np.ndarray):
            feeds = {self.input_names[0]: inputs} if len(self.input_names) == 1 else None
            if feeds is None:
                raise InputError(f"this model takes {len(self.input_names)} inputs {self.input_names}; got one array")
        elif isinstance(inputs, Sequence):
            if len(inputs) != len(self.input_names):
                raise InputError(
                    f"this model takes {len(self.input_names)} inputs {self.input_names}; got {len(inputs)}"
                )
            feeds = dict(zip(self.input_names, inputs, strict=True))
        else:
            raise InputError(f"inputs must be a dict, a list or a numpy array, not {type(inputs).__name__}")
        if named:
            feeds.update(named)
        return feeds

    def _check(self, feeds: dict[str, Any]) -> None:
        if len(feeds) != len(self._checks) or any(name not in feeds for name, *_ in self._checks):
            unknown = sorted(set(feeds) - set(self.input_names))
            missing = [n for n in self.input_names if n not in feeds]
            parts = []
            if unknown:
                parts.append(f"unknown input(s) {unknown}")
            if missing:
                parts.append(f"missing input(s) {missing}")
            raise InputError(f"{'; '.join(parts)}; this model's inputs are {self.input_names}")
        for name, dtype, rank, static in self._checks:
            x = feeds[name]
            if not isinstance(x, np.ndarray):
                raise InputError(f"input {name!r}: expected a numpy array, got {type(x).__name__}")
            if x.dtype != dtype:
                raise InputError(f"input {name!r}: dtype {x.dtype} given, {dtype} expected")
            if x.ndim != rank:
                spec = next(s for s in self.inputs if s.name == name)
                raise InputError(
                    f"input {name!r}: rank {x.ndim} (shape {list(x.shape)}) given, rank {rank} expected "
                    f"(shape {list(spec.shape)})"
                )
            for i, d in static:
                if x.shape[i] != d:
                    spec = next(s for s in self.inputs if s.name == name)
                    raise InputError(
                        f"input {name!r}: dimension {i} is {x.shape[i]}, expected {d} "
                        f"(shape {list(x.shape)} given, {list(spec.shape)} expected)"
                    )

    def run(self, inputs: Any = None, /, **named: np.ndarray) -> list[np.ndarray]:
        """Run once; inputs by name (dict or keywords), or positional (list, or one array)."""
        feeds = self._feeds(inputs, named)
        self._check(feeds)
        return self._run(feeds)

    def __call__(self, *arrays: np.ndarray, **named: np.ndarray) -> list[np.ndarray]:
        """``session(x)`` / ``session(a, b)`` / ``session(image=x)``."""
        return self.run(list(arrays) if arrays else None, **named)

    def benchmark(self, inputs: Any = None, *, warmup: int = 20, queries: int = 200, batch: int = 1) -> dict[str, Any]:
        """Quick single-stream timing on this device (perf_counter around each ``run``)."""
        from effdl.benchmark.stats import summarize

        if inputs is None:
            inputs = self.sample_inputs(batch)
        feeds = self._feeds(inputs, {})
        self._check(feeds)
        for _ in range(warmup):
            self._run(feeds)
        lat = []
        clock = time.perf_counter
        for _ in range(queries):
            t0 = clock()
            self._run(feeds)
            lat.append(clock() - t0)
        out = summarize(lat, batch=len(next(iter(feeds.values()))))
        out.update({"variant": self.name, "warmup": warmup, "method": "perf_counter around Session.run"})
        return out

    def sample_inputs(self, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
        """Random inputs of the right names, dtypes and shapes (dynamic dims set to ``batch``)."""
        rng = np.random.default_rng(seed)
        feeds = {}
        for s in self.inputs:
            shape = [d if isinstance(d, int) else batch for d in s.shape]
            dt = np.dtype(s.dtype)
            if dt.kind == "f":
                feeds[s.name] = rng.standard_normal(shape).astype(dt)
            elif dt.kind in "iu":
                feeds[s.name] = rng.integers(0, 2, size=shape).astype(dt)
            else:
                feeds[s.name] = np.zeros(shape, dt)
        return feeds


def _backend_installed(name: str) -> bool:
    mod = _BACKEND_MODULES.get(name, name)
    return importlib.util.find_spec(mod) is not None


def _p50(v: dict[str, Any]) -> float:
    b = v.get("benchmark") or {}
    return float(b.get("p50_ms") or float("inf"))


def load(
    path: str | Path,
    backend: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
    variant: str | None = None,
    verify: bool = True,
) -> Session:
    """Open a package folder and load one verified variant.

    ``backend="auto"`` tries, fastest first by the package's recorded p50 latency, every accepted
    variant for ``device`` whose backend is installed here, falling back to the next on failure.
    ``variant`` names one variant exactly. Every file the variant uses is checked against its sha256.
    """
    from effdl.backends import backend_class

    root = Path(path)
    manifest = read_manifest(root)
    variants = [v for v in manifest["variants"] if v.get("accepted", True)]
    if variant is not None:
        chosen = [v for v in variants if v["name"] == variant]
        if not chosen:
            raise InputError(f"package {root} has no variant {variant!r}; it has {[v['name'] for v in variants]}")
    else:
        chosen = [v for v in variants if v.get("device", "cpu") == device]
        if backend != "auto":
            chosen = [v for v in chosen if v["backend"] == backend]
        if not chosen:
            have = sorted({(v["backend"], v.get("device", "cpu")) for v in variants})
            raise InputError(f"package {root} has no variant for backend={backend!r} device={device!r}; it has {have}")
        chosen.sort(key=_p50)
    errors: list[str] = []
    for v in chosen:
        if not _backend_installed(v["backend"]):
            errors.append(f"{v['name']}: backend {v['backend']} not installed")
            continue
        try:
            if verify:
                verify_files(root, manifest, v["files"])
            compiled = Compiled([Path(f).name for f in v["files"]], v.get("meta", {}))
            base = root / Path(v["files"][0]).parent
            runner = backend_class(v["backend"])().load(base, compiled, device=device, threads=threads)
        except InputError:
            raise
        except Exception as e:  # a backend that fails to load here: fall back to the next variant
            errors.append(f"{v['name']}: {type(e).__name__}: {e}")
            log.warning("effdl.runtime: variant %s failed to load (%s); trying the next", v["name"], e)
            continue
        why = "named explicitly" if variant else f"fastest installed for {device} (p50 {_p50(v):.3f} ms recorded)"
        if errors:
            why += f"; skipped: {'; '.join(errors)}"
        log.info("effdl.runtime: loaded %s from %s (%s)", v["name"], root, why)
        return Session(root, manifest, v, runner)
    raise BackendUnavailableError(
        f"no variant of package {root} can run here: {'; '.join(errors)}",
        "install one of the backends: pip install onnxruntime | openvino",
    )
