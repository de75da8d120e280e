"""``Session``: a loaded package variant that takes numpy arrays and returns numpy arrays."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from effdl.backends.base import Compiled, Runner, TensorSpec
from effdl.errors import BackendUnavailableError, InputError, UnknownNameError
from effdl.runtime.host import compare_hosts, host_fingerprint
from effdl.runtime.manifest import read_manifest, resolve_inside, verify_files

log = logging.getLogger("effdl.runtime")


class Session:
    """One variant of a package, ready to run.

    ``session.run({"image": x})``, ``session.run([x])``, ``session(x)`` or ``session(image=x)`` all
    return the outputs as a list of numpy arrays in ``session.outputs`` order. Inputs are checked
    against ``session.inputs`` (name, dtype, rank, static sizes) before they reach the backend.

    Thread safety: ``run`` may be called from many threads at once (ONNX Runtime sessions are
    thread-safe; the OpenVINO runner keeps one infer request per thread). ``run_async`` / ``arun`` run
    on a small thread pool of ``workers`` threads owned by the session; ``close()`` (or ``with``) stops it.
    """

    def __init__(
        self,
        root: Path,
        manifest: dict[str, Any],
        variant: dict[str, Any],
        runner: Runner,
        *,
        workers: int = 2,
        choice: str = "",
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.variant = variant
        self.runner = runner
        self.workers = workers
        self.choice = choice  # why this variant was loaded (the same text as the INFO log line)
        self.inputs = [TensorSpec.from_json(d) for d in manifest["inputs"]]
        self.outputs = [TensorSpec.from_json(d) for d in manifest["outputs"]]
        self.input_names = [s.name for s in self.inputs]
        # Per-input checks, precomputed once so that run() only compares (hot path).
        self._checks = [
            (
                s.name,
                np.dtype(s.dtype),
                len(s.shape),
                tuple((i, d) for i, d in enumerate(s.shape) if isinstance(d, int)),
            )
            for s in self.inputs
        ]
        self._single = self._checks[0] if len(self._checks) == 1 else None
        self._run = runner.run
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

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

    # ------------------------------------------------------------------------------------------------
    # Feeds and checks
    # ------------------------------------------------------------------------------------------------

    def _feeds(self, inputs: Any, named: Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(inputs, Mapping):
            feeds = dict(inputs)
        elif inputs is None:
            feeds = {}
        elif isinstance(inputs, np.ndarray):
            if len(self.input_names) != 1:
                raise InputError(f"this model takes {len(self.input_names)} inputs {self.input_names}; got one array")
            feeds = {self.input_names[0]: inputs}
        elif isinstance(inputs, Sequence) and not isinstance(inputs, str | bytes):
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

    def _fast_ok(self, x: Any) -> bool:
        """The single-input hot path: one ndarray of the right dtype, rank and static sizes."""
        if type(x) is not np.ndarray or self._single is None:
            return False
        _, dtype, rank, static = self._single
        if x.dtype != dtype or x.ndim != rank:
            return False
        shape = x.shape
        for i, d in static:
            if shape[i] != d:
                return False
        return True

    def prepare(self, inputs: Any = None, /, **named: np.ndarray) -> dict[str, np.ndarray]:
        """The checked feeds dict that ``run`` would pass to the backend (raises :class:`InputError`)."""
        feeds = self._feeds(inputs, named)
        self._check(feeds)
        return feeds

    # ------------------------------------------------------------------------------------------------
    # Running
    # ------------------------------------------------------------------------------------------------

    def run(self, inputs: Any = None, /, **named: np.ndarray) -> list[np.ndarray]:
        """Run once; inputs by name (dict or keywords), or positional (list, or one array)."""
        if not named:
            if self._fast_ok(inputs):
                return self._run({self._single[0]: inputs})  # type: ignore[index]
            if type(inputs) is dict:  # checked as given: no copy (the backends do not modify feeds)
                self._check(inputs)
                return self._run(inputs)
        feeds = self._feeds(inputs, named)
        self._check(feeds)
        return self._run(feeds)

    def __call__(self, *arrays: np.ndarray, **named: np.ndarray) -> list[np.ndarray]:
        """``session(x)`` / ``session(a, b)`` / ``session(image=x)``."""
        if len(arrays) == 1 and not named and self._fast_ok(arrays[0]):
            return self._run({self._single[0]: arrays[0]})  # type: ignore[index]
        return self.run(list(arrays) if arrays else None, **named)

    def run_batched(self, inputs: Any, batch_size: int) -> list[np.ndarray]:
        """Run a large batch in slices of ``batch_size`` along the first (dynamic) dimension.

        Every input is sliced along dimension 0 and every output concatenated along it, so the result
        equals ``run`` on the whole batch (for a model whose samples are independent). Refused when an
        input's or output's first dimension is static (the model then takes a fixed batch).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        for kind, specs in (("input", self.inputs), ("output", self.outputs)):
            for s in specs:
                if not s.shape or isinstance(s.shape[0], int):
                    raise InputError(
                        f"run_batched: {kind} {s.name!r} has a static first dimension (shape {list(s.shape)}); "
                        "this model takes a fixed batch, call run() with that batch instead"
                    )
        feeds = self.prepare(inputs)
        sizes = {k: v.shape[0] for k, v in feeds.items()}
        n = next(iter(sizes.values()))
        if len(set(sizes.values())) != 1:
            raise InputError(f"run_batched: inputs differ in their first (batch) dimension: {sizes}")
        if n == 0:
            raise InputError("run_batched: the batch is empty (first dimension 0)")
        if n <= batch_size:
            return self._run(feeds)
        parts = [self._run({k: v[i : i + batch_size] for k, v in feeds.items()}) for i in range(0, n, batch_size)]
        return [np.concatenate([p[j] for p in parts], axis=0) for j in range(len(parts[0]))]

    def _executor(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"effdl-{self.name}")
                pool = self._pool
        return pool

    def run_async(self, inputs: Any = None, /, **named: np.ndarray) -> Future[list[np.ndarray]]:
        """Submit one ``run`` to the session's thread pool; returns a ``concurrent.futures.Future``.

        Inputs are checked here, in the caller's thread, so a bad input raises :class:`InputError` at once.
        Do not modify the arrays until the future is done (they are not copied).
        """
        feeds = self.prepare(inputs, **named)
        return self._executor().submit(self._run, feeds)

    async def arun(self, inputs: Any = None, /, **named: np.ndarray) -> list[np.ndarray]:
        """``await session.arun(x)``: ``run`` on the session's thread pool, without blocking the event loop."""
        return await asyncio.wrap_future(self.run_async(inputs, **named))

    def close(self) -> None:
        """Stop the async thread pool (waiting for submitted runs). The session can still ``run``."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------------------------------------

    def benchmark(self, inputs: Any = None, *, warmup: int = 20, queries: int = 200, batch: int = 1) -> dict[str, Any]:
        """Quick single-stream timing on this device (perf_counter around each ``run``)."""
        from effdl.benchmark.stats import summarize

        if inputs is None:
            inputs = self.sample_inputs(batch)
        feeds = self.prepare(inputs)
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


# ----------------------------------------------------------------------------------------------------
# load()
# ----------------------------------------------------------------------------------------------------


def _backend_cls(name: str) -> Any:
    from effdl.backends import backend_class

    return backend_class(name)


def _backend_installed(name: str) -> bool:
    return importlib.util.find_spec(_backend_cls(name).module) is not None


def _known_devices() -> list[str]:
    from effdl.backends import BACKENDS

    return sorted({d for b in BACKENDS for d in _backend_cls(b).devices})


def _device_kind(device: str) -> str:
    """``cuda:1`` -> ``cuda``, ``GPU.0`` -> ``gpu``: the kind of device, without its index."""
    return device.split(":")[0].split(".")[0].strip().lower()


def _p50(v: dict[str, Any]) -> float:
    b = v.get("benchmark") or {}
    return float(b.get("p50_ms") or float("inf"))


def _fmt_p50(v: dict[str, Any]) -> str:
    p = _p50(v)
    return f"p50 {p:.3f} ms" if p != float("inf") else "no recorded p50"


def _recorded_host(root: Path, v: dict[str, Any]) -> dict[str, Any] | None:
    """Where the variant's benchmark ran: ``benchmark.host`` in the manifest, else the run report's ``system``."""
    host = (v.get("benchmark") or {}).get("host")
    if host:
        return host
    report = root / "report.json"
    if not report.is_file():
        return None
    try:
        system = json.loads(report.read_text()).get("system") or {}
    except (OSError, ValueError, AttributeError):
        return None
    cpu = system.get("cpu_model") or system.get("cpu")
    if str(cpu).lower() in _ARCH_NAMES:  # older reports put the architecture in "cpu": not a CPU model
        return None
    return (
        {"cpu": cpu, "machine": system.get("architecture"), "logical_cpus": system.get("logical_cpus")} if cpu else None
    )


_ARCH_NAMES = {"x86_64", "amd64", "aarch64", "arm64", "armv7l", "i686", "ppc64le", "s390x", "riscv64", "none"}


def _check_device(device: Any, manifest: dict[str, Any]) -> None:
    """A device kind that some backend knows, or that a variant of this package was built for."""
    known = set(_known_devices()) | {_device_kind(str(v.get("device") or "cpu")) for v in manifest["variants"]}
    if not isinstance(device, str) or _device_kind(device) not in known:
        raise InputError(f"unknown device {device!r}; known: {', '.join(sorted(known))} (with an index: cuda:1, gpu.1)")


def _check_args(backend: str, threads: Any, workers: Any) -> None:
    from effdl.backends import BACKENDS

    if backend != "auto" and backend not in BACKENDS:
        raise UnknownNameError("backend", backend, ["auto", *BACKENDS])
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be a positive integer or None (the runtime's default), got {threads!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}")


def load(
    path: str | Path,
    backend: str = "auto",
    device: str | None = None,
    threads: int | None = None,
    variant: str | None = None,
    verify: bool = True,
    workers: int = 2,
) -> Session:
    """Open a package folder and load one verified variant.

    ``backend="auto"`` tries, fastest first by the package's recorded p50 latency, every accepted
    variant for ``device`` whose backend is installed here, falling back to the next on failure, and
    logs (logger ``effdl.runtime``, INFO) which variant it chose and why. ``backend="onnxruntime"``
    restricts the choice to one backend; ``variant`` names one variant exactly. Every file the variant
    uses is checked against its size and sha256 (``verify=False`` skips the hash, not the path checks).
    ``threads`` sets the runtime's intra-op threads; ``workers`` the size of the ``run_async`` pool.
    ``device`` defaults to the device the named ``variant`` was built for, else ``"cpu"``.
    """
    _check_args(backend, threads, workers)
    root = Path(path)
    manifest = read_manifest(root)
    if device is None:
        named = [v for v in manifest["variants"] if variant is not None and v["name"] == variant]
        device = str(named[0].get("device") or "cpu") if named else "cpu"
    _check_device(device, manifest)
    dev = device.strip().lower()  # backends take "cpu", "cuda:1", "gpu.0" (OpenVINO upper-cases its own)
    variants = [v for v in manifest["variants"] if v.get("accepted", True)]
    if variant is not None:
        candidates = [v for v in variants if v["name"] == variant]
        if not candidates:
            raise InputError(f"package {root} has no variant {variant!r}; it has {[v['name'] for v in variants]}")
    else:
        candidates = [v for v in variants if _device_kind(v.get("device") or "cpu") == _device_kind(device)]
        if backend != "auto":
            candidates = [v for v in candidates if v["backend"] == backend]
        if not candidates:
            have = sorted({(v["backend"], v.get("device", "cpu")) for v in variants})
            raise InputError(f"package {root} has no variant for backend={backend!r} device={device!r}; it has {have}")
        candidates.sort(key=_p50)  # stable: variants without a recorded benchmark keep the manifest's order

    skipped: list[str] = []
    missing: dict[str, str] = {}  # backend -> install hint
    for v in candidates:
        cls = _backend_cls(v["backend"])
        if not _backend_installed(v["backend"]):
            missing[v["backend"]] = cls.install_hint
            skipped.append(f"{v['name']} ({_fmt_p50(v)}): backend {v['backend']} not installed")
            continue
        try:
            if verify:
                verify_files(root, manifest, v["files"])
            else:
                for rel in v["files"]:
                    resolve_inside(root, rel)
            compiled = Compiled([Path(f).name for f in v["files"]], v.get("meta", {}))
            base = root / Path(v["files"][0]).parent
            runner = cls().load(base, compiled, device=dev, threads=threads)
        except InputError:
            raise
        except Exception as e:  # a backend that fails to load here: fall back to the next variant
            skipped.append(f"{v['name']} ({_fmt_p50(v)}): failed to load: {type(e).__name__}: {e}")
            log.warning("variant %s failed to load (%s: %s); trying the next", v["name"], type(e).__name__, e)
            continue
        why = _why(root, v, candidates, skipped, backend, variant, device)
        log.info("%s", why)
        return Session(root, manifest, v, runner, workers=workers, choice=why)

    what = f"variant {variant!r}" if variant else f"backend={backend!r} device={device!r}"
    if missing and len(missing) == len({v["backend"] for v in candidates}):
        hint = "; ".join(f"{b}: {h}" for b, h in missing.items())
        raise BackendUnavailableError(
            f"package {root}: no runtime installed for {what}: {'; '.join(skipped)}", f"install one: {hint}"
        )
    hint = "; ".join(f"{b}: {h}" for b, h in missing.items()) if missing else None
    raise BackendUnavailableError(f"package {root}: no variant for {what} can run here: {'; '.join(skipped)}", hint)


def _why(
    root: Path,
    v: dict[str, Any],
    candidates: list[dict[str, Any]],
    skipped: list[str],
    backend: str,
    variant: str | None,
    device: str,
) -> str:
    """The sentence logged at INFO: what was loaded, by which rule, what was skipped, and where p50s come from."""
    head = f"loaded {v['name']} ({v['backend']}, {v.get('precision', 'fp32')}) from {root}"
    if variant is not None:
        rule = "variant named explicitly"
    else:
        scope = f"{device} variants" if backend == "auto" else f"{backend} variants for {device}"
        rule = (
            f"backend={backend}: fastest by recorded p50 of the {len(candidates)} {scope}, among those that load here"
        )
        if _p50(v) == float("inf"):
            rule += " (none recorded: manifest order)"
    parts = [head, rule, _fmt_p50(v)]
    if skipped:
        parts.append(f"skipped: {'; '.join(skipped)}")
    if variant is None and _p50(v) != float("inf"):
        parts.append(compare_hosts(_recorded_host(root, v), host_fingerprint())[1])
    return "; ".join(parts)
