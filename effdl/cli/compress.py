"""``effdl compress CHECKPOINT -r RECIPE -o OUT``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from effdl.pipeline import Progress


class ConsoleProgress(Progress):
    """Shows each pipeline stage with a spinner, then a one-line summary with its duration."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._status: Any = None

    def stage_started(self, name: str, text: str) -> None:
        self._status = self.console.status(f"[bold]{name}[/]: {text}")
        self._status.start()

    def stage_done(self, name: str, seconds: float, summary: str) -> None:
        if self._status is not None:
            self._status.stop()
        self.console.print(f"[green]✓[/] [bold]{name:<10}[/] {seconds:6.1f} s  {summary}", highlight=False)

    def say(self, text: str) -> None:
        if self._status is not None:
            self._status.update(f"[bold]{text}[/]")


def _fmt_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def results_table(report: dict[str, Any]) -> Table:
    """The variants table the CLI prints (same numbers as report.md)."""
    task = report["task"]
    unit = task.get("unit", "")
    table = Table(title=f"{report['title']}: every variant verified on {task['sizes']['heldout']} held-out samples")
    cols = ("variant", "backend", "precision", f"{task['metric']} ({unit})", "p50 ms", "p99 ms", "speedup", "size", "")
    for c in cols:
        table.add_column(c, justify="right" if c not in ("variant", "backend", "precision", "") else "left")
    for v in report["variants"]:
        b = v.get("benchmark") or {}
        lat = b.get("latency_ms") or {}
        status = (
            "reference"
            if v.get("reference")
            else ("ok" if v["accepted"] else f"[red]refused: {escape(str(v['reason']))}[/]")
        )
        if b.get("noisy"):
            status += " [yellow](noisy)[/]"
        table.add_row(
            v["name"],
            v["backend"],
            v["precision"],
            f"{v['metric']:.2f}" if v.get("metric") is not None else "-",
            f"{lat['p50']:.3f}" if lat else "-",
            f"{lat['p99']:.3f}" if lat else "-",
            f"{v['speedup']:.2f}x" if v.get("speedup") else "-",
            _fmt_size(v.get("size_bytes")),
            status,
        )
    return table


def compress_cmd(
    checkpoint: Path = typer.Argument(..., help="Trained checkpoint: .safetensors, .pt/.pth state_dict, .pt2, .onnx."),
    recipe: str = typer.Option(
        ..., "-r", "--recipe", help="Recipe YAML file, or the name of a curated recipe in recipes/."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder: package + report (written atomically)."),
    arch: str | None = typer.Option(None, "--arch", help="Zoo architecture of a weights-only checkpoint."),
    model: str | None = typer.Option(
        None, "--model", help="Your model factory 'package.module:function' (its code runs: you asked for it)."
    ),
    task: str | None = typer.Option(None, "--task", help="Task name, when the checkpoint records none."),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
) -> None:
    """Compress, export, compile, verify and benchmark a trained checkpoint; write a package and a report."""
    from effdl.cli import console
    from effdl.pipeline import compress
    from effdl.recipe import load_recipe

    rec = load_recipe(recipe)
    result = compress(
        checkpoint, rec, output, arch=arch, factory=model, task=task, force=force, progress=ConsoleProgress(console)
    )
    report = result.report
    console.print(results_table(report))
    ref = next(v for v in report["variants"] if v.get("reference"))
    if ref.get("benchmark"):
        console.print(f"latency: {ref['benchmark']['method']}; speedup = {ref['name']} p50 / variant p50", style="dim")
    console.print(f"package: {result.out}/manifest.json")
    for kind, path in sorted(result.files.items()):
        console.print(f"report ({kind}): {path}")
