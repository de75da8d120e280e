"""Energy meters behind one interface: RAPL, NVML, Jetson INA3221 power rails, and a labelled estimate.

A :class:`Meter` is started before the measured queries and stopped after them; :meth:`Meter.stop` returns an
:class:`EnergyReading` that says how the joules were obtained (``method``), whether they are an estimate, and
what they include (``assumptions``). :func:`choose_meter` picks the best meter available for a device profile.

Why not Zeus (``zeus-ml``)? Zeus's monitors read the same counters (NVML total energy, RAPL powercap,
Jetson rails), but zeus-ml 0.11 pulls in pandas, httpx, amdsmi, tyro and six more packages for what is, here,
a few sysfs reads and one NVML call; it also offers no labelled estimate for hosts without sensors (a VM).
So we read sysfs and NVML directly.

Measured readings cover the whole package / GPU / module, including idle power and other processes' work in
the interval; they are not attributed to the process. Only :class:`EstimateMeter` readings are estimates.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effdl.errors import BackendUnavailableError

if TYPE_CHECKING:
    from effdl.devices import DeviceProfile

SENSORS: tuple[str, ...] = ("rapl", "nvml", "jetson-ina3221")


@dataclass
class EnergyReading:
    """Energy over one measured interval and how it was obtained."""

    joules: float
    seconds: float
    method: str
    estimate: bool
    assumptions: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def watts(self) -> float:
        """Average power over the interval."""
        return self.joules / self.seconds if self.seconds > 0 else 0.0

    def to_json(self, n_inferences: int) -> dict[str, Any]:
        """The report's ``variant.benchmark.energy`` entry for ``n_inferences`` queries in this interval."""
        return {
            "joules_per_inference": joules_per_inference(self, n_inferences),
            "inferences_per_joule": inferences_per_joule(self, n_inferences),
            "method": self.method,
            "estimate": self.estimate,
            "assumptions": self.assumptions,
        }


def joules_per_inference(reading: EnergyReading, n: int) -> float:
    """Joules per query: the interval's energy divided by the ``n`` queries run in it."""
    if n <= 0:
        raise ValueError(f"n must be a positive number of inferences, got {n}")
    return reading.joules / n


def inferences_per_joule(reading: EnergyReading, n: int) -> float | None:
    """Queries per joule, or None when the interval's energy is zero (a counter that did not advance)."""
    if n <= 0:
        raise ValueError(f"n must be a positive number of inferences, got {n}")
    return n / reading.joules if reading.joules > 0 else None


def unavailable_json(reason: str) -> dict[str, Any]:
    """The report's energy entry when no meter could run: the same keys, null values, and the reason."""
    return {
        "joules_per_inference": None,
        "inferences_per_joule": None,
        "method": None,
        "estimate": None,
        "assumptions": None,
        "reason": reason,
    }


class Meter(ABC):
    """An energy source. ``available()`` says whether it can run here (``reason`` says why not)."""

    name: str = "meter"

    def __init__(self) -> None:
        self._reason: str | None = None
        self._probed = False
        self._running = False
        self.reading: EnergyReading | None = None
        self.not_used: dict[str, str] = {}  # better meters that were unavailable, and why (set by choose_meter)

    @abstractmethod
    def _probe(self) -> str | None:
        """None if the meter can run here, else the reason it cannot."""

    @abstractmethod
    def _start(self) -> None: ...

    @abstractmethod
    def _stop(self) -> EnergyReading: ...

    def available(self) -> bool:
        """Whether this meter can measure on this host (probed once)."""
        if not self._probed:
            self._reason, self._probed = self._probe(), True
        return self._reason is None

    @property
    def reason(self) -> str | None:
        """Why the meter is unavailable (None when it is available)."""
        self.available()
        return self._reason

    def start(self) -> None:
        """Begin an interval. Raises :class:`BackendUnavailableError` if the meter cannot run here."""
        if not self.available():
            raise BackendUnavailableError(f"energy meter {self.name!r} is unavailable: {self._reason}")
        if self._running:
            raise RuntimeError(f"energy meter {self.name!r} is already running")
        self._running = True
        self._start()

    def stop(self) -> EnergyReading:
        """End the interval and return its :class:`EnergyReading`."""
        if not self._running:
            raise RuntimeError(f"energy meter {self.name!r} stopped before it was started")
        self._running = False
        reading = self._stop()
        if self.not_used:
            reading.details["not_used"] = dict(self.not_used)
        self.reading = reading
        return reading

    def __enter__(self) -> Meter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._running:
            self.stop()


