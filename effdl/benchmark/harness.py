"""``effdl bench``: benchmark a package, an ONNX file or a checkpoint under one MLPerf scenario, write a report.

The flow: :func:`resolve_target` reads what the target is (its variants, input specs, task, MACs, file sizes);
:func:`make_inputs` prepares the samples (the task's held-out data when the task is known, else seeded random
arrays of the right dtype and shape); :func:`run_bench` times every variant alone in a fresh process
(``effdl.benchmark.worker``), locally or on a remote host over SSH (``effdl.benchmark.remote``), and
:func:`build_report` turns the records into an ``effdl.report/1`` report of kind ``bench``.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effdl.benchmark.scenarios import Settings
from effdl.errors import InputError, UnknownNameError

MAX_INPUT_BYTES = 256 << 20  # memory for the prepared samples, all together
MAX_SAMPLES = 64  # distinct samples (LoadGen's performance sample set)
DYNAMIC_DIM = 16  # size given to a dynamic non-batch axis (e.g. sequence length) when the task is unknown
CHECKPOINT_SUFFIXES = (".safetensors", ".pt2", ".pt", ".pth", ".ts", ".torchscript")


@dataclass
class VariantPlan:
    """One thing to time: its report fields and the worker spec that loads it."""

    name: str
    backend: str
    precision: str
    spec: dict[str, Any]
    model: str | None = None
    device: str = "cpu"
    files: list[str] = field(default_factory=list)
    size_bytes: int | None = None
    reference: bool = False


@dataclass
class Target:
    """What ``effdl bench`` was pointed at."""

    kind: str  # "package", "onnx" or "checkpoint"
    path: Path
    title: str
    inputs: list[dict[str, Any]]  # {"name", "dtype", "shape"}; None / str = dynamic axis
    variants: list[VariantPlan]
    task: str | None = None
    task_options: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    macs: int | None = None

    @property
    def concat(self) -> bool:
        """Whether samples can be concatenated on axis 0 (every input's first axis is dynamic)."""
        return all(s["shape"] and not isinstance(s["shape"][0], int) for s in self.inputs)


_TASKS: dict[str, Any] = {}


def _get_task(name: str, options: dict[str, Any] | None = None) -> Any:
    """The task, built once per process (its splits take seconds to generate)."""
    from effdl.tasks import get_task

    key = json.dumps([name, options or {}], sort_keys=True, default=str)
    if key not in _TASKS:
        _TASKS[key] = get_task(name, **(options or {}))
    return _TASKS[key]


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def resolve_target(
    path: str | Path,
    *,
    backends: list[str] | None = None,
    variants: list[str] | None = None,
    arch: str | None = None,
    factory: str | None = None,
    task: str | None = None,
) -> Target:
    """Inspect ``path`` (a package folder, an ``.onnx`` file or a checkpoint) and plan its variants.

    ``backends`` / ``variants`` (comma lists allowed) select package variants, or the backends an ONNX file
    is compiled for (default onnxruntime). A checkpoint runs in torch eager mode.
    """
    p = Path(path)
    backends, names = _split(backends), _split(variants)
    if not p.exists():
        raise InputError(f"bench target not found: {p}")
    if p.is_dir():
        return _package_target(p, backends, names)
    if p.suffix.lower() == ".onnx":
        return _onnx_target(p, backends or ["onnxruntime"], names, task)
    if p.suffix.lower() in CHECKPOINT_SUFFIXES:
        if backends and backends != ["torch"]:
            raise InputError(
                f"{p}: a checkpoint is benchmarked in torch eager mode (--backend torch); for "
                f"{', '.join(backends)} run `effdl compress` first and bench the package"
            )
        return _checkpoint_target(p, arch, factory, task)
    raise InputError(
        f"{p}: not a package folder, an .onnx file or a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)})",
    )


def _package_target(root: Path, backends: list[str], names: list[str]) -> Target:
    from effdl.runtime import read_manifest

    manifest = read_manifest(root)
    accepted = [v for v in manifest["variants"] if v.get("accepted", True)]
    if not accepted:
        raise InputError(f"package {root} has no accepted variant")
    chosen = accepted
    if names:
        known = [v["name"] for v in accepted]
        for n in names:
            if n not in known:
                raise UnknownNameError("variant", n, known)
        chosen = [v for v in chosen if v["name"] in names]
    if backends:
        have = sorted({v["backend"] for v in chosen})
        chosen = [v for v in chosen if v["backend"] in backends]
        if not chosen:
            raise InputError(f"package {root}: no variant for --backend {','.join(backends)}; it has {have}")
    files = manifest.get("files", {})
    plans = []
    for v in chosen:
        size = sum(int(files[f]["bytes"]) for f in v["files"] if f in files)
        plans.append(
            VariantPlan(
                name=v["name"],
                backend=v["backend"],
                precision=v.get("precision", "fp32"),
                model=v.get("model"),
                device=v.get("device", "cpu"),
                files=list(v["files"]),
                size_bytes=size,
                spec={"kind": "package", "root": str(root), "variant": v["name"]},
            )
        )
    source = dict(manifest.get("source") or {})
    macs = None
    report_path = root / "report.json"  # effdl compress writes its report beside the manifest
    if report_path.is_file():
        try:
            src = json.loads(report_path.read_text()).get("source") or {}
            macs = src.get("macs") if isinstance(src.get("macs"), int) else None
            source = {**src, **source} if src else source
        except (OSError, json.JSONDecodeError):
            pass
    source.setdefault("path", str(root))
    source["package"] = str(root)
    task = (manifest.get("task") or {}).get("name")
    return Target(
        kind="package",
        path=root,
        title=str(manifest.get("name") or root.name),
        inputs=list(manifest["inputs"]),
        variants=plans,
        task=task,
        source=source,
        macs=macs,
    )


def onnx_input_specs(path: Path) -> tuple[list[dict[str, Any]], str]:
    """Input specs of an ONNX file (initialisers excluded) and its precision (``int8`` when it has Q/DQ nodes)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends for a broken file
        raise InputError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    init = {i.name for i in proto.graph.initializer}
    specs = []
    for vi in proto.graph.input:
        if vi.name in init:
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        specs.append({"name": vi.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name, "shape": dims})
    ops = {n.op_type for n in proto.graph.node}
    precision = "int8" if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"} else "fp32"
    return specs, precision


def _onnx_target(path: Path, backends: list[str], names: list[str], task: str | None) -> Target:
    from effdl.backends import BACKENDS
    from effdl.sources import sha256_file

    specs, precision = onnx_input_specs(path)
    plans = []
    for b in backends:
        if b not in BACKENDS or b == "torch":
            raise UnknownNameError("backend for an ONNX file", b, [x for x in BACKENDS if x != "torch"])
        options = {"inference_precision": "fp32"} if b == "openvino" and precision == "fp32" else {}
        plans.append(
            VariantPlan(
                name=f"{b}-{precision}",
                backend=b,
                precision=precision,
                model=path.stem,
                files=[path.name],
                size_bytes=path.stat().st_size,
                spec={
                    "kind": "onnx",
                    "path": str(path),
                    "backend": b,
                    "options": options,
                    "input_names": [s["name"] for s in specs],
                },
            )
        )
    if names:
        known = [v.name for v in plans]
        for n in names:
            if n not in known:
                raise UnknownNameError("variant", n, known)
        plans = [v for v in plans if v.name in names]
    source = {"path": str(path), "format": "onnx", "sha256": sha256_file(path), "kind": "onnx"}
    return Target(
        kind="onnx", path=path, title=path.stem, inputs=specs, variants=plans, task=task, source=source, macs=None
    )


def _checkpoint_target(path: Path, arch: str | None, factory: str | None, task: str | None) -> Target:
    from effdl.sources import load_checkpoint

    lm = load_checkpoint(path, arch=arch, factory=factory, task=task)
    if lm.kind != "torch":
        return _onnx_target(lm.onnx_path or path, ["onnxruntime"], [], task or lm.task)
    task_name = task or lm.task
    if not task_name:
        raise InputError(
            f"{path}: the checkpoint records no task, so its inputs are unknown; pass --task NAME",
        )
    t = _get_task(task_name, lm.task_options)
    example = t.example_inputs(1)
    specs = [{"name": n, "dtype": example[n].dtype.name, "shape": [None, *example[n].shape[1:]]} for n in t.input_names]
    macs = None
    try:
        from effdl.zoo.profile import count_macs

        macs = count_macs(lm.module, example, t.input_names)
    except Exception:  # some custom modules trip torch's FLOP counter; MACs are then unknown
        macs = None
    source = {**lm.describe(), "macs": macs}
    plan = VariantPlan(
        name="torch-eager",
        backend="torch",
        precision="fp32",
        model="fp32",
        files=[path.name],
        size_bytes=path.stat().st_size,
        reference=True,
        spec={
            "kind": "torch",
            "path": str(path),
            "arch": arch or lm.arch,
            "factory": factory,
            "task": task_name,
            "input_names": list(t.input_names),
        },
    )
    return Target(
        kind="checkpoint",
        path=path,
        title=lm.arch or path.stem,
        inputs=specs,
        variants=[plan],
        task=task_name,
        task_options=dict(lm.task_options or {}),
        source=source,
        macs=macs,
    )


def _sample_shape(spec: dict[str, Any], batch: int) -> list[int]:
    shape = spec["shape"] or []
    return [
        batch if i == 0 and not isinstance(d, int) else (d if isinstance(d, int) else DYNAMIC_DIM)
        for i, d in enumerate(shape)
    ]


def make_inputs(
    target: Target, batch: int, *, seed: int = 0, use_task: bool = True, samples: int | None = None
) -> tuple[dict[str, np.ndarray], int, str]:
    """Arrays of ``samples x batch`` items per input, the sample count, and how they were made.

    The task's held-out split is used when the task is known and its inputs fit the target's specs (cycled
    when it has fewer items); otherwise seeded random data: standard normal floats, integers in {0, 1}
    (valid token ids and indices for any vocabulary), random booleans.
    """
    if batch < 1:
        raise InputError(f"--batch must be at least 1, got {batch}")
    if not target.inputs:
        raise InputError(f"{target.path}: the model declares no inputs")
    for s in target.inputs:
        shape = s["shape"] or []
        if (not shape or isinstance(shape[0], int)) and shape[:1] != [batch]:
            raise InputError(
                f"--batch {batch}: input {s['name']!r} has a static first axis {shape[:1]} "
                f"(shape {shape}); use --batch {shape[0] if shape else 1}"
            )
    per_sample = sum(int(np.prod(_sample_shape(s, batch))) * np.dtype(s["dtype"]).itemsize for s in target.inputs)
    n = samples or max(1, min(MAX_SAMPLES, MAX_INPUT_BYTES // max(1, per_sample)))
    items = n * batch
    why_not_task = None
    if use_task and target.task:
        try:
            arrays = _task_inputs(target, items)
            return arrays, n, f"task {target.task!r} held-out split, {items} items (cycled if fewer), seed 0"
        except InputError as e:
            why_not_task = e.message
    rng = np.random.default_rng(seed)
    arrays = {}
    notes = []
    for s in target.inputs:
        shape = _sample_shape(s, batch)
        shape[0] *= n  # n samples of `batch` items, one after another on axis 0
        if any(not isinstance(d, int) for d in (s["shape"] or [])[1:]):
            notes.append(f"dynamic axes of {s['name']!r} set to {DYNAMIC_DIM}")
        dt_ = np.dtype(s["dtype"])
        if dt_.kind == "f":
            arrays[s["name"]] = rng.standard_normal(shape).astype(dt_)
        elif dt_.kind in "iu":
            arrays[s["name"]] = rng.integers(0, 2, size=shape).astype(dt_)
        elif dt_.kind == "b":
            arrays[s["name"]] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise InputError(f"input {s['name']!r}: cannot generate data of dtype {dt_}")
    how = f"random (seed {seed}): standard normal floats, integers in {{0, 1}}; {n} samples of batch {batch}"
    if notes:
        how += "; " + "; ".join(notes)
    if why_not_task:
        how += f"; task data not used: {why_not_task}"
    return arrays, n, how


def _task_inputs(target: Target, items: int) -> dict[str, np.ndarray]:
    try:
        task = _get_task(target.task, target.task_options)
    except InputError as e:
        raise InputError(f"task {target.task!r} unavailable ({e.message})") from None
    split = task.split("heldout")
    out = {}
    for s in target.inputs:
        if s["name"] not in split.inputs:
            raise InputError(f"task {target.task!r} has no input {s['name']!r} (it has {list(split.inputs)})")
        x = np.asarray(split.inputs[s["name"]])
        if x.dtype != np.dtype(s["dtype"]):
            raise InputError(f"task input {s['name']!r} is {x.dtype}, the model wants {s['dtype']}")
        shape = s["shape"] or []
        if x.ndim != len(shape) or any(isinstance(d, int) and d != x.shape[i] for i, d in enumerate(shape) if i):
            raise InputError(f"task input {s['name']!r} has shape {list(x.shape)}, the model wants {shape}")
        reps = -(-items // len(x))
        out[s["name"]] = np.concatenate([x] * reps)[:items] if reps > 1 else x[:items]
    return out


def run_bench(
    target: Target,
    settings: Settings,
    *,
    batch: int = 1,
    threads: int | None = None,
    device: str | None = None,
    driver: str = "auto",
    workdir: Path | None = None,
    remote: Any = None,
    use_task: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time every variant of ``target`` alone in a fresh process and return the ``bench`` report.

    ``device`` is a device profile name or YAML path (energy estimate, roofline, report); ``remote`` an
    :class:`effdl.benchmark.remote.RemoteHost` to run on instead of this machine.
    """
    from effdl.benchmark.worker import run_isolated

    say = progress or (lambda _msg: None)
    settings.validate()
    profile = _profile(device, local=remote is None)
    arrays, n, inputs_how = make_inputs(target, batch, seed=settings.seed, use_task=use_task)
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="effdl-bench-")) if own else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    inputs_npz = work / "inputs.npz"
    np.savez(inputs_npz, **arrays)
    common = {
        "inputs_npz": str(inputs_npz),
        "input_names": [s["name"] for s in target.inputs],
        "batch": batch,
        "threads": threads,
        "settings": {k: v for k, v in settings.__dict__.items()},
        "driver": driver,
        "concat": target.concat,
        "device": device,
    }
    records: dict[str, dict[str, Any]] = {}
    remote_system = None
    t0 = dt.datetime.now(dt.UTC)
    try:
        if remote is not None:
            specs = [{**common, **v.spec, "label": _label(v.name)} for v in target.variants]
            say(f"copying {target.path} and the effdl runtime to {remote.target}")
            results, remote_system = remote.run_specs(target, specs, device=device, progress=say)
            records = dict(zip([v.name for v in target.variants], results, strict=True))
        else:
            timeout = max(600.0, settings.min_duration_s * 3 + 300)
            for v in target.variants:
                say(f"benchmark {v.name} ({settings.scenario})")
                records[v.name] = run_isolated({**common, **v.spec, "label": _label(v.name)}, work, timeout)
    finally:
        if own:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    seconds = (dt.datetime.now(dt.UTC) - t0).total_seconds()
    return build_report(
        target,
        settings,
        records,
        profile=profile,
        device=device,
        inputs_how=inputs_how,
        samples=n,
        seconds=seconds,
        remote=remote,
        remote_system=remote_system,
    )


