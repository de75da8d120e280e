"""Device profiles: what a piece of hardware is and can do, read from ``devices/*.yaml``.

A :class:`DeviceProfile` names the hardware, its compute units (CPU cores, GPU SMs, NPU) with peak operations
per second per dtype, memory bandwidth, idle and maximum power, the energy sensors it exposes and the backends
that suit it. Every figure carries either a ``source`` (a key into the profile's ``sources``) or ``derived``
arithmetic, so a report can say where each number came from.

The host is never assumed to be one particular CPU: :func:`detect_host` reads ``/proc/cpuinfo``,
``os.sched_getaffinity``, ``/proc/meminfo``, the device tree and ``nvidia-smi``; :func:`profile_for_host` takes
the matching profile and scales its per-core figures to the detected core count, ISA flags and clock, or
derives a generic profile from the ISA flags when no profile matches.

Profiles are looked up in the folders named by ``$EFFDL_DEVICES_PATH`` (``os.pathsep``-separated), then in the
``devices/`` folder of the source tree.
"""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import socket
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from effdl.errors import InputError, UnknownNameError

Dtype = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4"]
DTYPES: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4")
Sensor = Literal["rapl", "nvml", "jetson-ina3221", "none"]

PROFILE_DIR = Path(__file__).resolve().parent.parent / "devices"
ENV_PATH = "EFFDL_DEVICES_PATH"

# ISA flags worth reporting (x86 names from /proc/cpuinfo "flags", Arm names from "Features").
ISA_FLAGS: tuple[str, ...] = (
    "sse4_2",
    "avx",
    "fma",
    "f16c",
    "avx2",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
    "neon",
    "asimd",
    "asimdhp",
    "asimddp",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
)

# Arm "CPU part" ids of the cores our profiles name (Arm TRMs, MIDR_EL1.PartNum).
ARM_PARTS: dict[str, str] = {
    "0xd03": "Cortex-A53",
    "0xd05": "Cortex-A55",
    "0xd08": "Cortex-A72",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd40": "Neoverse-V1",
    "0xd41": "Cortex-A78",
    "0xd42": "Cortex-A78AE",
    "0xd4f": "Neoverse-V2",
}


# --------------------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Figure(_Strict):
    """One number with its provenance: a ``source`` key, or ``derived`` arithmetic (or both)."""

    value: float = Field(ge=0)
    source: str | None = None
    derived: str | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _provenance(self) -> Figure:
        if not self.source and not self.derived:
            raise ValueError("a figure needs a 'source' (key into sources) or 'derived' arithmetic")
        return self


class PeakFigure(_Strict):
    """Peak throughput for one dtype: ``ops_per_cycle`` (times the unit's clock) or ``ops_per_s`` directly.

    Operations count a multiply-accumulate as two, as vendors do. Per core or total follows the unit's
    ``peak_scope``. ``requires_isa`` lists CPU flags the figure needs (checked against the host when scaling).
    """

    ops_per_cycle: float | None = Field(default=None, gt=0)
    ops_per_s: float | None = Field(default=None, gt=0)
    source: str | None = None
    derived: str | None = None
    requires_isa: list[str] = Field(default_factory=list)
    note: str | None = None

    @model_validator(mode="after")
    def _one_value(self) -> PeakFigure:
        if (self.ops_per_cycle is None) == (self.ops_per_s is None):
            raise ValueError("give exactly one of 'ops_per_cycle' and 'ops_per_s'")
        if not self.source and not self.derived:
            raise ValueError("a peak figure needs a 'source' (key into sources) or 'derived' arithmetic")
        return self


class IsaVariant(_Strict):
    """Alternative peak figures (e.g. AMX) that exist when the host has every flag in ``requires_isa``.

    :func:`peak_ops` takes them with ``variant="best"`` (on a profile scaled to the host) or by name.
    """

    name: str
    requires_isa: list[str] = Field(min_length=1)
    peak: dict[Dtype, PeakFigure]
    note: str | None = None


