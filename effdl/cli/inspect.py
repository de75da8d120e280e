"""``effdl inspect PACKAGE``: what a package holds (inputs, outputs, variants and their numbers)."""

from __future__ import annotations

from pathlib import Path

import typer


def inspect_cmd(
    package: Path = typer.Argument(..., help="Package folder written by `effdl compress`."),
    verify: bool = typer.Option(False, "--verify", help="Also check every file's size and sha256."),
) -> None:
    """Show a package's inputs, outputs and variants (backend, precision, verification, recorded latency)."""
    from rich.table import Table

    from effdl.cli import console
    from effdl.runtime.manifest import read_manifest, verify_files

    m = read_manifest(package)
    if verify:
        verify_files(package, m, list(m["files"]))
    console.print(
        f"[bold]{m.get('name')}[/] (effdl package v{m['format_version']}, written by effdl {m.get('effdl_version')})"
    )
    for kind in ("inputs", "outputs"):
        specs = ", ".join(f"{s['name']}{['?' if d is None else d for d in s['shape']]}:{s['dtype']}" for s in m[kind])
        console.print(f"{kind}: {specs}")
    task = m.get("task") or {}
    table = Table(title="variants (verification on held-out data; latency as recorded by compress)")
    for col in (
        "variant",
        "backend",
        "precision",
        "device",
        task.get("metric", "metric"),
        "max abs err",
        "p50 ms",
        "files",
    ):
        table.add_column(col)
    for v in m["variants"]:
        ver, b = v.get("verification") or {}, v.get("benchmark") or {}
        table.add_row(
            v["name"],
            v["backend"],
            v.get("precision", "-"),
            v.get("device", "cpu"),
            f"{ver['metric']:.2f}" if "metric" in ver else "-",
            f"{ver['max_abs_error']:.2e}" if "max_abs_error" in ver else "-",
            f"{b['p50_ms']:.3f}" if b.get("p50_ms") else "-",
            ", ".join(v["files"]),
        )
    console.print(table)
    if verify:
        console.print(f"all {len(m['files'])} files match their sha256")
