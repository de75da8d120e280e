"""Time one model in this process and write the result as JSON (``python -m effdl.benchmark.worker``).

The pipeline runs every variant's benchmark in a fresh process: two runtimes' thread pools alive in
one process slow each other (up to 4x seen on 2 cores), and torch's OpenMP threads keep spinning
after torch work. One process per variant means each is timed alone.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

METHOD = (
    "single-stream: time.perf_counter around each synchronous call, batch {batch}, after {warmup} "
    "untimed warm-up calls, in a fresh process per variant ({threads} intra-op threads)"
)


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


def _torch_fn(spec: dict[str, Any], feeds: dict[str, np.ndarray]) -> tuple[Callable[[], Any], dict[str, Any]]:
    import torch

    from effdl.sources import load_checkpoint

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    lm = load_checkpoint(spec["path"], arch=spec.get("arch"), factory=spec.get("factory"), task=spec.get("task"))
    module = lm.module.eval()
    args = [torch.from_numpy(feeds[n]) for n in spec["input_names"]]

    def fn() -> Any:
        with torch.inference_mode():
            return module(*args)

    return fn, {"backend": "torch", "mode": "eager", "version": torch.__version__, "threads": torch.get_num_threads()}


def _package_fn(spec: dict[str, Any], feeds: dict[str, np.ndarray]) -> tuple[Callable[[], Any], dict[str, Any]]:
    from effdl.runtime import load

    session = load(spec["root"], variant=spec["variant"], threads=spec.get("threads"))
    session.run(feeds)  # validates once; the timed loop measures what an app calls
    return (lambda: session.run(feeds)), dict(session.runner.info)


def _onnx_fn(spec: dict[str, Any], feeds: dict[str, np.ndarray]) -> tuple[Callable[[], Any], dict[str, Any]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if spec.get("threads"):
        so.intra_op_num_threads = int(spec["threads"])
    sess = ort.InferenceSession(spec["path"], so, providers=["CPUExecutionProvider"])
    feeds = {n: feeds[n] for n in spec["input_names"]}
    return (lambda: sess.run(None, feeds)), {"backend": "onnxruntime", "version": ort.__version__}


_KINDS = {"torch": _torch_fn, "package": _package_fn, "onnx": _onnx_fn}


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Benchmark what ``spec`` names in this process; returns the benchmark record."""
    from effdl.benchmark.stats import summarize

    data = np.load(spec["inputs_npz"])
    feeds = {k: data[k] for k in data.files}
    fn, info = _KINDS[spec["kind"]](spec, feeds)
    lat = time_queries(fn, spec["warmup"], spec["queries"], spec.get("min_duration_s", 0.0))
    batch = len(next(iter(feeds.values())))
    result = summarize(lat, batch=batch)
    threads = info.get("threads") or spec.get("threads") or "runtime-default"
    result.update(
        {
            "scenario": "single-stream",
            "batch": batch,
            "threads": spec.get("threads"),
            "warmup": spec["warmup"],
            "method": METHOD.format(batch=batch, warmup=spec["warmup"], threads=threads),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "runtime_info": info,
            "energy": None,
        }
    )
    return result


def run_isolated(spec: dict[str, Any], workdir: Path, timeout_s: float = 600.0) -> dict[str, Any]:
    """Run :func:`run_spec` in a fresh Python process; raises RuntimeError with its stderr on failure."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / f"bench-{spec['label']}.json"
    out_path = workdir / f"bench-{spec['label']}.out.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-m", "effdl.benchmark.worker", str(spec_path), str(out_path)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )
    if proc.returncode != 0 or not out_path.exists():
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"benchmark of {spec['label']} failed (exit {proc.returncode}): {tail}")
    return json.loads(out_path.read_text())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    result = run_spec(spec)
    Path(args[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
