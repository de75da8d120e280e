"""Energy meters against fake sysfs trees, a fake NVML module and a fake tegrastats; estimate arithmetic by hand."""

from __future__ import annotations

import os
import stat
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

from effdl import devices
from effdl.benchmark import energy as en
from effdl.benchmark import system
from effdl.errors import BackendUnavailableError

# ---------------------------------------------------------------------------------------------------- RAPL


def zone(root: Path, name: str, label: str, energy: int, max_uj: int) -> Path:
    z = root / name
    z.mkdir(parents=True)
    (z / "name").write_text(label + "\n")
    (z / "energy_uj").write_text(f"{energy}\n")
    (z / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return z


@pytest.fixture
def rapl_tree(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "powercap"
    return {
        "root": root,
        "pkg0": zone(root, "intel-rapl:0", "package-0", 900_000, 1_000_000),
        "core0": zone(root, "intel-rapl:0/intel-rapl:0:0", "core", 5, 1_000_000),
        "dram0": zone(root, "intel-rapl:0/intel-rapl:0:1", "dram", 100, 500_000),
        "pkg1": zone(root, "intel-rapl:1", "package-1", 0, 1_000_000),
        "psys": zone(root, "intel-rapl:2", "psys", 0, 1_000_000),
    }


def set_uj(z: Path, v: int) -> None:
    (z / "energy_uj").write_text(f"{v}\n")


def test_rapl_delta_wraps() -> None:
    assert en.rapl_delta_uj(100, 250, 1000) == 150
    assert en.rapl_delta_uj(900, 100, 1000) == 200


def test_rapl_sums_packages_and_dram_with_wrap(rapl_tree: dict[str, Path]) -> None:
    m = en.RaplMeter(rapl_tree["root"], poll_s=None)
    assert m.available(), m.reason
    assert sorted(z.name for z in m.zones) == ["package-0", "package-0/dram", "package-1"]  # no core, no psys
    m.start()
    set_uj(rapl_tree["pkg0"], 200_000)  # wrapped: 100_000 to the top + 200_000 = 0.3 J
    set_uj(rapl_tree["dram0"], 50_100)  # 0.05 J
    set_uj(rapl_tree["pkg1"], 1_500_000 - 1_000_000)  # 0.5 J
    set_uj(rapl_tree["core0"], 999_999)  # a sub-zone of the package: not added
    r = m.stop()
    assert r.method == "rapl" and not r.estimate
    assert r.joules == pytest.approx(0.3 + 0.05 + 0.5)
    assert r.details["zones_j"]["package-0"] == pytest.approx(0.3) and r.details["wraps"] == 1
    assert "whole-package" in (r.assumptions or "")


def test_rapl_polling_sees_every_wrap(rapl_tree: dict[str, Path]) -> None:
    m = en.RaplMeter(rapl_tree["root"], poll_s=None)
    m.start()
    # package-0 starts at 900_000 of 1_000_000: +0.5 (wrap), +0.4, +0.3 (wrap), +0.4 J
    for v in (400_000, 800_000, 100_000, 500_000):
        set_uj(rapl_tree["pkg0"], v)
        m._sample()  # what the polling thread does every poll_s seconds
    r = m.stop()
    assert r.details["zones_j"]["package-0"] == pytest.approx(1.6) and r.details["wraps"] == 2


def test_rapl_polling_thread_runs(rapl_tree: dict[str, Path]) -> None:
    m = en.RaplMeter(rapl_tree["root"], poll_s=0.01)
    m.start()
    set_uj(rapl_tree["pkg1"], 250_000)
    time.sleep(0.05)
    r = m.stop()
    assert r.details["zones_j"]["package-1"] == pytest.approx(0.25)


def test_rapl_psys_only_when_no_package(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "psys", 10, 1000)
    m = en.RaplMeter(tmp_path, poll_s=None)
    assert m.available() and [z.name for z in m.zones] == ["psys"]


def test_rapl_unavailable_reasons(tmp_path: Path, rapl_tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    m = en.RaplMeter(tmp_path / "absent")
    assert not m.available() and "does not exist" in (m.reason or "")
    with pytest.raises(BackendUnavailableError, match="rapl"):
        m.start()
    (tmp_path / "empty").mkdir()
    assert "no intel-rapl" in (en.RaplMeter(tmp_path / "empty").reason or "")
    real = Path.read_text

    def deny(self: Path, *a: Any, **k: Any) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", deny)
    m = en.RaplMeter(rapl_tree["root"])
    assert not m.available() and "permission denied" in (m.reason or "") and "root" in (m.reason or "")


# ---------------------------------------------------------------------------------------------------- NVML


class FakeNvml(types.ModuleType):
    """The parts of pynvml the meter uses; each GPU's counter advances by ``step_mj`` per read."""

    class NVMLError(Exception):
        pass

    def __init__(self, counters: list[int], step_mj: list[int], supported: bool = True) -> None:
        super().__init__("pynvml")
        self.counters, self.step, self.supported = counters, step_mj, supported
        self.inits = 0

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.inits -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.counters)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return f"Fake GPU {h}".encode()

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        if not self.supported:
            raise self.NVMLError("Not Supported")
        value = self.counters[h]
        self.counters[h] += self.step[h]
        return value


def test_nvml_counter_difference(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([1_000_000, 5], [2_500, 400])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    m = en.NvmlMeter()
    assert m.available(), m.reason
    m.start()  # probe read once (advancing the counters); start reads the next values
    r = m.stop()
    assert r.method == "nvml" and not r.estimate
    assert r.details["gpus_j"] == {"0:Fake GPU 0": 2.5, "1:Fake GPU 1": 0.4}
    assert r.joules == pytest.approx(2.9) and fake.inits == 0


def test_nvml_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([0], [1], supported=False))
    m = en.NvmlMeter()
    assert not m.available() and "Volta" in (m.reason or "")
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([0], [1]))
    assert "out of range" in (en.NvmlMeter(indices=[3]).reason or "")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert "effdl[energy]" in (en.NvmlMeter().reason or "")


# ---------------------------------------------------------------------------------------------------- Jetson


def ina3221(root: Path, rails: dict[int, tuple[str, int, int]]) -> Path:
    hw = root / "hwmon3"
    hw.mkdir(parents=True)
    (hw / "name").write_text("ina3221\n")
    for n, (label, mv, ma) in rails.items():
        (hw / f"in{n}_label").write_text(label + "\n")
        (hw / f"in{n}_input").write_text(f"{mv}\n")
        (hw / f"curr{n}_input").write_text(f"{ma}\n")
    other = root / "hwmon0"
    other.mkdir()
    (other / "name").write_text("cpu_thermal\n")
    return hw


def test_jetson_hwmon_uses_total_rail(tmp_path: Path) -> None:
    ina3221(tmp_path, {1: ("VDD_IN", 5000, 1200), 2: ("VDD_CPU_GPU_CV", 5000, 300), 3: ("VDD_SOC", 5000, 200)})
    m = en.JetsonMeter(tmp_path, interval_s=0.01, tegrastats=None)
    assert m.available(), m.reason
    assert m.read_rails() == {"VDD_IN": 6.0, "VDD_CPU_GPU_CV": 1.5, "VDD_SOC": 1.0}
    m.start()
    time.sleep(0.1)
    r = m.stop()
    assert r.method == "jetson-ina3221" and not r.estimate and r.details["rail"] == "VDD_IN"
    assert r.details["samples"] >= 3
    assert r.joules == pytest.approx(6.0 * r.seconds)  # constant 6 W over exactly the integrated interval


def test_jetson_hwmon_sums_rails_without_total(tmp_path: Path) -> None:
    hw = ina3221(tmp_path, {1: ("VDD_GPU_SOC", 1000, 2000), 2: ("VDD_CPU_CV", 1000, 1000), 3: ("NC", 0, 0)})
    m = en.JetsonMeter(tmp_path, interval_s=0.01, tegrastats=None)
    assert m.available(), m.reason
    assert m.read_rails() == {"VDD_GPU_SOC": 2.0, "VDD_CPU_CV": 1.0}
    m.start()
    time.sleep(0.03)
    (hw / "curr1_input").write_text("5000\n")  # power steps from 3 W to 6 W
    time.sleep(0.03)
    r = m.stop()
    assert "sum of" in r.details["rail"]
    assert 3.0 * r.seconds < r.joules < 6.0 * r.seconds


def test_parse_tegrastats() -> None:
    orin = (
        "11-26-2026 08:00:00 RAM 2000/7620MB (lfb 5x4MB) CPU [3%@729,1%@729] GR3D_FREQ 0% cpu@45C "
        "VDD_IN 5012mW/5012mW VDD_CPU_GPU_CV 620mW/620mW VDD_SOC 1407mW/1407mW"
    )
    assert en.parse_tegrastats(orin) == {"VDD_IN": 5.012, "VDD_CPU_GPU_CV": 0.62, "VDD_SOC": 1.407}
    nano = "RAM 1500/3964MB CPU [10%@1479] POM_5V_IN 2850/2850 POM_5V_GPU 0/0 POM_5V_CPU 412/412"
    assert en.parse_tegrastats(nano) == {"POM_5V_IN": 2.85, "POM_5V_GPU": 0.0, "POM_5V_CPU": 0.412}


def test_jetson_tegrastats_fallback(tmp_path: Path) -> None:
    script = tmp_path / "tegrastats"
    script.write_text(
        "#!/bin/sh\nwhile true; do echo 'RAM 1/2MB VDD_IN 4000mW/4000mW VDD_SOC 900mW/900mW'; sleep 0.01; done\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    m = en.JetsonMeter(tmp_path / "no-hwmon", interval_s=0.01, tegrastats=str(script))
    assert m.available() and m.source == "tegrastats"
    m.start()
    deadline = time.monotonic() + 10
    while m._integ.samples < 4 and time.monotonic() < deadline:  # the shell may start slowly on a busy host
        time.sleep(0.02)
    r = m.stop()
    assert r.details["source"] == "tegrastats" and r.details["rail"] == "VDD_IN"
    assert r.joules == pytest.approx(4.0 * r.seconds)  # constant 4 W, extended back to start and on to stop
    assert not en.JetsonMeter(tmp_path / "no-hwmon", tegrastats=None).available()


# ---------------------------------------------------------------------------------------------------- estimate


def profile(scope: str = "total", idle: float | None = 2.0, mx: float | None = 10.0, kind: str = "cpu") -> Any:
    power: dict[str, Any] = {"scope": scope}
    if idle is not None:
        power["idle_w"] = {"value": idle, "source": "ds"}
    if mx is not None:
        power["max_w"] = {"value": mx, "source": "ds"}
    return devices.parse_profile(
        {
            "name": "est",
            "description": "estimate test",
            "kind": "cpu" if kind == "cpu" else "gpu",
            "architecture": "x86_64",
            "units": [{"name": kind, "kind": kind, "model": "M", "cores": 4, "peak_scope": "total"}],
            "power": power,
            "energy_sensors": ["rapl"],
            "sources": {"ds": "datasheet"},
        },
        "test",
    )


def fake_clock(monkeypatch: pytest.MonkeyPatch, wall: float, cpu: float) -> None:
    walls, cpus = iter([100.0, 100.0 + wall]), iter([7.0, 7.0 + cpu])
    monkeypatch.setattr(system, "time", types.SimpleNamespace(perf_counter=lambda: next(walls)))
    monkeypatch.setattr(system, "process_cpu_seconds", lambda children=True: next(cpus))


@pytest.mark.parametrize(("scope", "idle", "mx"), [("total", 2.0, 10.0), ("per_core", 0.5, 2.5)])
def test_estimate_arithmetic(monkeypatch: pytest.MonkeyPatch, scope: str, idle: float, mx: float) -> None:
    # 4 cores, 10 s wall, 20 s CPU -> utilisation 0.5; power 2 + (10 - 2) x 0.5 = 6 W; 6 W x 10 s = 60 J
    fake_clock(monkeypatch, wall=10.0, cpu=20.0)
    m = en.EstimateMeter(profile(scope, idle, mx), cores=4)
    assert m.available(), m.reason
    m.start()
    r = m.stop()
    assert r.estimate and r.method == "estimate"
    assert r.details["utilisation"] == pytest.approx(0.5)
    assert r.joules == pytest.approx(60.0) and r.watts == pytest.approx(6.0)
    assert r.assumptions is not None and r.assumptions.startswith("ESTIMATE")
    j = r.to_json(120)
    assert list(j) == ["joules_per_inference", "inferences_per_joule", "method", "estimate", "assumptions"]
    assert j["joules_per_inference"] == pytest.approx(0.5) and j["inferences_per_joule"] == pytest.approx(2.0)


def test_estimate_clamps_and_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_clock(monkeypatch, wall=1.0, cpu=9.0)  # more CPU than 4 cores x 1 s (children): clamped to 1
    m = en.EstimateMeter(profile(), cores=4)
    m.start()
    assert m.stop().joules == pytest.approx(10.0)
    assert "idle_w" in (en.EstimateMeter(profile(idle=None)).reason or "")
    assert "no CPU unit" in (en.EstimateMeter(profile(kind="gpu")).reason or "")
    assert "no device profile" in (en.EstimateMeter(None).reason or "")


def test_estimate_measures_real_cpu_use() -> None:
    m = en.EstimateMeter(profile(), cores=1)
    m.start()
    t = time.process_time()
    while time.process_time() - t < 0.2:
        pass
    r = m.stop()
    # (a loaded machine may give this process less than the whole core, so no lower bound on utilisation)
    util = r.details["cpu_s"] / r.seconds
    # os.times counts 10 ms clock ticks: 0.2 s of process time reads at least 19 of them, and a difference of
    # two tick sums can land a float rounding below 0.19 (0.18999999999999773 seen once)
    assert r.details["cpu_s"] >= 0.19 - 1e-9 and r.details["utilisation"] == pytest.approx(min(1.0, util))
    assert r.joules == pytest.approx((2.0 + 8.0 * r.details["utilisation"]) * r.seconds)


# ---------------------------------------------------------------------------------------------------- choice


def test_choose_meter_order_and_fallback(monkeypatch: pytest.MonkeyPatch, rapl_tree: dict[str, Path]) -> None:
    roots = {"rapl": rapl_tree["root"]}
    monkeypatch.setattr(en, "make_meter", lambda s: en.RaplMeter(roots["rapl"]) if s == "rapl" else en.NvmlMeter())
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert isinstance(en.choose_meter(profile()), en.RaplMeter)
    roots["rapl"] = rapl_tree["root"] / "absent"
    m = en.choose_meter(profile())
    assert isinstance(m, en.EstimateMeter) and "rapl" in m.not_used
    m.start()
    r = m.stop()
    assert "rapl" in r.details["not_used"] and "no energy sensor was usable" in (r.assumptions or "")
    with pytest.raises(BackendUnavailableError) as e:
        en.choose_meter(None, sensors=["rapl", "nvml"])
    assert "rapl:" in e.value.message and "nvml:" in e.value.message and "estimate:" in e.value.message


def test_choose_meter_on_this_host_with_its_profile() -> None:
    p = devices.profile_for_host(unit="cpu")
    try:
        m = en.choose_meter(p)
    except BackendUnavailableError as e:  # a host with no sensor and no power figures: the reason is explicit
        assert "estimate:" in e.message
        return
    with m:
        sum(i * i for i in range(20_000))
    assert m.reading is not None and m.reading.seconds > 0 and m.reading.joules >= 0


def test_per_inference_helpers() -> None:
    r = en.EnergyReading(joules=3.0, seconds=1.5, method="rapl", estimate=False)
    assert en.joules_per_inference(r, 6) == 0.5 and en.inferences_per_joule(r, 6) == 2.0 and r.watts == 2.0
    zero = en.EnergyReading(joules=0.0, seconds=1.0, method="rapl", estimate=False)
    assert en.inferences_per_joule(zero, 5) is None
    with pytest.raises(ValueError):
        en.joules_per_inference(r, 0)
    assert en.unavailable_json("no sensor")["reason"] == "no sensor"


def test_meter_misuse() -> None:
    m = en.EstimateMeter(profile(), cores=os.cpu_count() or 1)
    with pytest.raises(RuntimeError, match="before it was started"):
        m.stop()
    m.start()
    with pytest.raises(RuntimeError, match="already running"):
        m.start()
    m.stop()