class ComputeUnit(_Strict):
    """A CPU, GPU or NPU inside a device. ``cores`` null means: scaled to the detected host's cores."""

    name: str
    kind: Literal["cpu", "gpu", "npu"]
    model: str
    cores: int | None = Field(default=None, ge=1)
    core_label: str = "cores"
    cores_note: str | None = None
    clock_ghz: float | None = Field(default=None, gt=0)
    clock_note: str | None = None
    peak_scope: Literal["per_core", "total"]
    peak: dict[Dtype, PeakFigure | None] = Field(default_factory=dict)
    variants: list[IsaVariant] = Field(default_factory=list)
    note: str | None = None

    @model_validator(mode="after")
    def _cycles_need_clock(self) -> ComputeUnit:
        per_cycle = [d for d, f in self.peak.items() if f is not None and f.ops_per_cycle is not None]
        if per_cycle and self.clock_ghz is None and not self.clock_note:
            raise ValueError(f"peak {per_cycle} given per cycle but clock_ghz is null; set it or explain in clock_note")
        return self


class Memory(_Strict):
    capacity_gb: Figure | None = None
    bandwidth_gbps: Figure | None = None
    note: str | None = None


class Power(_Strict):
    """Idle and maximum (TDP) power, per core (scaled by the host's cores) or for the whole device."""

    scope: Literal["per_core", "total"] = "total"
    idle_w: Figure | None = None
    max_w: Figure | None = None
    note: str | None = None


class Match(_Strict):
    """How :func:`match_profile` recognises a host. Every given criterion must hold; empty matches nothing."""

    architecture: str | None = None
    isa_all: list[str] = Field(default_factory=list)
    isa_none: list[str] = Field(default_factory=list)
    cpu_model_regex: str | None = None
    board_regex: str | None = None
    gpu_name_regex: str | None = None

    def criteria(self) -> int:
        """Specificity weight: a board or GPU name outranks a CPU model, which outranks ISA flags."""
        return sum(
            [
                self.architecture is not None,
                bool(self.isa_all),
                bool(self.isa_none),
                2 * (self.cpu_model_regex is not None),
                5 * (self.board_regex is not None),
                5 * (self.gpu_name_regex is not None),
            ]
        )


class DeviceProfile(_Strict):
    """What a device is and can do. See docs/devices.md for every field."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._@-]*$")
    description: str
    kind: Literal["cpu", "gpu", "soc"]
    architecture: str
    units: list[ComputeUnit] = Field(min_length=1)
    memory: Memory = Field(default_factory=Memory)
    power: Power = Field(default_factory=Power)
    energy_sensors: list[Sensor] = Field(default_factory=list)
    preferred_backends: list[str] = Field(default_factory=list)
    match: Match = Field(default_factory=Match)
    sources: dict[str, str] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    derived_from_host: bool = False

    @model_validator(mode="after")
    def _check(self) -> DeviceProfile:
        names = [u.name for u in self.units]
        if len(set(names)) != len(names):
            raise ValueError(f"unit names must be unique, got {names}")
        missing = sorted({s for s in self._source_keys() if s not in self.sources})
        if missing:
            raise ValueError(f"sources lacks the key(s) {missing} that figures cite")
        return self

    def _source_keys(self) -> Iterable[str]:
        figs: list[Any] = [self.memory.capacity_gb, self.memory.bandwidth_gbps, self.power.idle_w, self.power.max_w]
        for u in self.units:
            figs += list(u.peak.values())
            for v in u.variants:
                figs += list(v.peak.values())
        for f in figs:
            if f is not None and f.source:
                yield from (s.strip() for s in f.source.split(","))

    def unit(self, name: str | None = None) -> ComputeUnit:
        """The named compute unit, or the first (default) one."""
        if name is None:
            return self.units[0]
        for u in self.units:
            if u.name == name or u.kind == name:
                return u
        raise UnknownNameError(f"compute unit of device {self.name!r}", name, [u.name for u in self.units])

    def to_yaml(self) -> str:
        """The profile as YAML that :func:`load_profile` reads back."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


def profile_dirs() -> list[Path]:
    """Folders searched for profiles: ``$EFFDL_DEVICES_PATH`` entries first, then the source tree's devices/,
    then ``<prefix>/share/effdl/devices`` where a wheel install puts them (pyproject's data-files)."""
    import sys

    dirs = [Path(p) for p in os.environ.get(ENV_PATH, "").split(os.pathsep) if p]
    return [*dirs, PROFILE_DIR, Path(sys.prefix) / "share" / "effdl" / "devices"]


def _profile_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in profile_dirs():
        if d.is_dir():
            for f in sorted([*d.glob("*.yaml"), *d.glob("*.yml")]):
                found.setdefault(f.stem, f)
    return found


def list_profiles() -> list[str]:
    """Names of the known device profiles (file stems in :func:`profile_dirs`)."""
    return sorted(_profile_files())


