"""The run report's schema (``effdl.report/1``): validation, loading and atomic writing of JSON.

The schema is documented field by field in docs/report-schema.md. Validation is written by hand rather
than with pydantic or jsonschema because the reports are plain dicts produced by the pipeline and read
back from disk: the checks here only assert the fields the renderers rely on, name the exact field path
in their message, and leave unknown (newer, additive) fields alone.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from effdl.errors import InputError

SCHEMA = "effdl.report/1"
COMPARISON_SCHEMA = "effdl.comparison/1"
KINDS = ("compress", "bench")

_MISSING = object()


class _Checker:
    """Walks a report dict and raises :class:`InputError` naming ``<where>: field <path>`` on the first problem."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, path: str, problem: str) -> None:
        raise InputError(f"{self.where}: field {path!r} {problem}")

    def get(self, obj: Mapping[str, Any], key: str, path: str, *, required: bool) -> Any:
        value = obj.get(key, _MISSING)
        if value is _MISSING and required:
            self.fail(f"{path}{key}", "is missing")
        return None if value is _MISSING else value

    def typed(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        kind: str,
        *,
        required: bool = True,
        nullable: bool = False,
    ) -> Any:
        """Return ``obj[key]`` after checking it is of ``kind`` (str, number, int, bool, dict, list)."""
        value = self.get(obj, key, path, required=required)
        if value is None:
            if required and not nullable and key in obj:
                self.fail(f"{path}{key}", f"must be {_KIND_NAMES[kind]}, got null")
            return None
        if not _is_kind(value, kind):
            self.fail(f"{path}{key}", f"must be {_KIND_NAMES[kind]}, got {type(value).__name__} {_short(value)}")
        return value


