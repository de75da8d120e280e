"""``effdl devices``: list and show device profiles, detect this host and write a profile for it."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Device profiles: list, show, and detect this host.", no_args_is_help=True)


def _ops(x: float | None) -> str:
    if x is None:
        return "-"
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if x >= div:
            return f"{x / div:.4g} {unit}"
    return f"{x:.4g}"


@app.command("list")
def list_cmd() -> None:
    """Every known device profile: kind, compute units, peak fp32 / int8, memory bandwidth, power, sensors."""
    from rich.table import Table

    from effdl.cli import console
    from effdl.devices import list_profiles, load_profile, peak_ops

    table = Table(title="effdl device profiles (peaks in ops/s, a MAC counts 2; '-' unknown or per-core unscaled)")
    for col in ("profile", "kind", "units", "fp32", "int8", "mem GB/s", "idle/max W", "sensors", "description"):
        table.add_column(col, overflow="fold")
    for name in list_profiles():
        p = load_profile(name)
        u = p.units[0]
        units = ", ".join(f"{x.name}:{x.cores if x.cores is not None else 'per-core'}" for x in p.units)
        bw = p.memory.bandwidth_gbps.value if p.memory.bandwidth_gbps else None
        idle = p.power.idle_w.value if p.power.idle_w else None
        mx = p.power.max_w.value if p.power.max_w else None
        power = f"{idle if idle is not None else '-'}/{mx if mx is not None else '-'}" + (
            " per core" if p.power.scope == "per_core" else ""
        )
        table.add_row(
            name,
            p.kind,
            units,
            _ops(peak_ops(p, "fp32", unit=u.name)),
            _ops(peak_ops(p, "int8", unit=u.name)),
            f"{bw:g}" if bw is not None else "-",
            power,
            ", ".join(p.energy_sensors) or "-",
            p.description if len(p.description) <= 70 else p.description[:69] + "…",
        )
    console.print(table)


@app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="Profile name (see `effdl devices list`) or a YAML file."),
    host: bool = typer.Option(False, "--host", help="Scale a per-core profile to this host's cores and ISA."),
) -> None:
    """Print one profile: its peaks per unit and dtype with how each was obtained, then the full YAML."""
    from rich.table import Table

    from effdl.cli import console
    from effdl.devices import detect_host, load_profile, scale_to_host, summary_rows

    p = load_profile(name)
    if host:
        p = scale_to_host(p, detect_host())
    table = Table(title=f"{p.name}: {p.description}")
    for col in ("unit", "variant", "dtype", "peak ops/s", "per core", "how"):
        table.add_column(col, overflow="fold")
    for r in summary_rows(p):
        table.add_row(
            r["unit"],
            r["variant"] or "",
            r["dtype"],
            _ops(r["ops_per_s"]),
            _ops(r["per_core_ops_per_s"]),
            r["how"] or "not supported",
        )
    console.print(table)
    console.print(p.to_yaml(), highlight=False, markup=False)


@app.command("detect")
def detect_cmd(
    output: Path | None = typer.Option(None, "-o", "--output", help="Write a profile YAML for this host here."),
    force: bool = typer.Option(False, "--force", help="Overwrite --output if it exists."),
) -> None:
    """Detect this host (CPU, cores, ISA, clock, memory, GPUs) and the profile that describes it."""
    import json

    from effdl.cli import console
    from effdl.devices import detect_host, match_profile, profile_for_host, summary_rows
    from effdl.errors import InputError

    host = detect_host()
    shown = {k: v for k, v in host.items() if k != "all_flags"}
    console.print_json(json.dumps(shown))
    matched = match_profile(host)
    profile = profile_for_host(host)
    if matched is not None:
        console.print(f"matching profile: [bold]{matched.name}[/] (scaled to this host as {profile.name})")
    else:
        console.print("no known profile matches this host; derived a generic profile from its ISA flags")
    for r in summary_rows(profile):
        label = f"{r['unit']}{'/' + r['variant'] if r['variant'] else ''} {r['dtype']}"
        console.print(f"  peak {label}: {_ops(r['ops_per_s'])}ops/s  ({r['how'] or 'not supported'})", highlight=False)
    if output is not None:
        if output.exists() and not force:
            raise InputError(f"--output {str(output)!r} exists; pass --force to overwrite it")
        if output.suffix not in (".yaml", ".yml"):
            raise InputError(f"--output must end in .yaml or .yml, got {output.name!r}")
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(output.name + ".tmp")
        header = (
            f"# Written by `effdl devices detect` for host {host['hostname']}. Figures marked 'derived' were\n"
            "# computed from the detected cores, clock and ISA flags; null means unknown: fill it in by hand.\n"
        )
        tmp.write_text(header + profile.to_yaml(), encoding="utf-8")
        tmp.replace(output)
        console.print(f"wrote {output}")


@app.command("meters")
def meters_cmd(
    profile: str | None = typer.Option(
        None, "--profile", "-p", help="Device profile for the estimate (default: the one matching this host's CPU)."
    ),
) -> None:
    """Which energy meters can run here, why the others cannot, and which one a benchmark would use."""
    from rich.table import Table

    from effdl.benchmark.energy import SENSORS, EstimateMeter, choose_meter, make_meter
    from effdl.cli import console
    from effdl.devices import load_profile, profile_for_host
    from effdl.errors import BackendUnavailableError

    prof = load_profile(profile) if profile else profile_for_host(unit="cpu")
    table = Table(title=f"energy meters on this host (profile {prof.name})")
    for col in ("meter", "available", "why not"):
        table.add_column(col, overflow="fold")
    for m in [*(make_meter(s) for s in SENSORS), EstimateMeter(prof)]:
        table.add_row(m.name, "yes" if m.available() else "no", m.reason or "")
    console.print(table)
    try:
        chosen = choose_meter(prof)
    except BackendUnavailableError as e:
        console.print(f"benchmarks record no energy here: {e.message}", highlight=False)
    else:
        label = "a labelled ESTIMATE" if chosen.name == "estimate" else "measured"
        console.print(f"benchmarks use: [bold]{chosen.name}[/] ({label})")