# --------------------------------------------------------------------------------------------------------------
# RAPL (Intel and AMD) through the powercap sysfs tree
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _RaplZone:
    path: Path
    name: str
    max_uj: int


def rapl_delta_uj(before: int, after: int, max_uj: int) -> int:
    """Counter increase from ``before`` to ``after`` for a counter that wraps to 0 after ``max_uj``."""
    return after - before if after >= before else after + max_uj - before


class RaplMeter(Meter):
    """CPU package (+ DRAM) energy from ``/sys/class/powercap/intel-rapl:*/energy_uj``.

    Intel and AMD (Zen, Linux >= 5.8) expose the same ``intel-rapl`` powercap tree. Package zones and their
    ``dram`` sub-zones are summed; ``psys`` (platform) zones are used only when there is no package zone, since
    they contain the packages. Counters wrap at ``max_energy_range_uj``: a background thread reads them every
    ``poll_s`` seconds so that even long intervals see each wrap (a 262 kJ range wraps after ~10 min at 400 W).
    Since Linux 5.10 (CVE-2020-8694) ``energy_uj`` is readable by root only; then the meter is unavailable and
    says so.
    """

    name = "rapl"

    def __init__(self, root: str | Path = "/sys/class/powercap", poll_s: float | None = 5.0) -> None:
        super().__init__()
        self.root = Path(root)
        self.poll_s = poll_s
        self.zones: list[_RaplZone] = []
        self._lock = threading.Lock()
        self._stop_evt = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: dict[Path, int] = {}
        self._acc: dict[Path, int] = {}
        self._wraps = 0

    def _discover(self) -> list[_RaplZone]:
        pkgs, psys = [], []
        for top in sorted(self.root.glob("intel-rapl:*")):
            if not re.fullmatch(r"intel-rapl:\d+", top.name):
                continue
            zname = (top / "name").read_text().strip() if (top / "name").exists() else top.name
            zone = _RaplZone(top, zname, int((top / "max_energy_range_uj").read_text()))
            if zname.startswith("psys"):
                psys.append(zone)
                continue
            pkgs.append(zone)
            for sub in sorted(top.glob(f"{top.name}:*")):
                if (sub / "name").exists() and (sub / "name").read_text().strip() == "dram":
                    pkgs.append(_RaplZone(sub, f"{zname}/dram", int((sub / "max_energy_range_uj").read_text())))
        return pkgs or psys

    def _probe(self) -> str | None:
        if not self.root.is_dir():
            return f"{self.root} does not exist (no powercap: a VM, a container without /sys, or not Linux)"
        try:
            zones = self._discover()
        except (OSError, ValueError) as e:
            return f"cannot read RAPL zones under {self.root}: {e}"
        if not zones:
            return f"no intel-rapl:* zones under {self.root} (RAPL not exposed by this CPU or hypervisor)"
        for z in zones:
            try:
                int((z.path / "energy_uj").read_text())
            except PermissionError:
                return (
                    f"permission denied reading {z.path / 'energy_uj'}: since Linux 5.10 RAPL counters are "
                    "root-only; run as root or grant read access (e.g. a udev rule: chmod o+r .../energy_uj)"
                )
            except (OSError, ValueError) as e:
                return f"cannot read {z.path / 'energy_uj'}: {e}"
        self.zones = zones
        return None

    def _read(self) -> dict[Path, int]:
        return {z.path: int((z.path / "energy_uj").read_text()) for z in self.zones}

    def _sample(self) -> None:
        """Fold the counters' increase since the last read into the totals, handling wrap-around."""
        now = self._read()
        with self._lock:
            for z in self.zones:
                before, after = self._last[z.path], now[z.path]
                if after < before:
                    self._wraps += 1
                self._acc[z.path] += rapl_delta_uj(before, after, z.max_uj)
                self._last[z.path] = after

    def _poll(self) -> None:
        assert self.poll_s is not None
        while not self._stop_evt.wait(self.poll_s):
            self._sample()

    def _start(self) -> None:
        self._last = self._read()
        self._acc = {p: 0 for p in self._last}
        self._wraps = 0
        self._t0 = time.perf_counter()
        self._stop_evt.clear()
        if self.poll_s:
            self._thread = threading.Thread(target=self._poll, name="effdl-rapl", daemon=True)
            self._thread.start()

    def _stop(self) -> EnergyReading:
        seconds = time.perf_counter() - self._t0
        if self._thread is not None:
            self._stop_evt.set()
            self._thread.join()
            self._thread = None
        self._sample()
        per_zone = {z.name: self._acc[z.path] / 1e6 for z in self.zones}
        return EnergyReading(
            joules=sum(per_zone.values()),
            seconds=seconds,
            method="rapl",
            estimate=False,
            assumptions=(
                f"measured by RAPL ({' + '.join(per_zone)}): whole-package energy over the interval, including idle "
                "power and other processes; not attributed to this process"
            ),
            details={"zones_j": per_zone, "wraps": self._wraps, "root": str(self.root)},
        )