def _format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(x) for x in loc) or "(top level)"


def parse_profile(data: Any, origin: str) -> DeviceProfile:
    """Validate a mapping as a :class:`DeviceProfile`; errors name ``origin`` and the field path."""
    if not isinstance(data, dict):
        raise InputError(f"{origin}: a device profile must be a YAML mapping, got {type(data).__name__}")
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as e:
        lines = [f"field '{_format_loc(err['loc'])}': {err['msg']}" for err in e.errors()]
        raise InputError(f"{origin}: invalid device profile: " + "; ".join(lines)) from None


def load_profile(name_or_path: str | os.PathLike[str]) -> DeviceProfile:
    """Load a profile by name (see :func:`list_profiles`) or from a YAML file path.

    Raises :class:`UnknownNameError` (listing the known profiles) for an unknown name and
    :class:`InputError` naming the file and field for a profile that does not validate.
    """
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or os.sep in text or path.is_file()):
        files = _profile_files()
        if text not in files:
            raise UnknownNameError("device profile", text, list(files))
        path = files[text]
    if not path.is_file():
        raise InputError(f"device profile file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InputError(f"{path}:{where} is not valid YAML: {getattr(e, 'problem', e)}") from None
    profile = parse_profile(data, str(path))
    if path.parent.resolve() in {d.resolve() for d in profile_dirs() if d.is_dir()} and profile.name != path.stem:
        raise InputError(f"{path}: field 'name' is {profile.name!r} but a profile file must be named after it")
    return profile


# --------------------------------------------------------------------------------------------------------------
# Host detection
# --------------------------------------------------------------------------------------------------------------


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU vendor, model, ISA flags and clock from the text of ``/proc/cpuinfo`` (x86 or Arm)."""
    first: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if first:
                break
            continue
        key, _, value = line.partition(":")
        first.setdefault(key.strip().lower(), value.strip())
    flags = set((first.get("flags") or first.get("features") or "").split())
    vendor = first.get("vendor_id")
    model = first.get("model name")
    part = first.get("cpu part")
    if vendor is None and first.get("cpu implementer") == "0x41":
        vendor = "ARM"
    if model is None and part is not None:
        model = ARM_PARTS.get(part.lower(), f"Arm core part {part}")
    mhz = first.get("cpu mhz")
    return {
        "vendor": vendor,
        "cpu_model": model,
        "cpu_part": part,
        "flags": flags,
        "cpuinfo_mhz": float(mhz) if mhz else None,
    }


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _detect_gpus_nvml() -> list[dict[str, Any]]:
    """NVIDIA GPUs through NVML (nvidia-ml-py), for hosts that have the driver library but no nvidia-smi."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver: pynvml raises its own NVMLError subclasses
        return []
    gpus = []
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h).total
            gpus.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "memory_gb": round(mem / 1024**3, 1),
                    "driver": None,
                    "power_limit_w": None,
                }
            )
    except Exception:
        pass
    finally:
        pynvml.nvmlShutdown()
    return gpus


