"""Device profiles: loading and validation errors, host detection on fake trees, matching, scaling, roofline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from effdl import devices as d
from effdl.errors import InputError, UnknownNameError

XEON_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
cpu MHz\t\t: 2000.000
flags\t\t: fpu sse4_2 avx fma f16c avx2 avx512f avx512bw avx512vl avx512_vnni avx512_bf16 avx512_fp16 \
amx_tile amx_bf16 amx_int8 hypervisor

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
"""

PI5_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1
"""

REQUIRED = {"x86-64-avx512-vnni", "raspberry-pi-5", "jetson-orin-nano", "nvidia-h100-sxm", "intel-core-ultra-155h"}


def host(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "hostname": "test",
        "architecture": "x86_64",
        "vendor": "GenuineIntel",
        "cpu_model": "Intel(R) Xeon(R) Gold 6248",
        "cores": 4,
        "clock_ghz": 3.0,
        "clock_source": "test",
        "isa": [],
        "all_flags": [],
        "memory_gb": 16.0,
        "board": None,
        "gpus": [],
        "powercap": False,
    }
    base.update(kw)
    base["isa"] = sorted(f for f in d.ISA_FLAGS if f in base["all_flags"])
    return base


CASCADE = ["avx", "fma", "avx2", "avx512f", "avx512bw", "avx512_vnni"]
SPR = [*CASCADE, "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"]


def test_shipped_profiles_load_and_round_trip() -> None:
    names = d.list_profiles()
    assert REQUIRED <= set(names)
    for name in names:
        p = d.load_profile(name)
        assert p.name == name and p.sources
        again = d.parse_profile(yaml.safe_load(p.to_yaml()), name)
        assert again == p


def test_every_figure_cites_a_known_source_or_arithmetic() -> None:
    for name in d.list_profiles():
        p = d.load_profile(name)
        figs = [p.memory.bandwidth_gbps, p.power.max_w, p.power.idle_w]
        for u in p.units:
            figs += list(u.peak.values()) + [f for v in u.variants for f in v.peak.values()]
        for f in figs:
            if f is not None:
                assert f.source or f.derived, name
                for key in (f.source or "").split(","):
                    assert not key.strip() or key.strip() in p.sources, (name, key)


def write_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, data: Any) -> Path:
    monkeypatch.setenv(d.ENV_PATH, str(tmp_path))
    path = tmp_path / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def minimal(**kw: Any) -> dict[str, Any]:
    data = {
        "name": "tiny",
        "description": "a test device",
        "kind": "cpu",
        "architecture": "x86_64",
        "units": [
            {
                "name": "cpu",
                "kind": "cpu",
                "model": "Test",
                "cores": 2,
                "clock_ghz": 1.0,
                "peak_scope": "per_core",
                "peak": {"fp32": {"ops_per_cycle": 8, "derived": "1 x 128-bit FMA x 4 x 2"}},
            }
        ],
        "power": {"idle_w": {"value": 1, "source": "ds"}, "max_w": {"value": 5, "source": "ds"}},
        "sources": {"ds": "datasheet"},
    }
    data.update(kw)
    return data


def test_profile_from_env_path_and_peak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_profile(tmp_path, monkeypatch, "tiny", minimal())
    assert "tiny" in d.list_profiles()
    p = d.load_profile("tiny")
    assert d.peak_ops(p, "fp32") == 8 * 1e9 * 2
    assert d.peak_ops(p, "int8") is None


def test_extra_field_names_file_and_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = minimal()
    data["units"][0]["peak"]["fp32"]["flops"] = 3
    path = write_profile(tmp_path, monkeypatch, "tiny", data)
    with pytest.raises(InputError) as e:
        d.load_profile("tiny")
    assert str(path) in e.value.message and "units.0.peak.fp32.flops" in e.value.message


def test_figure_without_provenance_and_unknown_source_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = minimal()
    data["units"][0]["peak"]["fp32"] = {"ops_per_cycle": 8}
    write_profile(tmp_path, monkeypatch, "tiny", data)
    with pytest.raises(InputError, match=r"units\.0\.peak\.fp32.*source"):
        d.load_profile("tiny")
    data = minimal()
    data["power"]["max_w"]["source"] = "nowhere"
    write_profile(tmp_path, monkeypatch, "tiny", data)
    with pytest.raises(InputError, match="nowhere"):
        d.load_profile("tiny")


def test_bad_yaml_names_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_profile(tmp_path, monkeypatch, "tiny", "name: tiny\nunits: [\n  - oops: : :\n")
    with pytest.raises(InputError, match=r"tiny\.yaml.*line \d+"):
        d.load_profile("tiny")


def test_name_must_match_file_and_unknown_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_profile(tmp_path, monkeypatch, "other", minimal())
    with pytest.raises(InputError, match="field 'name'"):
        d.load_profile("other")
    with pytest.raises(UnknownNameError) as e:
        d.load_profile("no-such-device")
    assert "raspberry-pi-5" in e.value.known


def test_parse_cpuinfo_x86_and_arm() -> None:
    x = d.parse_cpuinfo(XEON_CPUINFO)
    assert x["vendor"] == "GenuineIntel" and x["cpu_model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"avx512_vnni", "amx_int8"} <= x["flags"] and x["cpuinfo_mhz"] == 2000.0
    a = d.parse_cpuinfo(PI5_CPUINFO)
    assert a["cpu_model"] == "Cortex-A76" and a["vendor"] == "ARM" and "asimddp" in a["flags"]


def test_detect_host_on_fake_tree(tmp_path: Path) -> None:
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/cpuinfo").write_text(PI5_CPUINFO)
    (tmp_path / "proc/meminfo").write_text("MemTotal:        8245504 kB\nMemFree: 1 kB\n")
    (tmp_path / "proc/device-tree/model").write_text("Raspberry Pi 5 Model B Rev 1.0\x00")
    freq = tmp_path / "sys/devices/system/cpu/cpu0/cpufreq"
    freq.mkdir(parents=True)
    (freq / "cpuinfo_max_freq").write_text("2400000\n")
    h = d.detect_host(tmp_path, cores=4, architecture="aarch64", gpus=False)
    assert h["cores"] == 4 and h["clock_ghz"] == 2.4 and h["memory_gb"] == 7.9
    assert h["board"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert {"asimd", "asimddp", "asimdhp", "neon"} <= set(h["isa"])
    p = d.match_profile(h)
    assert p is not None and p.name == "raspberry-pi-5"
    # roofline by hand: 1e9 MACs in 0.1 s = 2e10 ops/s over 4 x 16 x 2.4e9 = 1.536e11
    assert d.roofline_efficiency(1e9, 0.1, p, "fp32") == pytest.approx(2e10 / 1.536e11)
    with pytest.raises(InputError, match="no bf16 peak"):
        d.roofline_efficiency(1e9, 0.1, p, "bf16")


def test_detect_this_host_uses_affinity() -> None:
    import os

    h = d.detect_host(gpus=False)
    assert h["cores"] == len(os.sched_getaffinity(0))
    assert h["architecture"] and isinstance(h["isa"], list)


def test_match_rules() -> None:
    assert d.match_profile(host(all_flags=CASCADE)).name == "x86-64-avx512-vnni"  # type: ignore[union-attr]
    amd = host(cpu_model="AMD EPYC 9654 96-Core Processor", vendor="AuthenticAMD", all_flags=SPR[:-3])
    assert d.match_profile(amd) is None
    assert d.match_profile(host(all_flags=["avx2", "fma"])) is None
    h100 = host(all_flags=SPR, gpus=[{"name": "NVIDIA H100 80GB HBM3"}])
    assert d.match_profile(h100).name == "nvidia-h100-sxm"  # type: ignore[union-attr]
    assert d.match_profile(h100, unit="cpu").name == "x86-64-avx512-vnni"  # type: ignore[union-attr]
    pcie = host(all_flags=CASCADE, gpus=[{"name": "NVIDIA H100 PCIe"}])
    assert d.match_profile(pcie).name == "nvidia-h100-pcie"  # type: ignore[union-attr]
    jetson = host(architecture="aarch64", cpu_model="Cortex-A78AE", board="NVIDIA Jetson Orin Nano Developer Kit")
    assert d.match_profile(jetson).name == "jetson-orin-nano"  # type: ignore[union-attr]
    laptop = host(cpu_model="Intel(R) Core(TM) Ultra 7 155H", all_flags=["avx2", "fma", "avx_vnni"])
    assert d.match_profile(laptop).name == "intel-core-ultra-155h"  # type: ignore[union-attr]


def test_scale_to_host_without_amx() -> None:
    p = d.profile_for_host(host(all_flags=CASCADE, cores=4, clock_ghz=3.0))
    assert p.name == "x86-64-avx512-vnni@host" and p.derived_from_host
    u = p.unit("cpu")
    assert u.cores == 4 and u.peak_scope == "total" and not u.variants
    assert d.peak_ops(p, "fp32") == pytest.approx(64 * 3e9 * 4)
    assert d.peak_ops(p, "int8") == pytest.approx(256 * 3e9 * 4)
    assert d.peak_ops(p, "bf16") is None  # Cascade Lake has no AVX512_BF16
    assert p.power.idle_w.value == pytest.approx(1.25 * 4)  # type: ignore[union-attr]
    assert p.power.max_w.value == pytest.approx(6.25 * 4)  # type: ignore[union-attr]
    assert "x 4 detected cores" in (p.power.max_w.derived or "")  # type: ignore[union-attr]


def test_scale_to_host_with_amx_and_variant_choice() -> None:
    p = d.profile_for_host(host(all_flags=SPR, cores=2, clock_ghz=2.5))
    assert [v.name for v in p.unit().variants] == ["amx"]
    assert d.peak_ops(p, "int8") == pytest.approx(2048 * 2.5e9 * 2)
    assert d.peak_ops(p, "int8", variant=None) == pytest.approx(256 * 2.5e9 * 2)
    assert d.peak_ops(p, "bf16", variant="amx") == pytest.approx(1024 * 2.5e9 * 2)
    assert d.peak_ops(p, "fp16") == pytest.approx(128 * 2.5e9 * 2)
    with pytest.raises(UnknownNameError):
        d.peak_ops(p, "int8", variant="sme")
    # achieved 2 * 1e9 MACs / 1 ms = 2e12 ops/s against the VNNI peak 1.28e12 -> 1.5625
    assert d.roofline_efficiency(1e9, 1e-3, p, "int8", variant=None) == pytest.approx(2e12 / 1.28e12)
    again = d.parse_profile(yaml.safe_load(p.to_yaml()), "scaled")
    assert d.peak_ops(again, "int8") == d.peak_ops(p, "int8")


def test_unscaled_per_core_profile_has_no_total_peak() -> None:
    p = d.load_profile("x86-64-avx512-vnni")
    assert d.peak_ops(p, "fp32") is None
    assert d.peak_ops(p, "fp32", cores=2) == pytest.approx(64 * 2.0e9 * 2)
    assert d.peak_ops(p, "int8", cores=1, variant="amx") == pytest.approx(2048 * 2.0e9)
    with pytest.raises(InputError, match="profile_for_host"):
        d.roofline_efficiency(1e6, 1e-3, p, "fp32")


def test_isa_table_agrees_with_the_x86_profile() -> None:
    prof = d.load_profile("x86-64-avx512-vnni").unit()
    derived = d.derive_cpu_peaks(host(all_flags=SPR))
    for dtype, (opc, _, _) in derived[None].items():
        assert prof.peak[dtype].ops_per_cycle == opc, dtype  # type: ignore[index,union-attr]
    amx = next(v for v in prof.variants if v.name == "amx")
    for dtype, (opc, _, _) in derived["amx"].items():
        assert amx.peak[dtype].ops_per_cycle == opc, dtype  # type: ignore[index]
    pi = d.load_profile("raspberry-pi-5").unit()
    arm = d.derive_cpu_peaks(host(architecture="aarch64", all_flags=["asimd", "asimdhp", "asimddp"]))
    for dtype, (opc, _, _) in arm[None].items():
        assert pi.peak[dtype].ops_per_cycle == opc, dtype  # type: ignore[index,union-attr]


def test_generic_profile_for_unmatched_hosts() -> None:
    avx2 = host(cpu_model="AMD Ryzen 7 5800X", vendor="AuthenticAMD", all_flags=["avx2", "fma"], cores=8, clock_ghz=4.0)
    p = d.profile_for_host(avx2)
    assert p.name.startswith("host-") and p.derived_from_host
    assert d.peak_ops(p, "fp32") == pytest.approx(32 * 4e9 * 8)
    assert d.peak_ops(p, "int8") is None and p.unit().peak["int8"] is None
    assert p.power.idle_w is None and "x 8 cores" in (p.unit().peak["fp32"].derived or "")  # type: ignore[union-attr]
    assert d.match_score(p, avx2) > 0  # the written profile recognises its host
    again = d.parse_profile(yaml.safe_load(p.to_yaml()), "generic")
    assert d.peak_ops(again, "fp32") == d.peak_ops(p, "fp32")
    noclock = d.profile_for_host(host(cpu_model="Mystery", all_flags=["avx2", "fma"], clock_ghz=None))
    assert d.peak_ops(noclock, "fp32") is None and any("Clock not detected" in n for n in noclock.notes)


def test_cli_list_show_detect(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from effdl.cli.devices import app

    runner = CliRunner()
    r = runner.invoke(app, ["list"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "raspberry-pi-5" in r.output and "nvidia-h100-sxm" in r.output
    r = runner.invoke(app, ["show", "jetson-orin-nano"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "20.48 T" in r.output and "orin-nano-ds" in r.output
    r = runner.invoke(app, ["show", "nope"])
    assert isinstance(r.exception, UnknownNameError)
    out = tmp_path / "host.yaml"
    r = runner.invoke(app, ["detect", "-o", str(out)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    p = d.load_profile(out)
    assert p.derived_from_host and p.unit("cpu").cores == d.detect_host(gpus=False)["cores"]
    r = runner.invoke(app, ["detect", "-o", str(out)])
    assert isinstance(r.exception, InputError) and "--force" in r.exception.message


def test_gpu_detection_through_fake_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    class Mem:
        total = 80 * 1024**3

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 PCIe",
        nvmlDeviceGetMemoryInfo=lambda h: Mem(),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(d.shutil, "which", lambda name: None)  # no nvidia-smi
    gpus = d._detect_gpus()
    assert gpus == [{"index": 0, "name": "NVIDIA H100 PCIe", "memory_gb": 80.0, "driver": None, "power_limit_w": None}]
    h = d.detect_host(cores=2)
    assert d.match_profile(h).name == "nvidia-h100-pcie"  # type: ignore[union-attr]


def test_show_scaled_to_host() -> None:
    from typer.testing import CliRunner

    from effdl.cli.devices import app

    r = CliRunner().invoke(app, ["show", "x86-64-avx512-vnni", "--host"], env={"COLUMNS": "200"})
    cores = d.detect_host(gpus=False)["cores"]
    assert r.exit_code == 0 and f"x {cores} detected cores" in r.output  # per-core power scaled on any host


def test_report_json_carries_provenance() -> None:
    p = d.profile_for_host(host(all_flags=SPR, cores=2, clock_ghz=2.5))
    j = d.report_json(p)
    assert j["name"] == "x86-64-avx512-vnni@host" and j["derived_from_host"]
    int8 = {(r["variant"], r["dtype"]): r for r in j["peaks"]}
    assert int8[("amx", "int8")]["ops_per_s"] == pytest.approx(2048 * 2.5e9 * 2)
    assert "2.5 GHz x 2 detected cores" in int8[(None, "int8")]["how"]
    assert j["power"]["idle_w"]["value"] == pytest.approx(2.5) and "intel-amx" in j["sources"]
    import json

    json.dumps(j)


def test_cli_meters_lists_every_meter() -> None:
    from typer.testing import CliRunner

    from effdl.cli.devices import app

    r = CliRunner().invoke(app, ["meters", "--profile", "raspberry-pi-5"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for name in ("rapl", "nvml", "jetson-ina3221", "estimate"):
        assert name in r.output
    assert "benchmarks use:" in r.output or "record no energy" in r.output


def test_client_avx512_cpu_is_not_taken_for_a_xeon() -> None:
    tiger = host(cpu_model="11th Gen Intel(R) Core(TM) i7-1165G7 @ 2.80GHz", all_flags=CASCADE)
    assert d.match_profile(tiger) is None
    assert d.profile_for_host(tiger).name.startswith("host-")


def test_profile_for_device_follows_where_the_variant_runs() -> None:
    from effdl.devices import device_unit, profile_for_device

    assert [device_unit(d) for d in ("cpu", "CPU", "cuda", "cuda:1", "gpu", "npu", None)] == [
        "cpu",
        "cpu",
        "gpu",
        "gpu",
        "gpu",
        "npu",
        "cpu",
    ]
    # a GPU profile named by the recipe describes CUDA variants ...
    assert profile_for_device("nvidia-h100-sxm", "cuda").name == "nvidia-h100-sxm"
    # ... but a CPU variant in the same run is measured against this host's CPU
    cpu = profile_for_device("nvidia-h100-sxm", "cpu")
    assert cpu is not None and any(u.kind == "cpu" for u in cpu.units)