# --------------------------------------------------------------------------------------------------------------
# NVML total energy counter
# --------------------------------------------------------------------------------------------------------------


class NvmlMeter(Meter):
    """GPU energy from NVML's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ, Volta+).

    Reads the hardware counter at start and stop; never integrates power samples. ``indices`` picks the GPUs
    (default: all). Needs ``nvidia-ml-py`` (``pip install 'effdl[energy]'``), imported only when used.
    """

    name = "nvml"

    def __init__(self, indices: list[int] | None = None) -> None:
        super().__init__()
        self.indices = indices
        self._nvml: Any = None
        self._names: list[str] = []

    def _probe(self) -> str | None:
        try:
            import pynvml
        except ImportError:
            return "nvidia-ml-py is not installed (pip install 'effdl[energy]')"
        try:
            pynvml.nvmlInit()
        except Exception as e:  # pynvml.NVMLError and its generated subclasses; no driver gives one too
            return f"NVML cannot initialise (no NVIDIA driver or GPU?): {e}"
        try:
            count = pynvml.nvmlDeviceGetCount()
            indices = self.indices if self.indices is not None else list(range(count))
            if not indices:
                return "NVML reports no GPU"
            bad = [i for i in indices if not 0 <= i < count]
            if bad:
                return f"GPU index {bad} out of range: NVML reports {count} GPU(s)"
            names = []
            for i in indices:
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(h)
                name = name.decode() if isinstance(name, bytes) else str(name)
                try:
                    pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
                except Exception as e:
                    return f"GPU {i} ({name}) has no total-energy counter (needs Volta or newer): {e}"
                names.append(name)
        except Exception as e:
            return f"NVML query failed: {e}"
        finally:
            pynvml.nvmlShutdown()
        self.indices, self._names, self._nvml = indices, names, pynvml
        return None

    def _read_mj(self) -> list[int]:
        nv = self._nvml
        return [int(nv.nvmlDeviceGetTotalEnergyConsumption(nv.nvmlDeviceGetHandleByIndex(i))) for i in self.indices]

    def _start(self) -> None:
        self._nvml.nvmlInit()
        self._t0 = time.perf_counter()
        self._e0 = self._read_mj()

    def _stop(self) -> EnergyReading:
        try:
            e1 = self._read_mj()
            seconds = time.perf_counter() - self._t0
        finally:
            self._nvml.nvmlShutdown()
        per_gpu = {
            f"{i}:{n}": (b - a) / 1e3 for i, n, a, b in zip(self.indices, self._names, self._e0, e1, strict=True)
        }
        return EnergyReading(
            joules=sum(per_gpu.values()),
            seconds=seconds,
            method="nvml",
            estimate=False,
            assumptions=(
                "measured by NVML's total-energy counter of GPU(s) "
                f"{', '.join(per_gpu)}: whole-board energy over the interval, including idle power; host CPU excluded"
            ),
            details={"gpus_j": per_gpu},
        )