def _detect_gpus() -> list[dict[str, Any]]:
    """NVIDIA GPUs from ``nvidia-smi``, else from NVML if nvidia-ml-py is installed; empty when there is none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return _detect_gpus_nvml()
    query = "name,memory.total,driver_version,power.limit"
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for i, line in enumerate(out.strip().splitlines()):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            continue

        def num(s: str) -> float | None:
            try:
                return float(s)
            except ValueError:
                return None

        mem = num(parts[1])
        gpus.append(
            {
                "index": i,
                "name": parts[0],
                "memory_gb": round(mem / 1024, 1) if mem is not None else None,
                "driver": parts[2],
                "power_limit_w": num(parts[3]),
            }
        )
    return gpus


def detect_host(
    root: str | os.PathLike[str] = "/",
    *,
    cores: int | None = None,
    architecture: str | None = None,
    gpus: bool = True,
) -> dict[str, Any]:
    """Describe this machine: CPU model and vendor, usable cores, ISA flags, clock, memory, board, GPUs.

    ``cores`` is the number of CPUs this process may run on (``os.sched_getaffinity``), which is what a
    container or VM slice really has. ``root`` lets tests point at a fake ``/proc`` and ``/sys`` tree.
    """
    r = Path(root)
    info = parse_cpuinfo(_read(r / "proc/cpuinfo") or "")
    flags: set[str] = info["flags"]
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    clock_ghz, clock_source = None, None
    max_khz = _read(r / "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_khz and max_khz.strip().isdigit():
        clock_ghz, clock_source = int(max_khz) / 1e6, "cpufreq cpuinfo_max_freq (maximum, single-core turbo)"
    elif info["cpuinfo_mhz"]:
        clock_ghz, clock_source = info["cpuinfo_mhz"] / 1e3, "/proc/cpuinfo 'cpu MHz' (current or nominal clock)"
    mem_gb = None
    meminfo = _read(r / "proc/meminfo") or ""
    m = re.search(r"^MemTotal:\s+(\d+)\s+kB", meminfo, re.M)
    if m:
        mem_gb = round(int(m.group(1)) / 1024**2, 1)
    board = _read(r / "proc/device-tree/model")
    board = board.strip("\x00\n ") if board else None
    arch = architecture or platform.machine()
    if arch == "aarch64" and "asimd" in flags:
        flags = flags | {"neon"}
    return {
        "hostname": socket.gethostname(),
        "architecture": arch,
        "vendor": info["vendor"],
        "cpu_model": info["cpu_model"],
        "cores": cores,
        "logical_cpus": os.cpu_count(),
        "clock_ghz": round(clock_ghz, 3) if clock_ghz else None,
        "clock_source": clock_source,
        "isa": sorted(f for f in ISA_FLAGS if f in flags),
        "all_flags": sorted(flags),
        "hypervisor": "hypervisor" in flags,
        "memory_gb": mem_gb,
        "board": board,
        "gpus": _detect_gpus() if gpus else [],
        "powercap": (r / "sys/class/powercap").is_dir(),
    }


# --------------------------------------------------------------------------------------------------------------
# Matching and scaling
# --------------------------------------------------------------------------------------------------------------


def _flags(host: dict[str, Any]) -> set[str]:
    return set(host.get("all_flags") or host.get("isa") or [])


def match_score(profile: DeviceProfile, host: dict[str, Any]) -> int:
    """How specifically ``profile`` matches ``host`` (0: it does not)."""
    m = profile.match
    if m.criteria() == 0:
        return 0
    flags = _flags(host)
    if m.architecture is not None and m.architecture != host.get("architecture"):
        return 0
    if any(f not in flags for f in m.isa_all) or any(f in flags for f in m.isa_none):
        return 0
    if m.cpu_model_regex is not None and not re.search(m.cpu_model_regex, host.get("cpu_model") or ""):
        return 0
    if m.board_regex is not None and not re.search(m.board_regex, host.get("board") or ""):
        return 0
    if m.gpu_name_regex is not None and not any(re.search(m.gpu_name_regex, g["name"]) for g in host.get("gpus", [])):
        return 0
    return m.criteria()


def match_profile(host: dict[str, Any] | None = None, *, unit: str | None = None) -> DeviceProfile | None:
    """The known profile that matches ``host`` most specifically, or None.

    ``unit`` ("cpu", "gpu", "npu") keeps only profiles with a compute unit of that kind: on a GPU server, a
    CPU benchmark wants ``unit="cpu"`` (the CPU profile), not the GPU's.
    """
    host = detect_host() if host is None else host
    best: tuple[int, str, DeviceProfile] | None = None
    for name in list_profiles():
        p = load_profile(name)
        if unit is not None and not any(u.kind == unit or u.name == unit for u in p.units):
            continue
        s = match_score(p, host)
        if s and (best is None or s > best[0]):
            best = (s, name, p)
    return best[2] if best else None


def _fmt_ops(x: float) -> str:
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if x >= div:
            return f"{x / div:.4g} {unit}ops/s"
    return f"{x:.4g} ops/s"


def _total_figure(fig: PeakFigure, clock: float | None, cores: int) -> dict[str, Any] | None:
    """A per-core peak figure as a total for ``cores`` cores at ``clock`` GHz (None if the clock is unknown)."""
    if fig.ops_per_cycle is not None:
        if clock is None:
            return None
        total = fig.ops_per_cycle * clock * 1e9 * cores
        arith = (
            f"{fig.ops_per_cycle:g} ops/cycle/core ({fig.derived or 'see source'}) x {clock:g} GHz x "
            f"{cores} detected cores = {_fmt_ops(total)}"
        )
    else:
        total = float(fig.ops_per_s) * cores  # type: ignore[arg-type]
        arith = f"{fig.ops_per_s:g} ops/s/core x {cores} detected cores = {_fmt_ops(total)}"
    return {
        "ops_per_s": total,
        "source": fig.source,
        "derived": arith,
        "requires_isa": fig.requires_isa,
        "note": fig.note,
    }


def _scale_unit(u: ComputeUnit, host: dict[str, Any], flags: set[str]) -> dict[str, Any]:
    """A per-core CPU unit turned into a total one for the host: its cores, clock and supported ISA variants."""
    cores = int(host["cores"])
    clock = host.get("clock_ghz") or u.clock_ghz
    clock_note = (
        f"{clock} GHz from {host['clock_source']}; sustained AVX-512/AMX clocks are usually lower"
        if host.get("clock_ghz")
        else u.clock_note
    )

    def supported(fig: PeakFigure | None) -> bool:
        return fig is not None and all(f in flags for f in fig.requires_isa)

    peak = {d: (_total_figure(f, clock, cores) if supported(f) else None) for d, f in u.peak.items()}  # type: ignore[arg-type]
    variants = []
    for v in u.variants:
        if all(f in flags for f in v.requires_isa):
            vpeak = {d: _total_figure(f, clock, cores) for d, f in v.peak.items() if supported(f)}
            vpeak = {d: f for d, f in vpeak.items() if f is not None}
            if vpeak:
                variants.append({"name": v.name, "requires_isa": v.requires_isa, "peak": vpeak, "note": v.note})
    return {
        **u.model_dump(mode="json"),
        "cores": cores,
        "cores_note": "detected with os.sched_getaffinity (cores this process may use)",
        "clock_ghz": clock,
        "clock_note": clock_note,
        "peak_scope": "total",
        "peak": peak,
        "variants": variants,
    }


def scale_to_host(profile: DeviceProfile, host: dict[str, Any]) -> DeviceProfile:
    """``profile`` with its per-core CPU figures and per-core power scaled to ``host``'s cores, clock and ISA.

    Units with a fixed core count (a GPU, a Raspberry Pi's four cores) are kept as they are.
    """
    flags = _flags(host)
    data = profile.model_dump(mode="json")
    scaled = False
    for i, u in enumerate(profile.units):
        if u.kind == "cpu" and u.peak_scope == "per_core" and u.cores is None:
            data["units"][i] = _scale_unit(u, host, flags)
            scaled = True
    cores = int(host["cores"])
    if profile.power.scope == "per_core":
        for key in ("idle_w", "max_w"):
            fig = getattr(profile.power, key)
            if fig is not None:
                data["power"][key] = {
                    "value": fig.value * cores,
                    "source": fig.source,
                    "derived": f"{fig.value:g} W/core ({fig.derived or 'see source'}) x {cores} detected cores",
                    "note": fig.note,
                }
        data["power"]["scope"] = "total"
        scaled = True
    if not scaled:
        return profile
    data["name"] = f"{profile.name}@host"
    data["derived_from_host"] = True
    data["notes"] = [
        *profile.notes,
        f"Scaled from profile {profile.name!r} to host {host.get('hostname')!r}: {cores} cores, "
        f"ISA {', '.join(host.get('isa', []))}.",
    ]
    return parse_profile(data, f"profile {profile.name!r} scaled to the host")


# Per-core peak ops/cycle from ISA flags, for hosts no profile matches: (flags needed, ops/cycle, arithmetic,
# variant). The first base row (variant None) whose flags the host has wins per dtype; matrix-engine rows go
# to a named variant, as in the profiles. x86 rows assume two 512-bit (or 256-bit) FMA/VNNI ports per core,
# as on Xeon Gold/Platinum; parts with one 512-bit FMA port (Xeon Silver/Bronze, AMD Zen 4, most client
# cores) reach half. Arm rows assume two 128-bit NEON pipes (Cortex-A76/A78, Neoverse N1); in-order cores
# (A53/A55) reach less. These are hand-kept because no library we depend on exposes per-ISA peak tables.
_ISA_PEAKS: dict[str, list[tuple[str, tuple[str, ...], float, str, str | None]]] = {
    "x86_64": [
        ("fp32", ("avx512f",), 64, "2 x 512-bit FMA ports x 16 fp32 lanes x 2 ops", None),
        ("fp32", ("avx2", "fma"), 32, "2 x 256-bit FMA ports x 8 fp32 lanes x 2 ops", None),
        ("bf16", ("avx512_bf16",), 128, "2 x VDPBF16PS ports x 32 bf16 MACs x 2 ops", None),
        ("fp16", ("avx512_fp16",), 128, "2 x 512-bit FMA ports x 32 fp16 lanes x 2 ops", None),
        ("int8", ("avx512_vnni",), 256, "2 x 512-bit VPDPBUSD ports x 64 int8 MACs x 2 ops", None),
        ("int8", ("avx_vnni",), 128, "2 x 256-bit VPDPBUSD ports x 32 int8 MACs x 2 ops", None),
        ("bf16", ("amx_bf16",), 1024, "AMX TMUL: 16x16x32 TDPBF16PS per 16 cycles = 512 MACs/cycle x 2 ops", "amx"),
        ("int8", ("amx_int8",), 2048, "AMX TMUL: 16x16x64 TDPBSSD per 16 cycles = 1024 MACs/cycle x 2 ops", "amx"),
        ("fp16", ("amx_fp16",), 1024, "AMX TMUL: TDPFP16PS at the bf16 rate, 512 MACs/cycle x 2 ops", "amx"),
    ],
    "aarch64": [
        ("fp32", ("asimd",), 16, "2 x 128-bit NEON FMA pipes x 4 fp32 lanes x 2 ops", None),
        ("fp16", ("asimdhp",), 32, "2 x 128-bit NEON FMA pipes x 8 fp16 lanes x 2 ops", None),
        ("int8", ("i8mm",), 128, "2 x 128-bit SMMLA pipes x 32 int8 MACs x 2 ops", None),
        ("int8", ("asimddp",), 64, "2 x 128-bit SDOT pipes x 16 int8 MACs x 2 ops", None),
    ],
}


def derive_cpu_peaks(host: dict[str, Any]) -> dict[str | None, dict[str, tuple[float, str, tuple[str, ...]]]]:
    """Per-core peak ops/cycle per dtype from the host's ISA flags.

    Returns ``{variant: {dtype: (ops_per_cycle, arithmetic, flags_needed)}}`` where variant ``None`` holds the
    vector-ISA figures and e.g. ``"amx"`` the matrix-engine ones. Dtypes the ISA lacks are absent.
    """
    flags = _flags(host)
    out: dict[str | None, dict[str, tuple[float, str, tuple[str, ...]]]] = {None: {}}
    for dtype, needs, opc, arith, variant in _ISA_PEAKS.get(host.get("architecture") or "", []):
        if all(f in flags for f in needs):
            out.setdefault(variant, {}).setdefault(dtype, (opc, arith, needs))
    return out


def generic_host_profile(host: dict[str, Any]) -> DeviceProfile:
    """A profile derived from the detected host alone (no known profile matched); unknowns stay null."""
    cores = int(host["cores"])
    clock = host.get("clock_ghz")
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    derived = derive_cpu_peaks(host)

    def fig(opc: float, arith: str, needs: tuple[str, ...]) -> dict[str, Any]:
        total = opc * float(clock) * 1e9 * cores
        text = f"{opc:g} ops/cycle/core [{arith}] x {clock:g} GHz x {cores} cores = {_fmt_ops(total)}"
        return {"ops_per_s": total, "source": "isa-table", "derived": text, "requires_isa": list(needs)}

    base = derived.pop(None)
    peaks: dict[str, Any] = {d: None for d in ("fp32", "bf16", "fp16", "int8")}
    variants: list[dict[str, Any]] = []
    if clock is not None:
        peaks.update({d: fig(*v) for d, v in base.items()})
        for name, figs in derived.items():
            needs = sorted({f for v in figs.values() for f in v[2]})
            variants.append({"name": name, "requires_isa": needs, "peak": {d: fig(*v) for d, v in figs.items()}})
    notes = [
        "Derived by `effdl devices detect`: no known profile matched this host. Peak figures assume the port "
        "counts stated in each 'derived' text; power and memory bandwidth are unknown (null), so energy can "
        "only be measured by a sensor, not estimated."
    ]
    if clock is None:
        notes.append("Clock not detected: peaks are null. Set units[0].clock_ghz and ops_per_cycle by hand.")
    mem = host.get("memory_gb")
    model = host.get("cpu_model")
    slug = re.sub(r"[^a-z0-9]+", "-", (model or host.get("architecture") or "cpu").lower()).strip("-")
    data = {
        "name": f"host-{slug}"[:60].rstrip("-"),
        "description": f"{model or 'unknown CPU'} on {host.get('hostname')} (detected {when})",
        "kind": "cpu",
        "architecture": host.get("architecture") or "unknown",
        "units": [
            {
                "name": "cpu",
                "kind": "cpu",
                "model": model or "unknown",
                "cores": cores,
                "cores_note": "detected with os.sched_getaffinity",
                "clock_ghz": clock,
                "clock_note": f"from {host.get('clock_source')}" if clock else "not detected",
                "peak_scope": "total",
                "peak": peaks,
                "variants": variants,
            }
        ],
        "memory": {
            "capacity_gb": {"value": mem, "source": "meminfo"} if mem is not None else None,
            "bandwidth_gbps": None,
            "note": "bandwidth not detected; measure it (e.g. STREAM) and fill it in",
        },
        "power": {"scope": "total", "idle_w": None, "max_w": None, "note": "not known for a detected host"},
        "energy_sensors": [s for s, ok in (("rapl", host.get("powercap")), ("nvml", host.get("gpus"))) if ok],
        "preferred_backends": ["openvino", "onnxruntime"] if host.get("architecture") == "x86_64" else ["onnxruntime"],
        "match": {
            "architecture": host.get("architecture"),
            "isa_all": list(host.get("isa", [])),
            "cpu_model_regex": f"^{re.escape(model)}$" if model else None,
        },
        "sources": {
            "isa-table": "effdl.devices._ISA_PEAKS: vendor instruction throughput tables (Intel optimization "
            "manual, Arm software optimization guides) applied to the detected ISA flags",
            "meminfo": f"/proc/meminfo MemTotal on {host.get('hostname')} ({when})",
        },
        "notes": notes,
        "derived_from_host": True,
    }
    return parse_profile(data, "profile derived from the host")


def profile_for_host(host: dict[str, Any] | None = None, *, unit: str | None = None) -> DeviceProfile:
    """The profile that describes this host: a matching profile scaled to it, or one derived from its ISA."""
    host = detect_host() if host is None else host
    p = match_profile(host, unit=unit)
    return scale_to_host(p, host) if p is not None else generic_host_profile(host)


def device_unit(device: str | None) -> str:
    """The compute-unit kind a backend device string runs on: ``cuda``/``cuda:N`` -> ``gpu``, else its kind."""
    d = str(device or "cpu").lower()
    if d.startswith("cuda"):
        return "gpu"
    return d.split(":")[0] if d.split(":")[0] in ("gpu", "npu") else "cpu"


def profile_for_device(profile_name: str | None, device: str | None) -> DeviceProfile | None:
    """The profile that describes where a variant on ``device`` runs.

    The recipe's profile (``profile_name``; ``None`` or ``"auto"`` for this host) when it has a compute unit of
    that kind; otherwise the host's own: its CPU profile for CPU variants, a matching GPU profile for GPU
    variants, or ``None`` when no profile describes that GPU. On a GPU server a recipe naming the H100 profile
    thus still measures its ONNX Runtime CPU variants against the CPU.
    """
    unit = device_unit(device)
    if profile_name and profile_name != "auto":
        p = load_profile(profile_name)
        if any(u.kind == unit for u in p.units):
            return p
    if unit == "cpu":
        return profile_for_host(unit="cpu")
    host = detect_host()
    p = match_profile(host, unit=unit)
    return scale_to_host(p, host) if p is not None else None


# --------------------------------------------------------------------------------------------------------------
# Peaks and roofline
# --------------------------------------------------------------------------------------------------------------


def _figure_ops(fig: PeakFigure, u: ComputeUnit, cores: int | None) -> float | None:
    if fig.ops_per_s is not None:
        ops = fig.ops_per_s
    elif u.clock_ghz is not None:
        ops = float(fig.ops_per_cycle) * u.clock_ghz * 1e9  # type: ignore[arg-type]
    else:
        return None
    if u.peak_scope == "per_core":
        n = cores if cores is not None else u.cores
        if n is None:
            return None
        ops *= n
    return float(ops)


def peak_ops(
    profile: DeviceProfile,
    dtype: str,
    *,
    unit: str | None = None,
    cores: int | None = None,
    variant: str | None = "best",
) -> float | None:
    """Peak operations per second (a MAC counts two) of one compute unit for ``dtype``, or None if unknown.

    ``variant``: ``"best"`` (default) takes the highest of the base figure and the ISA variants (e.g. AMX) that
    the host was checked to have (only in a profile scaled to the host by :func:`profile_for_host`); ``None``
    takes the base (vector ISA) figure only, e.g. for ONNX Runtime's int8 kernels, which use AVX-512 VNNI and
    not AMX; a variant name takes that variant's figure. Per-core figures are multiplied by ``cores`` or the
    unit's ``cores``; a per-core profile not scaled to a host (``cores: null``) gives None unless ``cores``
    is passed.
    """
    u = profile.unit(unit)
    candidates: list[float | None] = []
    base = u.peak.get(dtype)  # type: ignore[call-overload]
    if variant in (None, "best") and base is not None:
        candidates.append(_figure_ops(base, u, cores))
    if variant is not None:
        for v in u.variants:
            if variant == v.name or (variant == "best" and profile.derived_from_host):
                fig = v.peak.get(dtype)  # type: ignore[call-overload]
                if fig is not None:
                    candidates.append(_figure_ops(fig, u, cores))
        if variant != "best" and not any(v.name == variant for v in u.variants):
            raise UnknownNameError(f"ISA variant of unit {u.name!r}", variant, [v.name for v in u.variants])
    known = [c for c in candidates if c is not None]
    return max(known) if known else None


def roofline_efficiency(
    macs: float,
    latency_s: float,
    profile: DeviceProfile,
    dtype: str,
    *,
    unit: str | None = None,
    variant: str | None = "best",
) -> float:
    """Achieved ``2 * macs / latency_s`` over the compute peak for ``dtype`` (0..1 for a sane measurement).

    ``unit`` and ``variant`` are as in :func:`peak_ops`. Raises :class:`InputError` when the profile has no
    peak for ``dtype`` (it names the profile and unit).
    """
    if macs < 0 or latency_s <= 0 or not math.isfinite(latency_s):
        raise InputError(f"roofline needs macs >= 0 and latency_s > 0, got macs={macs}, latency_s={latency_s}")
    peak = peak_ops(profile, dtype, unit=unit, variant=variant)
    if not peak:
        u = profile.unit(unit)
        raise InputError(
            f"device profile {profile.name!r} has no {dtype} peak for unit {u.name!r}"
            + (" (per-core profile not scaled to a host: use profile_for_host())" if u.cores is None else "")
        )
    return 2.0 * macs / latency_s / peak


def summary_rows(profile: DeviceProfile) -> list[dict[str, Any]]:
    """One row per compute unit, ISA variant and dtype: peak ops/s, per core, and how it was obtained.

    ``ops_per_s`` is None when unknown (or for a per-core profile not scaled to a host); ``per_core_ops_per_s``
    is given for per-core units.
    """
    rows = []
    for u in profile.units:
        per_core = u.peak_scope == "per_core"
        entries: list[tuple[str | None, str, PeakFigure | None, str]] = [(None, d, f, "") for d, f in u.peak.items()]
        for v in u.variants:
            entries += [(v.name, d, f, f"needs {', '.join(v.requires_isa)}: ") for d, f in v.peak.items()]
        for variant, dtype, fig, prefix in entries:
            rows.append(
                {
                    "unit": u.name,
                    "variant": variant,
                    "dtype": dtype,
                    "ops_per_s": peak_ops(profile, dtype, unit=u.name, variant=variant),
                    "per_core_ops_per_s": peak_ops(profile, dtype, unit=u.name, variant=variant, cores=1)
                    if per_core
                    else None,
                    "how": None if fig is None else prefix + (fig.derived or f"source: {fig.source}"),
                }
            )
    return rows


def report_json(profile: DeviceProfile) -> dict[str, Any]:
    """A compact description of ``profile`` for a benchmark report: peaks with their provenance, power, memory."""

    def fig(f: Figure | None) -> dict[str, Any] | None:
        return None if f is None else {"value": f.value, "source": f.source, "derived": f.derived}

    return {
        "name": profile.name,
        "description": profile.description,
        "derived_from_host": profile.derived_from_host,
        "peaks": [
            {k: r[k] for k in ("unit", "variant", "dtype", "ops_per_s", "how")}
            for r in summary_rows(profile)
            if r["how"] is not None
        ],
        "memory_bandwidth_gbps": fig(profile.memory.bandwidth_gbps),
        "power": {"idle_w": fig(profile.power.idle_w), "max_w": fig(profile.power.max_w), "scope": profile.power.scope},
        "energy_sensors": list(profile.energy_sensors),
        "sources": dict(profile.sources),
    }