def _label(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _profile(device: str | None, *, local: bool) -> Any:
    from effdl.devices import load_profile, profile_for_host

    if device:
        profile = load_profile(device)
        if local and any(u.cores is None for u in profile.units):  # a per-core profile: scale it to this host
            from effdl.devices import detect_host, scale_to_host

            profile = scale_to_host(profile, detect_host(gpus=False))
        return profile
    return profile_for_host(unit="cpu") if local else None


def roofline(macs: int | None, record: dict[str, Any], backend: str, precision: str, profile: Any) -> dict[str, Any]:
    """Achieved ops/s (2 x MACs x items per call / p50 call latency) against the profile's peak for ``precision``."""
    from effdl.devices import peak_ops

    if macs is None:
        return {"efficiency": None, "reason": "MACs unknown (counted only for checkpoints, or from a package's report)"}
    b = record
    items = b["batch"] * (b.get("samples_per_query", 1) if b["scenario"] == "multi-stream" else 1)
    achieved = 2.0 * macs * items / (b["latency_ms"]["p50"] / 1e3)
    if profile is None:
        return {"efficiency": None, "achieved_ops_per_s": achieved, "reason": "no device profile (--device)"}
    dtype = precision if precision in ("fp32", "bf16", "fp16", "int8", "int4", "fp8", "tf32") else "fp32"
    # ONNX Runtime's int8 kernels use AVX-512 VNNI, not AMX: compare them with the vector peak.
    variant = None if backend == "onnxruntime" else "best"
    peak = peak_ops(profile, dtype, variant=variant)
    if not peak:
        return {"efficiency": None, "achieved_ops_per_s": achieved, "reason": f"no {dtype} peak in {profile.name}"}
    return {
        "efficiency": achieved / peak,
        "achieved_ops_per_s": achieved,
        "peak_ops_per_s": peak,
        "dtype": dtype,
        "method": f"2 x {macs} MACs x {items} items / p50 latency, vs {profile.name} {dtype} peak"
        + (" (vector ISA, not AMX)" if variant is None else ""),
    }


def build_report(
    target: Target,
    settings: Settings,
    records: dict[str, dict[str, Any]],
    *,
    profile: Any,
    device: str | None,
    inputs_how: str,
    samples: int,
    seconds: float | None,
    remote: Any = None,
    remote_system: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``effdl.report/1`` report of kind ``bench`` for the benchmark ``records`` (one per variant)."""
    from effdl import __version__
    from effdl.benchmark.system import report_system
    from effdl.devices import report_json
    from effdl.report import SCHEMA, validate_report

    sc = settings.scenario
    notes: list[str] = []
    shortfall = settings.shortfall()
    if shortfall:
        notes.append(f"shorter than the MLPerf rules for {sc} ({'; '.join(shortfall)}): not a compliant result")
    variants = []
    ref = next((v for v in target.variants if v.reference), None)
    ref_p50 = records[ref.name]["latency_ms"]["p50"] if ref else None
    for v in target.variants:
        b = dict(records[v.name])
        info = b.pop("runtime_info", {}) or {}
        b.pop("system", None)
        b["inputs"] = inputs_how
        b["model_size_bytes"] = v.size_bytes
        precision = v.precision
        if v.backend == "openvino" and v.precision == "fp32" and info.get("inference_precision"):
            # what OpenVINO actually ran (BF16 is never passed off as FP32), named as the pipeline names it
            ran = str(info["inference_precision"]).lower()
            precision = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(ran, ran)
        b["roofline"] = roofline(target.macs, b, v.backend, precision, profile)
        lg = b.get("loadgen") or {}
        if lg.get("validity") == "INVALID":
            why = [
                k
                for k in ("min_duration_met", "min_queries_met", "perf_constraints_met", "early_stopping_met")
                if lg.get(k) is False
            ]
            notes.append(f"{v.name}: LoadGen result INVALID ({', '.join(why) or lg.get('invalid_reason')} not met)")
        if b.get("noisy"):
            notes.append(f"{v.name}: noisy run (CV {b['cv']:.2f} > 0.25); treat the percentiles with care")
        if sc == "server":
            s = b["server"]
            notes.append(
                f"{v.name}: server at {s['target_qps']:g} QPS, p{s['latency_percentile']} "
                f"{s['latency_at_percentile_ms']:.3f} ms vs bound {s['latency_bound_ms']:g} ms: "
                + ("met" if s["latency_bound_met"] else "NOT met")
            )
        e = b.get("energy") or {}
        if e.get("estimate"):
            notes.append(f"{v.name}: energy is an ESTIMATE from the device profile, not a measurement")
        p50 = b["latency_ms"]["p50"]
        variants.append(
            {
                "name": v.name,
                "backend": v.backend,
                "model": v.model,
                "precision": precision,
                "device": v.device,
                "files": v.files,
                "size_bytes": v.size_bytes,
                "accepted": True,
                "reference": v.reference,
                "runtime_info": info,
                "verification": None,
                "benchmark": b,
                "speedup": ref_p50 / p50 if ref_p50 and p50 > 0 else None,
            }
        )
    if sc == "offline":
        best = max(variants, key=lambda r: r["benchmark"]["throughput_per_s"])["name"]
    else:
        best = min(variants, key=lambda r: r["benchmark"]["latency_ms"]["p50"])["name"]
    task_json = None
    if target.task:
        try:
            t = _get_task(target.task, target.task_options)
            task_json = {
                "task": t.name,
                "metric": t.metric.name,
                "unit": t.metric.unit,
                "higher_is_better": t.metric.higher_is_better,
            }
        except Exception:  # an unknown task only loses the task section
            task_json = None
    bench_settings = settings.to_json()
    if sc == "server" and settings.target_qps is None:
        bench_settings["target_qps_rule"] = "half of what each variant's warm-up median latency sustains"
    system = remote_system if remote_system is not None else report_system()
    report = {
        "schema": SCHEMA,
        "effdl_version": __version__,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kind": "bench",
        "title": f"{target.title} ({sc}{', ' + remote.target if remote is not None else ''})",
        "source": target.source,
        "task": task_json,
        "system": system,
        "device": {"profile": profile.name, **report_json(profile)} if profile is not None else None,
        "stages": [
            {
                "name": "benchmark",
                "seconds": seconds,
                "details": {
                    "scenario": sc,
                    "rules": settings.rules,
                    "variants": len(variants),
                    "samples": samples,
                    "where": f"remote {remote.target}" if remote is not None else "this host",
                },
            }
        ],
        "reference": ref.name if ref else None,
        "variants": variants,
        "summary": {"best": best, "notes": notes},
        "bench": {
            "target": str(target.path),
            "target_kind": target.kind,
            "scenario": sc,
            "settings": bench_settings,
            "inputs": inputs_how,
            "device_profile": device,
            "remote": remote.describe() if remote is not None else None,
        },
    }
    if report["reference"] is None:
        del report["reference"]
    return validate_report(report, "bench report")