# --------------------------------------------------------------------------------------------------------------
# Jetson INA3221 power rails (hwmon sysfs, or tegrastats)
# --------------------------------------------------------------------------------------------------------------

# Rails that carry the whole module's input power (Orin: VDD_IN; Xavier/Nano on JetPack 4: POM_5V_IN).
TOTAL_RAILS = re.compile(r"^(VDD_IN|POM_5V_IN|VIN|VIN_SYS_5V0)$")
_TEGRA_MW = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?")


def parse_tegrastats(line: str) -> dict[str, float]:
    """Rail powers in watts from one tegrastats line (``VDD_IN 5012mW/5012mW`` or ``POM_5V_IN 2850/2850``)."""
    return {name: int(cur) / 1e3 for name, cur, _avg in _TEGRA_MW.findall(line) if not name.startswith(("RAM", "SWAP"))}


def _total_power(rails: dict[str, float]) -> tuple[float, str]:
    """Module power from rail powers: the total-input rail if there is one, else the sum (and what was used)."""
    total = [k for k in rails if TOTAL_RAILS.match(k)]
    if total:
        return rails[total[0]], total[0]
    return sum(rails.values()), "sum of " + " + ".join(sorted(rails))


class _Integrator:
    """Trapezoidal integral of power samples ``(t, watts)`` over time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.joules = 0.0
        self.samples = 0
        self.last: tuple[float, float] | None = None

    def add(self, t: float, watts: float) -> None:
        with self.lock:
            if self.last is not None:
                t0, w0 = self.last
                self.joules += 0.5 * (w0 + watts) * (t - t0)
            self.last = (t, watts)
            self.samples += 1


class JetsonMeter(Meter):
    """Jetson module energy from the INA3221 power monitors, by sampling rail power every ``interval_s``.

    The INA3221 reports voltage and current, not energy, so power is sampled and integrated (trapezoids).
    Reads the hwmon sysfs files (``in*_label``, ``in*_input`` mV, ``curr*_input`` mA) under ``hwmon_root``;
    falls back to parsing ``tegrastats`` output. Uses the total-input rail (VDD_IN on Orin) when present,
    else the sum of the rails.
    """

    name = "jetson-ina3221"

    def __init__(
        self,
        hwmon_root: str | Path = "/sys/class/hwmon",
        interval_s: float = 0.05,
        tegrastats: str | None = "tegrastats",
    ) -> None:
        super().__init__()
        self.hwmon_root = Path(hwmon_root)
        self.interval_s = interval_s
        self.tegrastats = tegrastats
        self.channels: list[tuple[str, Path, Path]] = []  # (label, in*_input, curr*_input)
        self.source: str | None = None
        self._integ = _Integrator()
        self._stop_evt = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._rail_used = ""

    def _find_channels(self) -> list[tuple[str, Path, Path]]:
        chans = []
        for hw in sorted(self.hwmon_root.glob("*")):
            name = hw / "name"
            if not name.exists() or "ina3221" not in name.read_text().strip():
                continue
            for label in sorted(hw.glob("in*_label")):
                n = label.name[2:-6]
                vin, cin = hw / f"in{n}_input", hw / f"curr{n}_input"
                text = label.read_text().strip()
                if vin.exists() and cin.exists() and text and not text.startswith("NC"):
                    chans.append((text, vin, cin))
        return chans

    def _probe(self) -> str | None:
        try:
            self.channels = self._find_channels()
        except OSError as e:
            return f"cannot read INA3221 hwmon under {self.hwmon_root}: {e}"
        if self.channels:
            try:
                self.read_rails()
            except (OSError, ValueError) as e:
                return f"cannot read INA3221 rails: {e}"
            self.source = "hwmon"
            return None
        exe = shutil.which(self.tegrastats) if self.tegrastats else None
        if exe is not None:
            self.tegrastats, self.source = exe, "tegrastats"
            return None
        return f"no INA3221 hwmon device under {self.hwmon_root} and no tegrastats on PATH (not a Jetson?)"

    def read_rails(self) -> dict[str, float]:
        """Power of each hwmon rail now, in watts (mV x mA / 1e6)."""
        return {lbl: int(v.read_text()) * int(c.read_text()) / 1e6 for lbl, v, c in self.channels}

    def _poll_hwmon(self) -> None:
        while not self._stop_evt.wait(self.interval_s):
            self._sample_hwmon()

    def _sample_hwmon(self) -> float:
        t = time.perf_counter()
        w, self._rail_used = _total_power(self.read_rails())
        self._integ.add(t, w)
        return t

    def _read_tegrastats(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            rails = parse_tegrastats(line)
            if rails:
                w, self._rail_used = _total_power(rails)
                if self._integ.samples == 0:  # the first line comes after start: extend it back to the start
                    self._integ.add(self._t0, w)
                self._integ.add(time.perf_counter(), w)
            if self._stop_evt.is_set():
                break

    def _start(self) -> None:
        self._integ = _Integrator()
        self._stop_evt.clear()
        if self.source == "hwmon":
            self._t0 = self._sample_hwmon()
            self._thread = threading.Thread(target=self._poll_hwmon, name="effdl-ina3221", daemon=True)
        else:
            ms = max(1, int(self.interval_s * 1000))
            self._t0 = time.perf_counter()
            self._proc = subprocess.Popen(
                [str(self.tegrastats), "--interval", str(ms)], stdout=subprocess.PIPE, text=True, bufsize=1
            )
            self._thread = threading.Thread(target=self._read_tegrastats, name="effdl-tegrastats", daemon=True)
        self._thread.start()

    def _stop(self) -> EnergyReading:
        self._stop_evt.set()
        if self.source == "hwmon":
            assert self._thread is not None
            self._thread.join()
            t_end = self._sample_hwmon()
        else:
            assert self._proc is not None
            self._proc.terminate()
            self._proc.wait(timeout=5)
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._proc = None
            # Close the interval with the last power seen, so the integral spans start..stop.
            t_end = time.perf_counter()
            if self._integ.last is not None:
                self._integ.add(t_end, self._integ.last[1])
        self._thread = None
        seconds = t_end - self._t0  # the integral spans exactly this interval
        if self._integ.samples < 2:
            raise BackendUnavailableError(
                f"energy meter {self.name!r} got {self._integ.samples} power sample(s) from {self.source}; "
                "the interval was too short or tegrastats printed no rail powers"
            )
        return EnergyReading(
            joules=self._integ.joules,
            seconds=seconds,
            method="jetson-ina3221",
            estimate=False,
            assumptions=(
                f"measured: INA3221 rail power ({self._rail_used}) sampled every {self.interval_s:g} s via "
                f"{self.source} and integrated; whole-module energy including idle power and other processes"
            ),
            details={"source": self.source, "samples": self._integ.samples, "rail": self._rail_used},
        )


# --------------------------------------------------------------------------------------------------------------
# Estimate from the device profile
# --------------------------------------------------------------------------------------------------------------


class EstimateMeter(Meter):
    """A labelled ESTIMATE: ``(idle + (max - idle) x CPU utilisation) x time`` from the profile's power figures.

    Utilisation is this process's CPU time (``os.times``, including waited-for children) over the interval,
    divided by wall time x usable cores (``os.sched_getaffinity``), clamped to [0, 1]. Per-core power figures
    are multiplied by those cores. Only meaningful for work on the CPU: a profile whose compute units are all
    accelerators is refused.
    """

    name = "estimate"

    def __init__(self, profile: DeviceProfile | None, cores: int | None = None) -> None:
        super().__init__()
        self.profile = profile
        from effdl.benchmark.system import usable_cores

        self.cores = cores or usable_cores()

    def _probe(self) -> str | None:
        p = self.profile
        if p is None:
            return "no device profile to take idle and maximum power from"
        if not any(u.kind == "cpu" for u in p.units):
            return f"profile {p.name!r} has no CPU unit; CPU utilisation says nothing about its accelerators' power"
        missing = [k for k in ("idle_w", "max_w") if getattr(p.power, k) is None]
        if missing:
            return f"profile {p.name!r} lacks power.{' and power.'.join(missing)}"
        return None

    def power_w(self) -> tuple[float, float]:
        """Idle and maximum power of the usable cores' share (per-core figures times cores)."""
        assert self.profile is not None and self.profile.power.idle_w and self.profile.power.max_w
        k = self.cores if self.profile.power.scope == "per_core" else 1
        return self.profile.power.idle_w.value * k, self.profile.power.max_w.value * k

    def _start(self) -> None:
        from effdl.benchmark.system import CpuSampler

        self._sampler = CpuSampler(self.cores)
        self._sampler.start()

    def _stop(self) -> EnergyReading:
        s = self._sampler.stop()
        idle, peak = self.power_w()
        util = s.utilisation
        watts = idle + (peak - idle) * util
        p = self.profile
        assert p is not None
        scope = f" ({p.power.scope}: x {self.cores} cores)" if p.power.scope == "per_core" else ""
        sensors = "; ".join(f"{k}: {v}" for k, v in self.not_used.items())
        assumptions = (
            f"ESTIMATE, not measured: (idle {idle:.3g} W + (max {peak:.3g} W - idle) x CPU utilisation {util:.3f}) x "
            f"{s.wall_s:.3f} s; utilisation = this process's CPU time {s.cpu_s:.3f} s / ({s.wall_s:.3f} s x "
            f"{s.cores} cores); power from device profile {p.name!r}{scope}; assumes power linear in utilisation"
            + (f"; no energy sensor was usable ({sensors})" if sensors else "")
        )
        return EnergyReading(
            joules=watts * s.wall_s,
            seconds=s.wall_s,
            method="estimate",
            estimate=True,
            assumptions=assumptions,
            details={
                "idle_w": idle,
                "max_w": peak,
                "utilisation": util,
                "cpu_s": s.cpu_s,
                "cores": s.cores,
                "profile": p.name,
            },
        )


