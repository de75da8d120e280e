"""Time one model in this process and write the result as JSON (``python -m effdl.benchmark.worker``).

The pipeline runs every variant's benchmark in a fresh process: two runtimes' thread pools alive in
one process slow each other (up to 4x seen on 2 cores), and torch's OpenMP threads keep spinning
after torch work. One process per variant means each is timed alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from effdl.benchmark.system import peak_rss_bytes
from effdl.errors import EffdlError

METHOD = (
    "single-stream: time.perf_counter around each synchronous call, batch {batch}, after {warmup} "
    "untimed warm-up calls, in a fresh process per variant ({threads} intra-op threads)"
)

# How one query is timed, per scenario (the driver and settings are appended).
METHODS = {
    "single-stream": "single-stream: one query (1 sample of batch {batch}) at a time, issued when the previous "
    "completes; latency = perf_counter_ns from the query's hand-over to the system under test to its completion",
    "multi-stream": "multi-stream: queries of {spq} samples of batch {batch} ({how}), issued when the previous "
    "completes; latency = perf_counter_ns from hand-over to the completion of the query's last sample",
    "offline": "offline: one query of {samples} samples of batch {batch}, run one call per sample back to back; "
    "latency = perf_counter_ns around each call; throughput = samples x batch / wall time of the query",
    "server": "server: queries of 1 sample of batch {batch} arriving as a Poisson process at {qps:g} QPS, queued "
    "and run by one worker thread; latency = perf_counter_ns from arrival to completion (queueing included); "
    "throughput = completed samples x batch / wall time",
}


def time_queries(fn: Callable[[], Any], warmup: int, queries: int, min_duration_s: float = 0.0) -> list[float]:
    """Per-call latencies in seconds: ``warmup`` untimed calls, then at least ``queries`` timed calls
    and at least ``min_duration_s`` seconds of timing."""
    for _ in range(warmup):
        fn()
    clock = time.perf_counter
    lat: list[float] = []
    start = clock()
    while len(lat) < queries or clock() - start < min_duration_s:
        t0 = clock()
        fn()
        lat.append(clock() - t0)
    return lat


Infer = Callable[[Mapping[str, np.ndarray]], Any]


def _torch_fn(spec: dict[str, Any], feed: dict[str, np.ndarray]) -> tuple[Infer, dict[str, Any]]:
    import torch

    from effdl.sources import load_checkpoint

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    lm = load_checkpoint(spec["path"], arch=spec.get("arch"), factory=spec.get("factory"), task=spec.get("task"))
    module = lm.module  # already in eval mode (a torch.export module has no .eval())
    names = list(spec["input_names"])
    from_numpy = torch.from_numpy

    def infer(f: Mapping[str, np.ndarray]) -> Any:
        with torch.inference_mode():
            return module(*[from_numpy(f[n]) for n in names])

    info = {"backend": "torch", "mode": "eager", "version": torch.__version__, "threads": torch.get_num_threads()}
    return infer, info


BACKEND_METHOD = (
    "the runtime's own duration of each timed call ({what}), read after the call; it leaves out the Python "
    "side of the call that perf_counter includes"
)


def _package_fn(spec: dict[str, Any], feed: dict[str, np.ndarray]) -> tuple[Infer, dict[str, Any]]:
    from effdl.runtime import load

    session = load(spec["root"], variant=spec["variant"], threads=spec.get("threads"))
    session.run(feed)  # validates once; the timed loop measures what an app calls
    info = dict(session.runner.info)
    own = getattr(session.runner, "backend_latency_s", None)
    if not spec.get("backend_latency") or own is None or own() is None:
        return session.run, info
    # The runtime times its own calls (OpenVINO's InferRequest.latency): kept per call beside perf_counter's
    # (asked for by the spec: reading it adds ~0.5 us to each timed call).
    run, seen = session.run, []
    info["_backend_latencies"] = seen
    info["backend_latency_what"] = getattr(session.runner, "backend_latency_what", "the runtime's own timer")

    def infer(f: Mapping[str, np.ndarray]) -> Any:
        out = run(f)
        seen.append(own())
        return out

    return infer, info


def _onnx_fn(spec: dict[str, Any], feed: dict[str, np.ndarray]) -> tuple[Infer, dict[str, Any]]:
    backend = spec.get("backend") or "onnxruntime"
    names = list(spec["input_names"])
    if backend == "onnxruntime" and not spec.get("options"):
        import onnxruntime as ort

        from effdl.backends.onnxruntime import cpu_session, denormals_note

        run = cpu_session(spec["path"], spec.get("threads")).run

        def infer(f: Mapping[str, np.ndarray]) -> Any:
            return run(None, {n: f[n] for n in names})

        return infer, {"backend": "onnxruntime", "version": ort.__version__, "denormals": denormals_note(True)}
    # any other backend: compile the ONNX file with effdl's backend class into a scratch folder, then load it
    import tempfile

    from effdl.backends import backend_class

    b = backend_class(backend)()
    out = Path(tempfile.mkdtemp(prefix="effdl-bench-compile-"))
    compiled = b.compile(Path(spec["path"]), out, "model", dict(spec.get("options") or {}))
    runner = b.load(out, compiled, device=spec.get("target_device") or "cpu", threads=spec.get("threads"))
    return runner.run, dict(runner.info)


_KINDS = {"torch": _torch_fn, "package": _package_fn, "onnx": _onnx_fn}


def _feeds_from(spec: dict[str, Any]) -> tuple[list[dict[str, np.ndarray]], int]:
    """The samples: arrays of ``samples x batch`` items split into feeds of ``batch`` (the pipeline's npz holds
    one feed, its batch the arrays' length)."""
    data = np.load(spec["inputs_npz"])
    arrays = {k: data[k] for k in data.files}
    names = spec.get("input_names") or list(arrays)
    arrays = {n: arrays[n] for n in names} if all(n in arrays for n in names) else arrays
    total = len(next(iter(arrays.values())))
    batch = int(spec.get("batch") or total)
    n = max(1, total // batch)
    return [{k: v[i * batch : (i + 1) * batch] for k, v in arrays.items()} for i in range(n)], batch


def _settings_from(spec: dict[str, Any]) -> Any:
    from effdl.benchmark.scenarios import Settings

    if "settings" in spec:
        return Settings(**spec["settings"]).validate()
    # the pipeline's spec: a single-stream run of at least `queries` queries and `min_duration_s` seconds
    return Settings(
        scenario="single-stream",
        min_queries=int(spec["queries"]),
        min_duration_s=float(spec.get("min_duration_s") or 0.0),
        warmup=int(spec["warmup"]),
        rules="custom",
    ).validate()


def _energy_meter(spec: dict[str, Any], info: dict[str, Any]) -> tuple[Any, str | None]:
    """The meter for where this variant runs (``info["device"]``): NVML for a CUDA variant, the CPU's sensors
    or estimate for a CPU one, whatever profile the recipe named for the run as a whole."""
    try:
        from effdl.benchmark.energy import choose_meter
    except ImportError as e:  # pragma: no cover - energy.py needs only the standard library
        return None, str(e)
    gpu = str(info.get("device") or "cpu").lower().startswith("cuda")
    try:
        try:
            from effdl.devices import profile_for_device
        except ImportError as e:  # a runtime-only host (no pydantic / pyyaml): sensors only, no estimate
            try:
                return choose_meter(None, sensors=["nvml"] if gpu else None), None
            except EffdlError as e2:
                return None, f"{e2.message}; device profiles unavailable here ({e})"
        profile = profile_for_device(spec.get("device"), str(info.get("device") or "cpu"))
        if profile is None:  # a GPU no profile describes: its own counter, never the CPU's
            return choose_meter(None, sensors=["nvml"]), None
        return choose_meter(profile), None
    except EffdlError as e:  # no sensor and no profile figures to estimate from
        return None, e.message


def _gpu_memory(info: dict[str, Any]) -> int | None:
    text = json.dumps(info).lower()
    if "cuda" not in text and "tensorrt" not in text:
        return None
    try:
        from effdl.benchmark.gpu import process_gpu_memory

        return process_gpu_memory()
    except Exception:  # NVML missing or no permission: GPU memory is then unknown (null)
        return None


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Benchmark what ``spec`` names in this process; returns the benchmark record.

    ``spec`` names the model (``kind``: ``torch``, ``package``, ``onnx``), the inputs (``inputs_npz``, split
    into samples of ``batch``), and either the pipeline's ``warmup``/``queries``/``min_duration_s`` (a
    single-stream run) or ``settings`` (a :class:`effdl.benchmark.scenarios.Settings` as a dict) and ``driver``.
    """
    from effdl.benchmark.scenarios import METHOD_DRIVER, run_scenario, warmup
    from effdl.benchmark.stats import summarize

    feeds, batch = _feeds_from(spec)
    settings = _settings_from(spec)
    infer, info = _KINDS[spec["kind"]](spec, feeds[0])
    meter, energy_error = _energy_meter(spec, info)
    concat = bool(spec.get("concat", True))
    spq = settings.samples_per_query if settings.scenario == "multi-stream" else 1
    warm = warmup(infer, feeds, max(1, settings.warmup), samples_per_query=spq, concat=concat)
    own: list[float] | None = info.pop("_backend_latencies", None)
    if own is not None:
        own.clear()  # the timed queries' only
    expected = float(np.median(warm))  # one query
    # Memory of the loaded model after warm-up, before the load generator allocates its query schedule.
    rss_model = peak_rss_bytes()
    start_at = spec.get("start_at")  # run_concurrent's streams begin their timed queries together
    if start_at is not None:
        time.sleep(max(0.0, float(start_at) - time.time()))
    timed_from = time.time()
    if meter is not None:
        meter.start()
    res = run_scenario(
        settings,
        infer,
        feeds,
        concat=concat,
        driver=spec.get("driver", "auto"),
        expected_latency_s=expected,
    )
    reading = meter.stop() if meter is not None else None
    timed_unix = [timed_from, time.time()]
    sc = settings.scenario
    items_per_query = batch * (settings.samples_per_query if sc == "multi-stream" else 1)
    result = summarize(res.latencies_s, batch=items_per_query)
    inferences = res.samples * batch
    if sc in ("offline", "server") and res.duration_s > 0:
        result["throughput_per_s"] = inferences / res.duration_s
        throughput_method = "samples completed x batch / wall time from first issue to last completion"
    else:
        throughput_method = "items per query / mean latency"
    if reading is not None:
        energy = reading.to_json(inferences)
    else:
        from effdl.benchmark.energy import unavailable_json

        energy = unavailable_json(energy_error or "no meter")
    threads = info.get("threads") or spec.get("threads") or "runtime-default"
    if "settings" in spec:
        how = "one concatenated call" if spec.get("concat", True) else "one call per sample"
        method = METHODS[sc].format(
            batch=batch, spq=settings.samples_per_query, how=how, samples=res.samples, qps=settings.target_qps or 0
        )
        method += METHOD_DRIVER.format(
            driver=res.driver.get("name"), warmup=len(warm), threads=threads, pct=settings.percentile
        )
    else:
        method = METHOD.format(batch=batch, warmup=len(warm), threads=threads)
        if res.driver.get("name") == "mlperf_loadgen":
            method += "; queries issued by MLPerf LoadGen"
    pct = float(np.percentile(np.asarray(res.latencies_s) * 1e3, settings.percentile))
    result.update(
        {
            "scenario": sc,
            "batch": batch,
            "threads": spec.get("threads"),
            "warmup": len(warm),  # at least 1: the warm-up median sizes the LoadGen schedule
            "method": method,
            "throughput_method": throughput_method,
            "samples": res.samples,
            "inferences": inferences,
            "duration_s": res.duration_s,
            "timed_unix": timed_unix,  # wall clock (time.time) around the timed queries
            "target_percentile": {"percentile": settings.percentile, "latency_ms": pct},
            "settings": res.settings,
            "driver": res.driver,
            "loadgen": res.loadgen,
            "peak_rss_bytes": rss_model,
            "peak_rss_run_bytes": peak_rss_bytes(),
            "gpu_memory_bytes": _gpu_memory(info),
            "runtime_info": info,
            "energy": energy,
        }
    )
    if own and sc == "single-stream":  # one call per query: the runtime's figure is the query's
        result["backend_latency_ms"] = {
            **summarize(own, batch=items_per_query)["latency_ms"],
            "method": BACKEND_METHOD.format(what=info.get("backend_latency_what")),
        }
    if sc == "multi-stream":
        result["samples_per_query"] = settings.samples_per_query
    if sc == "server":
        bound = settings.target_latency_ms
        lg_met = (res.loadgen or {}).get("perf_constraints_met")
        result["server"] = {
            "target_qps": settings.target_qps,
            "achieved_qps": res.samples / res.duration_s if res.duration_s > 0 else None,
            "latency_bound_ms": bound,
            "latency_percentile": settings.percentile,
            "latency_at_percentile_ms": pct,
            "latency_bound_met": bool(lg_met) if lg_met is not None else pct <= bound,
            "how": "MLPerf LoadGen's perf-constraint verdict"
            if lg_met is not None
            else f"p{settings.percentile} <= bound",
        }
    if spec.get("collect_system"):
        result["system"] = _system()
        result["modules"] = sorted(
            m for m in ("torch", "onnx", "openvino", "onnxruntime", "pydantic") if m in sys.modules
        )
    return result


def _system() -> dict[str, Any]:
    """The host's facts for a report; on a runtime-only host (no pydantic/pyyaml) the basic platform facts."""
    try:
        from effdl.benchmark.system import report_system

        return report_system()
    except ImportError:
        import platform
        import socket

        from effdl.benchmark.system import package_versions, usable_cores

        return {
            "hostname": socket.gethostname(),
            "cpu": platform.processor() or platform.machine(),
            "cores": usable_cores(),
            "os": platform.platform(),
            "python": platform.python_version(),
            "architecture": platform.machine(),
            "libraries": {k: v for k, v in package_versions().items() if v},
        }


def run_isolated(spec: dict[str, Any], workdir: Path, timeout_s: float = 600.0) -> dict[str, Any]:
    """Run :func:`run_spec` in a fresh Python process; raises RuntimeError with its stderr on failure."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / f"bench-{spec['label']}.json"
    out_path = workdir / f"bench-{spec['label']}.out.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[2])  # the folder holding this effdl package
    env["PYTHONPATH"] = os.pathsep.join([here, os.getcwd(), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-m", "effdl.benchmark.worker", str(spec_path), str(out_path)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )
    if proc.returncode != 0 or not out_path.exists():
        lines = proc.stderr.strip().splitlines()
        errors = [ln[len("error: ") :] for ln in lines if ln.startswith("error: ")]
        tail = errors[-1] if errors else "\n".join(lines[-5:])
        err = BenchmarkError(f"benchmark of {spec['label']} failed (exit {proc.returncode}): {tail}")
        if proc.returncode in (2, 3, 4):  # the worker's own EffdlError: keep its exit code (2 = bad input)
            err.exit_code = proc.returncode
        raise err
    return json.loads(out_path.read_text())


def run_concurrent(spec: dict[str, Any], streams: int, workdir: Path, lead_s: float = 6.0) -> dict[str, Any]:
    """``streams`` copies of ``spec``, each in its own fresh process (:func:`run_isolated`), run at once: the
    throughput configuration of a multi-core CPU (for example one single-threaded stream per core), where the
    copies share caches and memory bandwidth as they would in deployment.

    Every copy loads and warms up, then waits for a common start time ``lead_s`` seconds after the launch, so
    that the timed queries overlap; ``overlap`` is the share of the timed span in which all copies were timing
    (1.0: perfectly together; a copy that loads slower than ``lead_s`` starts late and lowers it). Throughput:
    the sum over the copies of their timed inferences over their timed duration."""
    from concurrent.futures import ThreadPoolExecutor

    if streams < 1:
        raise ValueError(f"run_concurrent: streams must be >= 1, got {streams}")
    start_at = time.time() + lead_s
    specs = [{**spec, "label": f"{spec['label']}-s{i}", "start_at": start_at} for i in range(streams)]
    with ThreadPoolExecutor(streams) as pool:
        records = list(pool.map(lambda s: run_isolated(s, workdir), specs))
    spans = [r["timed_unix"] for r in records]
    common = min(e for _, e in spans) - max(b for b, _ in spans)
    total = max(e for _, e in spans) - min(b for b, _ in spans)
    return {
        "streams": streams,
        "throughput_per_s": sum(r["inferences"] / r["duration_s"] for r in records),
        "p50_ms": float(np.median([r["latency_ms"]["p50"] for r in records])),
        "overlap": max(0.0, common) / total if total > 0 else 1.0,
        "method": f"{streams} copies in their own processes, timed queries started together; throughput = sum of "
        "each copy's inferences / its timed duration; p50 = median of the copies' p50",
        "records": records,
    }


class BenchmarkError(EffdlError, RuntimeError):
    """A benchmark worker process failed; the message carries its error (a RuntimeError, as it always was)."""


def main(argv: list[str] | None = None) -> int:
    """``python -m effdl.benchmark.worker SPEC.json OUT.json``; an effdl error prints ``error: ...`` and exits
    with its code."""
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    try:
        result = run_spec(spec)
    except EffdlError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code
    Path(args[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
