"""The compress pipeline: load -> baseline -> torch stages -> export -> ONNX stages -> compile per
target -> verify against the FP32 reference -> benchmark -> package + report.

Each step records what it did (time, config, numbers) into the report as it goes, so the report is a
by-product of the run. Output is written into a hidden sibling folder and renamed into place only
when everything succeeded: a failed run leaves no ``OUT/`` behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effdl import __version__
from effdl.backends import Backend, Compiled, backend_class, get_backend
from effdl.compress import STAGES, ModelArtifact, StageContext
from effdl.errors import BackendUnavailableError, InputError, VerificationError
from effdl.export import check_export, compare_outputs, export_onnx, torch_outputs
from effdl.recipe import Recipe, TargetSpec
from effdl.runtime.manifest import MANIFEST, PACKAGE_FORMAT, PACKAGE_FORMAT_VERSION, file_entry
from effdl.sources import LoadedModel, load_checkpoint
from effdl.tasks import Task, get_task

REPORT_SCHEMA = "effdl.report/1"
MODELS_DIR = "models"


class Progress:
    """Receives progress events; the CLI shows them, tests pass the silent default."""

    def stage_started(self, name: str, text: str) -> None: ...

    def stage_done(self, name: str, seconds: float, summary: str) -> None: ...

    def say(self, text: str) -> None: ...


@dataclass
class CompressResult:
    out: Path
    report: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class _Variant:
    name: str
    target: TargetSpec
    model: ModelArtifact
    backend: Backend
    compiled: Compiled | None = None
    record: dict[str, Any] = field(default_factory=dict)


class _Recorder:
    def __init__(self, progress: Progress) -> None:
        self.stages: list[dict[str, Any]] = []
        self.progress = progress

    @contextlib.contextmanager
    def stage(self, name: str, text: str) -> Iterator[dict[str, Any]]:
        self.progress.stage_started(name, text)
        start = time.perf_counter()
        details: dict[str, Any] = {}
        yield details
        seconds = time.perf_counter() - start
        self.stages.append({"name": name, "seconds": round(seconds, 3), "details": details})
        self.progress.stage_done(name, seconds, details.pop("_summary", ""))


def variant_name(target: TargetSpec, model: str) -> str:
    """The variant a target compiles from ``model``: ``BACKEND-MODEL[-PRECISION][-DEVICE]``."""
    if target.backend == "torch":  # torch-eager-fp32, torch-compile-bf16, ... (never the reference's name)
        name = f"torch-{target.options.get('mode', 'eager')}-{target.options.get('precision', model)}"
        if target.options.get("sparse_24"):
            name += "-sparse24"
        if target.options.get("cuda_graphs"):
            name += "-cudagraphs"
        return name + ("" if target.device == "cpu" else f"-{target.device}")
    name = f"{target.backend}-{model}"
    hint = str(target.options.get("inference_precision", "")).lower()
    if hint and hint not in ("fp32", "f32"):
        name += f"-{hint}"
    if target.device != "cpu":
        name += f"-{target.device}"
    return name


def _run_batches(runner: Any, inputs: dict[str, np.ndarray], names: tuple[str, ...], batch: int) -> list[np.ndarray]:
    n = len(next(iter(inputs.values())))
    chunks = [runner.run({k: inputs[k][i : i + batch] for k in names}) for i in range(0, n, batch)]
    return [np.concatenate([c[j] for c in chunks]) for j in range(len(chunks[0]))]


def _precision_that_ran(model: ModelArtifact, info: dict[str, Any]) -> str:
    ran = str(info.get("inference_precision") or info.get("precision") or "f32").lower()
    if model.precision != "fp32":
        return model.precision
    return {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(ran, ran)


def _metric_drop(task: Task, ref: float, got: float) -> float:
    return ref - got if task.metric.higher_is_better else got - ref


def _prepare_output(out: Path, force: bool) -> Path:
    if out.exists() and not force:
        raise InputError(f"output {out} already exists", "pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def _finalize_output(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def compress(
    checkpoint: str | Path,
    recipe: Recipe,
    out: str | Path,
    *,
    arch: str | None = None,
    factory: str | None = None,
    task: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> CompressResult:
    """Run the whole pipeline on ``checkpoint`` with ``recipe`` and write the package to ``out``."""
    progress = progress or Progress()
    out = Path(out)
    # Fail fast on everything that can be checked before work starts.
    for t in recipe.targets:
        get_backend(t.backend)
        avail = backend_class(t.backend).availability()
        # devices lists the kinds a backend runs on here (cpu, cuda); "cuda:1" counts as cuda
        if avail.devices and t.device.split(":")[0] not in avail.devices:
            raise BackendUnavailableError(
                f"target {t.backend!r} asks for device {t.device!r}, but backend {t.backend!r} runs on "
                f"{', '.join(avail.devices)} here",
                "run this recipe on a machine with that device, or set the target's device to one listed",
            )
    names = [variant_name(t, m) for t in recipe.targets for m in t.models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"recipe targets produce the same variant twice: {dupes}")
    from effdl.devices import load_profile, profile_for_host

    profile = profile_for_host(unit="cpu") if recipe.device == "auto" else load_profile(recipe.device)
    rec = _Recorder(progress)
    with rec.stage("load", f"loading {checkpoint}") as d:
        loaded = load_checkpoint(checkpoint, arch=arch, factory=factory, task=recipe.task or task)
        task_name = recipe.task or task or loaded.task
        if task_name is None:
            raise InputError(
                f"{checkpoint}: no task is recorded in the checkpoint", "name one with --task or `task:` in the recipe"
            )
        task_obj = get_task(task_name, **{**loaded.task_options, **recipe.task_options})
        if loaded.kind == "onnx" and any(STAGES.get(s.stage).kind == "torch" for s in recipe.stages):
            raise InputError(
                "the recipe has torch stages, but the checkpoint is an ONNX file (torch stages need torch)"
            )
        d.update(loaded.describe())
        d["_summary"] = f"{loaded.format}, arch {loaded.arch or '-'}, task {task_name}"
    tmp = _prepare_output(out, force)
    try:
        report = _run(loaded, task_obj, recipe, tmp, rec, progress, {"arch": arch, "factory": factory}, profile)
        _finalize_output(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = {k: out / Path(v).name for k, v in report.pop("_files", {}).items()}
    return CompressResult(out, report, files)


def _run(
    loaded: LoadedModel,
    task: Task,
    recipe: Recipe,
    root: Path,
    rec: _Recorder,
    progress: Progress,
    source_args: dict[str, Any],
    profile: Any,
) -> dict[str, Any]:
    models_dir = root / MODELS_DIR
    models_dir.mkdir()
    scratch = root / ".work"
    scratch.mkdir()
    held = task.split("heldout").take(recipe.verify.samples)
    source: dict[str, Any] = {**loaded.describe(), "task": task.name}

    # 1. FP32 reference on the held-out split.
    with rec.stage("baseline", "FP32 reference on the held-out split") as d:
        if loaded.kind == "torch":
            from effdl.zoo.profile import count_params

            ref_outputs = torch_outputs(loaded.module, task, held.inputs)
            source["parameters"] = count_params(loaded.module)
            source["macs"] = source_macs(loaded, task)
            ref_backend = "torch"
        else:
            from effdl.backends.onnxruntime import cpu_session

            sess = cpu_session(loaded.onnx_path)
            ref_outputs = _run_batches(_OrtAdapter(sess), held.inputs, task.input_names, 1)
            source["parameters"], source["macs"] = None, None
            ref_backend = "onnxruntime"
        ref_metric = task.score(ref_outputs, held.targets)
        d.update({"metric": ref_metric, "samples": len(held), "backend": ref_backend})
        d["_summary"] = f"{task.metric.name} {ref_metric:.2f}{task.metric.unit} on {len(held)} held-out samples"

    # 2. Torch stages, then export.
    ctx = StageContext(task, models_dir, progress=progress.say, teacher=loaded.module)
    staged = recipe.stage_configs()
    model = ModelArtifact("fp32", loaded.kind, module=loaded.module, path=loaded.onnx_path, lineage=["source"])
    torch_stages_ran = False
    for spec, cfg in staged:
        stage_cls = STAGES.get(spec.stage)
        if stage_cls.kind != "torch":
            continue
        with rec.stage(spec.stage, stage_cls.summary) as d:
            model, details = stage_cls(cfg).apply(model, ctx, "fp32")
            d["after"] = _torch_effect(model.module, task, held, ref_metric)  # first: reports truncate details
            d.update(details)
            a = d["after"]
            d["_summary"] = (
                f"{task.metric.name} {a['metric']:.2f}{task.metric.unit} (drop {a['metric_drop']:.2f}), "
                f"{a['parameters']:,} params, {a['macs'] or 0:,} MACs"
            )
        torch_stages_ran = True
    fp32_path = models_dir / "fp32.onnx"
    with rec.stage("export", "export to ONNX and check against torch") as d:
        if loaded.kind == "torch":
            # After torch stages the architecture is no longer the source's config: record the lineage instead.
            arch_meta = (
                {"arch": loaded.arch, "config": None, "modified_by": model.lineage}
                if torch_stages_ran
                else {"arch": loaded.arch, "config": loaded.config}
            )
            meta = {"effdl": json.dumps({**arch_meta, "task": task.name})}
            export_onnx(
                model.module,
                task,
                fp32_path,
                recipe.export,
                exported_program=None if torch_stages_ran else loaded.meta.get("exported"),
                metadata=meta,
            )
            d.update(check_export(model.module, task, fp32_path, recipe.export))
            d["_summary"] = f"opset {recipe.export.opset}, max abs error vs torch {d['max_abs_error']:.2e}"
        else:
            shutil.copyfile(loaded.onnx_path, fp32_path)  # type: ignore[arg-type]
            d.update({"copied_from": str(loaded.onnx_path)})
            d["_summary"] = "input is ONNX: used as is"
        d["size_bytes"] = fp32_path.stat().st_size
    # "fp32" names the exported model; its precision is what the torch stages left (int8 after QAT).
    models: dict[str, ModelArtifact] = {"fp32": ModelArtifact("fp32", "onnx", model.precision, path=fp32_path)}
    latest = "fp32"

    # 3. ONNX stages (quantization).
    for spec, cfg in staged:
        stage_cls = STAGES.get(spec.stage)
        if stage_cls.kind != "onnx":
            continue
        output = spec.output or stage_cls.default_output
        with rec.stage(spec.stage, stage_cls.summary) as d:
            new, details = stage_cls(cfg).apply(models[spec.input or latest], ctx, output)
            d.update(details)
            d["_summary"] = ", ".join(f"{k} {details[k]}" for k in ("engine", "calibration") if k in details)
        models[output] = new
        latest = output

    # 4. Compile each target, 5. verify each variant.
    variants: list[_Variant] = []
    with rec.stage("compile", "compile for each target") as d:
        for t in recipe.targets:
            backend = get_backend(t.backend)
            for m in t.models:
                v = _Variant(variant_name(t, m), t, models[m], backend)
                progress.say(f"compile {v.name}")
                if backend.source == "torch":
                    if model.kind != "torch":
                        raise InputError(f"target {t.backend!r} needs a torch model; the checkpoint is ONNX")
                    v.compiled = backend.compile_torch(  # type: ignore[attr-defined]
                        model.module,
                        task.example_inputs(2),
                        task.input_names,
                        task.output_names,
                        models_dir,
                        v.name,
                        t.options,
                    )
                else:
                    assert v.model.path is not None
                    v.compiled = backend.compile(v.model.path, models_dir, v.name, t.options)
                variants.append(v)
        d["variants"] = [v.name for v in variants]
        d["_summary"] = ", ".join(d["variants"])
    with rec.stage("verify", "verify every variant against the FP32 reference") as d:
        min_agreement, note = agreement_limits(
            task, recipe.verify.min_agreement, task.agreement(ref_outputs, ref_outputs)
        )
        d["min_agreement"] = min_agreement
        if note:
            d["min_agreement_note"] = note
            progress.say(note)
        for v in variants:
            progress.say(f"verify {v.name}")
            v.record = _verify(v, task, recipe, models_dir, held, ref_outputs, ref_metric, min_agreement)
        d["accepted"] = [v.name for v in variants if v.record["accepted"]]
        d["refused"] = {v.name: v.record["reason"] for v in variants if not v.record["accepted"]}
        d["_summary"] = f"{len(d['accepted'])} accepted, {len(d['refused'])} refused" + (
            f" (agreement limits: the task's default {min_agreement})" if note else ""
        )
    accepted = [v for v in variants if v.record["accepted"]]
    if not accepted:
        reasons = "; ".join(f"{v.name}: {v.record['reason']}" for v in variants)
        raise VerificationError(
            f"no variant passed verification ({reasons})", "relax `verify:` limits or change stages"
        )

    # Package: keep the files of accepted variants and the portable FP32 ONNX.
    keep = {"fp32.onnx"} | {f for v in accepted for f in v.compiled.files}  # type: ignore[union-attr]
    for p in models_dir.iterdir():
        if p.name not in keep:
            p.unlink()
    manifest = _manifest(loaded, task, recipe, accepted, root)
    _write_json(root / MANIFEST, manifest)

    # 6. Benchmark: the reference and every accepted variant, each alone in a fresh process.
    reference: dict[str, Any] = {
        "name": f"{ref_backend}-fp32",
        "backend": ref_backend,
        "model": "fp32",
        "precision": "fp32",
        "files": [],
        "size_bytes": (
            sum(f.stat().st_size for f in loaded.path.rglob("*") if f.is_file())
            if loaded.path.is_dir()
            else loaded.path.stat().st_size
        ),
        "accepted": True,
        "reason": None,
        "reference": True,
        "verification": None,
        "metric": ref_metric,
        "runtime_info": {},
        "benchmark": None,
        "speedup": 1.0,
    }
    if recipe.benchmark.enabled:
        _benchmark_all(
            loaded,
            task,
            recipe,
            root,
            scratch,
            reference,
            accepted,
            rec,
            progress,
            source_args,
            profile,
            source["macs"],
        )
        from effdl.runtime.host import host_fingerprint

        host = host_fingerprint()
        for v in accepted:
            mv = next(x for x in manifest["variants"] if x["name"] == v.name)
            b = v.record["benchmark"]
            mv["benchmark"] = {
                "p50_ms": b["latency_ms"]["p50"],
                "p90_ms": b["latency_ms"]["p90"],
                "p99_ms": b["latency_ms"]["p99"],
                "throughput_per_s": b["throughput_per_s"],
                "batch": b["batch"],
                "threads": b["threads"],
                "scenario": b["scenario"],
                "host": host,
            }
        _write_json(root / MANIFEST, manifest)
    shutil.rmtree(scratch, ignore_errors=True)

    report = _report(loaded, task, recipe, source, rec.stages, reference, variants, profile)
    from effdl.report import write_report

    report["_files"] = {k: str(p) for k, p in write_report(report, root).items()}
    return report


class _OrtAdapter:
    def __init__(self, sess: Any) -> None:
        self.sess = sess

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.sess.run(None, feeds)


def agreement_limits(
    task: Task, asked: dict[str, float], given: dict[str, float]
) -> tuple[dict[str, float], str | None]:
    """The agreement limits verification applies to ``task``, and a note when they are not the recipe's.

    ``given`` is what ``task.agreement`` returns (its keys are what the task can measure). A recipe written
    for another kind of task (the default recipe's ``top1_agreement`` on an image-output task) names none
    of them: then the task's own ``default_min_agreement`` applies instead, and the note says so. When
    some of the recipe's keys apply and others do not (a typo, say), the recipe's limits stay and
    verification refuses each variant, naming the key the task does not give.
    """
    if not asked or any(k in given for k in asked):
        return dict(asked), None
    default = {k: v for k, v in task.default_min_agreement.items() if k in given}
    if not default:
        return dict(asked), None
    return default, (
        f"recipe's verify.min_agreement {asked} does not apply to task {task.name!r} "
        f"(it gives {sorted(given)}); using the task's default {default}"
    )


def _verify(
    v: _Variant,
    task: Task,
    recipe: Recipe,
    models_dir: Path,
    held: Any,
    ref_outputs: list[np.ndarray],
    ref_metric: float,
    min_agreement: dict[str, float],
) -> dict[str, Any]:
    limits = recipe.verify
    assert v.compiled is not None
    runner = v.backend.load(models_dir, v.compiled, device=v.target.device, threads=recipe.benchmark.threads)
    dynamic = runner.inputs and runner.inputs[0].shape and runner.inputs[0].shape[0] is None
    outs = _run_batches(runner, held.inputs, task.input_names, limits.batch_size if dynamic else 1)
    errs = compare_outputs(ref_outputs, outs)
    agreement = task.agreement(ref_outputs, outs)
    metric = task.score(outs, held.targets)
    drop = _metric_drop(task, ref_metric, metric)
    failures = []
    if limits.max_metric_drop is not None and drop > limits.max_metric_drop:
        failures.append(f"{task.metric.name} drop {drop:.2f} > {limits.max_metric_drop}")
    for key, minimum in min_agreement.items():
        if key not in agreement:
            failures.append(f"task {task.name!r} gives no {key!r} (it gives {sorted(agreement)})")
        elif agreement[key] < minimum:
            failures.append(f"{key} {agreement[key]:.2f} < {minimum}")
    if limits.max_abs_error is not None and errs["max_abs_error"] > limits.max_abs_error:
        failures.append(f"max abs error {errs['max_abs_error']:.3g} > {limits.max_abs_error}")
    info = dict(runner.info)
    size = sum((models_dir / f).stat().st_size for f in v.compiled.files)
    return {
        "name": v.name,
        "backend": v.target.backend,
        "model": v.model.name,
        "precision": _precision_that_ran(v.model, info),
        "device": v.target.device,
        "files": [f"{MODELS_DIR}/{f}" for f in v.compiled.files],
        "size_bytes": size,
        "accepted": not failures,
        "reason": "; ".join(failures) or None,
        "reference": False,
        "runtime_info": info,
        "verification": {
            "samples": len(held),
            **errs,
            **agreement,
            "metric": metric,
            "metric_drop": drop,
            "limits": {
                "max_metric_drop": limits.max_metric_drop,
                "max_abs_error": limits.max_abs_error,
                **{f"min_{k}": m for k, m in min_agreement.items()},
            },
            "passed": not failures,
            "failures": failures,
        },
        "metric": metric,
        "benchmark": None,
        "speedup": None,
    }


def _benchmark_all(
    loaded: LoadedModel,
    task: Task,
    recipe: Recipe,
    root: Path,
    scratch: Path,
    reference: dict[str, Any],
    accepted: list[_Variant],
    rec: _Recorder,
    progress: Progress,
    source_args: dict[str, Any],
    profile: Any,
    macs: int | None,
) -> None:
    from effdl.benchmark.worker import run_isolated, run_spec
    from effdl.devices import device_unit, profile_for_device

    cfg = recipe.benchmark

    def measure(spec: dict[str, Any]) -> dict[str, Any]:
        return run_isolated(spec, scratch) if cfg.isolate else run_spec(spec)

    inputs_npz = scratch / "inputs.npz"
    sample = task.split("heldout").take(cfg.batch)
    if len(sample) < cfg.batch:
        raise InputError(f"benchmark.batch {cfg.batch} is larger than the held-out split ({len(sample)})")
    np.savez(inputs_npz, **{k: sample.inputs[k] for k in task.input_names})
    common = {
        "warmup": cfg.warmup,
        "queries": cfg.queries,
        "min_duration_s": cfg.min_duration_s,
        "threads": cfg.threads,
        "inputs_npz": str(inputs_npz),
        "input_names": list(task.input_names),
        "device": None if recipe.device == "auto" else recipe.device,
    }
    with rec.stage("benchmark", "single-stream latency, each variant alone in a fresh process") as d:
        if loaded.kind == "torch":
            spec = {
                **common,
                "kind": "torch",
                "label": reference["name"],
                "path": str(loaded.path),
                "arch": source_args.get("arch") or loaded.arch,
                "factory": source_args.get("factory"),
                "task": task.name,
            }
        else:
            spec = {**common, "kind": "onnx", "label": reference["name"], "path": str(loaded.onnx_path)}
        progress.say(f"benchmark {reference['name']} (reference)")
        reference["benchmark"] = measure(spec)
        reference["runtime_info"] = reference["benchmark"].pop("runtime_info", {})
        ref_p50 = reference["benchmark"]["latency_ms"]["p50"]
        for v in accepted:
            progress.say(f"benchmark {v.name}")
            b = measure({**common, "kind": "package", "label": v.name, "root": str(root), "variant": v.name})
            b.pop("runtime_info", None)
            v.record["benchmark"] = b
            v.record["speedup"] = ref_p50 / b["latency_ms"]["p50"] if b["latency_ms"]["p50"] > 0 else None
        by_unit: dict[str, Any] = {}  # one profile per kind of unit (host detection is not free)
        for r in (reference, *(v.record for v in accepted)):
            dev = r.get("device") or "cpu"
            unit = device_unit(dev)
            if unit not in by_unit:
                # the recipe's profile where it describes this unit (a CPU variant on a GPU box: the host CPU's)
                fits = any(u.kind == unit for u in profile.units)
                by_unit[unit] = profile if fits else profile_for_device(None, dev)
            where = by_unit[unit]
            r["benchmark"]["roofline"] = (
                _roofline(macs, r, where)
                if where is not None
                else {"efficiency": None, "reason": f"no device profile describes {r.get('device')} here"}
            )
        d["p50_ms"] = {
            reference["name"]: ref_p50,
            **{v.name: v.record["benchmark"]["latency_ms"]["p50"] for v in accepted},
        }
        d["_summary"] = f"{len(accepted) + 1} runs, {cfg.queries} queries each after {cfg.warmup} warm-up"


def _manifest(loaded: LoadedModel, task: Task, recipe: Recipe, accepted: list[_Variant], root: Path) -> dict[str, Any]:
    import onnx

    proto = onnx.load(str(root / MODELS_DIR / "fp32.onnx"), load_external_data=False)
    init = {i.name for i in proto.graph.initializer}

    def spec(vi: Any) -> dict[str, Any]:
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        return {"name": vi.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name, "shape": dims}

    files: dict[str, Any] = {}
    for p in sorted((root / MODELS_DIR).iterdir()):
        rel = f"{MODELS_DIR}/{p.name}"
        files[rel] = file_entry(root, rel)
    return {
        "format": PACKAGE_FORMAT,
        "format_version": PACKAGE_FORMAT_VERSION,
        "effdl_version": __version__,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "name": recipe.name or loaded.arch or loaded.path.stem,
        "source": {"file": loaded.path.name, "sha256": loaded.sha256, "format": loaded.format, "arch": loaded.arch},
        "task": {"name": task.name, "metric": task.metric.name, "unit": task.metric.unit},
        "inputs": [spec(i) for i in proto.graph.input if i.name not in init],
        "outputs": [spec(o) for o in proto.graph.output],
        "portable_model": f"{MODELS_DIR}/fp32.onnx",
        "variants": [
            {
                "name": v.name,
                "backend": v.record["backend"],
                "model": v.record["model"],
                "precision": v.record["precision"],
                "device": v.record["device"],
                "files": v.record["files"],
                "meta": v.compiled.meta,  # type: ignore[union-attr]
                "accepted": True,
                "verification": {
                    k: v.record["verification"][k]
                    for k in v.record["verification"]
                    if k not in ("limits", "failures", "passed")
                },
                "benchmark": None,
            }
            for v in accepted
        ],
        "files": files,
    }


def _report(
    loaded: LoadedModel,
    task: Task,
    recipe: Recipe,
    source: dict[str, Any],
    stages: list[dict[str, Any]],
    reference: dict[str, Any],
    variants: list[_Variant],
    profile: Any,
) -> dict[str, Any]:
    from effdl.benchmark.system import report_system
    from effdl.devices import report_json

    records = [reference, *(v.record for v in variants)]
    ok = [r for r in records if r["accepted"] and r.get("benchmark")]
    best = min(ok, key=lambda r: r["benchmark"]["latency_ms"]["p50"])["name"] if ok else None
    return {
        "schema": REPORT_SCHEMA,
        "effdl_version": __version__,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kind": "compress",
        "title": f"{recipe.name or loaded.arch or loaded.path.stem} on {task.name}",
        "source": source,
        "recipe": recipe.model_dump(mode="json"),
        "task": task.describe(),
        "system": report_system(),
        "device": {"profile": profile.name, **report_json(profile)},
        "stages": stages,
        "reference": reference["name"],
        "variants": records,
        "summary": {"best": best, "notes": []},
    }


def _torch_effect(module: Any, task: Task, held: Any, ref_metric: float) -> dict[str, Any]:
    """A torch stage's effect: held-out metric (and drop vs the reference), parameters and MACs after it."""
    from effdl.zoo.profile import count_macs, count_params

    metric = task.score(torch_outputs(module, task, held.inputs), held.targets)
    try:
        macs: int | None = count_macs(module, task.example_inputs(1), task.input_names)
    except Exception:  # some modules trip torch's FLOP counter; MACs are then unknown
        macs = None
    return {
        "metric": metric,
        "metric_drop": _metric_drop(task, ref_metric, metric),
        "parameters": count_params(module),
        "macs": macs,
        "samples": len(held),
    }


def source_macs(loaded: LoadedModel, task: Task) -> int | None:
    """MACs of one sample of the source model (None for ONNX inputs or modules the FLOP counter can't run)."""
    if loaded.kind != "torch":
        return None
    from effdl.zoo.profile import count_macs

    try:
        return count_macs(loaded.module, task.example_inputs(1), task.input_names)
    except Exception:  # some custom modules trip torch's FLOP counter; MACs are then unknown
        return None


def _roofline(macs: int | None, record: dict[str, Any], profile: Any) -> dict[str, Any]:
    """Achieved ops/s from the model's MACs and p50 latency vs the profile's peak for the precision that ran."""
    from effdl.devices import peak_ops

    if macs is None:
        return {"efficiency": None, "reason": "MACs unknown"}
    b = record["benchmark"]
    dtype = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16", "int8": "int8"}.get(record["precision"], "fp32")
    # ONNX Runtime's int8 kernels use AVX-512 VNNI, not AMX: compare them with the vector peak.
    variant = None if record["backend"] == "onnxruntime" else "best"
    peak = peak_ops(profile, dtype, variant=variant)
    achieved = 2.0 * macs * b["batch"] / (b["latency_ms"]["p50"] / 1e3)
    if not peak:
        return {"efficiency": None, "achieved_ops_per_s": achieved, "reason": f"no {dtype} peak in {profile.name}"}
    return {
        "efficiency": achieved / peak,
        "achieved_ops_per_s": achieved,
        "peak_ops_per_s": peak,
        "dtype": dtype,
        "method": f"2 x {macs} MACs x batch / p50 latency, vs {profile.name} {dtype} peak"
        + (" (vector ISA, not AMX)" if variant is None else ""),
    }


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