# --------------------------------------------------------------------------------------------------------------
# Choice
# --------------------------------------------------------------------------------------------------------------


def make_meter(sensor: str) -> Meter:
    """A meter for a sensor name from a profile's ``energy_sensors``."""
    if sensor == "rapl":
        return RaplMeter()
    if sensor == "nvml":
        return NvmlMeter()
    if sensor == "jetson-ina3221":
        return JetsonMeter()
    from effdl.errors import UnknownNameError

    raise UnknownNameError("energy sensor", sensor, list(SENSORS))


def choose_meter(profile: DeviceProfile | None = None, *, sensors: list[str] | None = None) -> Meter:
    """The best available meter: the profile's sensors in order, then a labelled estimate from its power.

    ``sensors`` overrides the order (default: the profile's ``energy_sensors``, or all of rapl, nvml,
    jetson-ina3221 without a profile). The returned meter's ``not_used`` lists the sensors skipped and why
    (also copied into the reading's details). Raises :class:`BackendUnavailableError` with every reason when
    nothing can measure or estimate; record :func:`unavailable_json` in the report then.
    """
    if sensors is None:
        sensors = [s for s in profile.energy_sensors if s != "none"] if profile is not None else list(SENSORS)
    reasons: dict[str, str] = {}
    for s in sensors:
        m = make_meter(s)
        if m.available():
            m.not_used = reasons
            return m
        reasons[s] = m.reason or "unavailable"
    est = EstimateMeter(profile)
    if est.available():
        est.not_used = reasons
        return est
    reasons["estimate"] = est.reason or "unavailable"
    raise BackendUnavailableError(
        "no energy meter can run here: " + "; ".join(f"{k}: {v}" for k, v in reasons.items()),
        hint="on bare metal run as root for RAPL, install 'effdl[energy]' for NVML, or give a device profile "
        "with power.idle_w and power.max_w for a labelled estimate",
    )


__all__ = [
    "EnergyReading",
    "EstimateMeter",
    "JetsonMeter",
    "Meter",
    "NvmlMeter",
    "RaplMeter",
    "choose_meter",
    "inferences_per_joule",
    "joules_per_inference",
    "make_meter",
    "parse_tegrastats",
    "rapl_delta_uj",
    "unavailable_json",
]