_KIND_NAMES = {
    "str": "a string",
    "number": "a number",
    "int": "an integer",
    "bool": "true or false",
    "dict": "an object",
    "list": "a list",
}


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "dict":
        return isinstance(value, dict)
    if kind == "list":
        return isinstance(value, list)
    raise ValueError(kind)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate_report(report: Any, source: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Check that ``report`` carries every field of ``effdl.report/1`` that the renderers rely on.

    Unknown extra fields are allowed (later 1.x additions). Returns the same dict. Raises
    :class:`~effdl.errors.InputError` naming ``source`` (a file name, or "report") and the field path.
    """
    c = _Checker(str(source) if source is not None else "report")
    if not isinstance(report, dict):
        raise InputError(f"{c.where}: a report must be a JSON object, got {type(report).__name__}")
    schema = report.get("schema", _MISSING)
    if schema is _MISSING:
        c.fail("schema", f"is missing (expected {SCHEMA!r}); is this an effdl report?")
    if schema == COMPARISON_SCHEMA:
        raise InputError(
            f"{c.where}: this is a comparison written by `effdl report` ({COMPARISON_SCHEMA}), not a run report",
            hint="pass the report.json files of the runs themselves",
        )
    if schema != SCHEMA:
        c.fail("schema", f"is {_short(schema)}; this effdl reads {SCHEMA!r}")
    c.typed(report, "effdl_version", "", "str")
    c.typed(report, "created", "", "str")
    kind = c.typed(report, "kind", "", "str")
    if kind not in KINDS:
        c.fail("kind", f"is {kind!r}; expected one of {', '.join(KINDS)}")
    c.typed(report, "title", "", "str")
    c.typed(report, "source", "", "dict", required=False)
    c.typed(report, "recipe", "", "dict", required=False)
    c.typed(report, "device", "", "dict", required=False)
    c.typed(report, "summary", "", "dict", required=False)

    system = c.typed(report, "system", "", "dict")
    for key in ("hostname", "cpu", "os", "python"):
        c.typed(system, key, "system.", "str", required=False)
    c.typed(system, "cores", "system.", "int", required=False)
    c.typed(system, "libraries", "system.", "dict", required=False)

    task = c.typed(report, "task", "", "dict", required=False)
    if task is not None:
        c.typed(task, "metric", "task.", "str")
        c.typed(task, "unit", "task.", "str", required=False)
        c.typed(task, "higher_is_better", "task.", "bool")

    stages = c.typed(report, "stages", "", "list")
    for i, stage in enumerate(stages):
        path = f"stages[{i}]"
        if not isinstance(stage, dict):
            c.fail(path, "must be an object")
        c.typed(stage, "name", path + ".", "str")
        c.typed(stage, "seconds", path + ".", "number", nullable=True)
        c.typed(stage, "details", path + ".", "dict", required=False)

    variants = c.typed(report, "variants", "", "list")
    if not variants:
        c.fail("variants", "is empty; a report needs at least one variant")
    names: set[str] = set()
    for i, variant in enumerate(variants):
        _check_variant(c, variant, f"variants[{i}]")
        if variant["name"] in names:
            c.fail(f"variants[{i}].name", f"{variant['name']!r} is not unique")
        names.add(variant["name"])

    reference = c.typed(report, "reference", "", "str", required=False)
    if reference is not None and reference not in names:
        c.fail("reference", f"names {reference!r}, which is not one of the variants ({', '.join(sorted(names))})")
    return report


def _check_variant(c: _Checker, v: Any, path: str) -> None:
    if not isinstance(v, dict):
        c.fail(path, "must be an object")
    p = path + "."
    c.typed(v, "name", p, "str")
    c.typed(v, "backend", p, "str")
    c.typed(v, "precision", p, "str")
    c.typed(v, "model", p, "str", required=False)
    files = c.typed(v, "files", p, "list", required=False)
    for j, f in enumerate(files or []):
        if not isinstance(f, str):
            c.fail(f"{p}files[{j}]", "must be a string (a path relative to the package root)")
    c.typed(v, "size_bytes", p, "int", required=False)
    accepted = c.typed(v, "accepted", p, "bool")
    reason = c.typed(v, "reason", p, "str", required=False)
    if not accepted and not reason:
        c.fail(p + "reason", "must say why the variant was refused (accepted is false)")
    c.typed(v, "runtime_info", p, "dict", required=False)
    c.typed(v, "metric", p, "number", required=False)
    c.typed(v, "speedup", p, "number", required=False)

    ver = c.typed(v, "verification", p, "dict", required=False)
    if ver is not None:
        q = p + "verification."
        c.typed(ver, "samples", q, "int")
        c.typed(ver, "passed", q, "bool")
        for key in ("max_abs_error", "mean_abs_error", "metric", "metric_drop"):
            c.typed(ver, key, q, "number", required=False)
        c.typed(ver, "limits", q, "dict", required=False)
        failures = c.typed(ver, "failures", q, "list", required=False)
        for j, f in enumerate(failures or []):
            if not isinstance(f, str):
                c.fail(f"{q}failures[{j}]", "must be a string")

    bench = c.typed(v, "benchmark", p, "dict", required=False)
    if bench is not None:
        q = p + "benchmark."
        c.typed(bench, "scenario", q, "str")
        c.typed(bench, "method", q, "str")
        for key in ("batch", "warmup", "queries"):
            c.typed(bench, key, q, "int")
        c.typed(bench, "threads", q, "int", required=False)
        lat = c.typed(bench, "latency_ms", q, "dict")
        for key in ("p50", "p90", "p99"):
            c.typed(lat, key, q + "latency_ms.", "number")
        for key in ("p95", "mean", "std", "min", "max"):
            c.typed(lat, key, q + "latency_ms.", "number", required=False)
        ci = c.typed(lat, "p50_ci95", q + "latency_ms.", "list", required=False)
        if ci is not None and (len(ci) != 2 or not all(_is_kind(x, "number") for x in ci)):
            c.fail(q + "latency_ms.p50_ci95", "must be [low, high]")
        c.typed(bench, "throughput_per_s", q, "number")
        c.typed(bench, "cv", q, "number", required=False)
        c.typed(bench, "noisy", q, "bool", required=False)
        samples = c.typed(bench, "samples_ms", q, "list", required=False)
        if samples is not None and not all(_is_kind(x, "number") for x in samples):
            c.fail(q + "samples_ms", "must be a list of numbers (milliseconds)")
        energy = c.typed(bench, "energy", q, "dict", required=False)
        if energy is not None:
            e = q + "energy."
            c.typed(energy, "joules_per_inference", e, "number")
            c.typed(energy, "inferences_per_joule", e, "number", required=False)
            c.typed(energy, "method", e, "str")
            c.typed(energy, "estimate", e, "bool")
            c.typed(energy, "assumptions", e, "str", required=False)


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a ``report.json``; errors name the file (and line for invalid JSON)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"report file {str(p)!r} does not exist")
    if p.is_dir():
        if (p / "report.json").is_file():
            p = p / "report.json"
        else:
            raise InputError(f"{str(p)!r} is a folder without a report.json")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read report file {str(p)!r}: {e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    return validate_report(data, p)


def to_json_text(data: Any) -> str:
    """Pretty JSON; non-finite floats (NaN, inf) become null so that every JSON reader can load the file."""
    return json.dumps(_finite(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A reader never sees a half-written file, and a failure leaves the previous file (if any) in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, like open()
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
