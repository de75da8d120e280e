"""``effdl report``: render one run report again, or compare several, as HTML, Markdown or JSON."""

from __future__ import annotations

from pathlib import Path

import typer

FORMATS = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown", ".json": "json"}


def report_cmd(
    reports: list[Path] = typer.Argument(
        ..., help="report.json files written by `effdl compress` or `effdl bench` (or their output folders)."
    ),
    output: Path = typer.Option(
        ..., "-o", "--output", help="File to write; its suffix picks the format: .html, .md or .json."
    ),
) -> None:
    """Render one report, or compare several runs (devices, backends, variants) in one table with plots.

    With one report the output is that run's own report (the same rendering `effdl compress` writes).
    With several, one combined table, the plots over every variant of every run (colour per run), and
    notes where the runs came from different hosts or effdl versions. A .json output is the validated
    report, or for several the merged comparison (schema effdl.comparison/1).
    """
    from effdl.cli import console
    from effdl.errors import InputError
    from effdl.report import (
        atomic_write_text,
        compare,
        load_report,
        render_comparison_html,
        render_comparison_markdown,
        render_html,
        render_markdown,
        to_json_text,
    )

    fmt = FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise InputError(
            f"--output {str(output)!r}: unknown suffix {output.suffix or '(none)'!r}; "
            f"use one of {', '.join(sorted(set(FORMATS)))}"
        )
    if output.exists() and output.is_dir():
        raise InputError(f"--output {str(output)!r} is a folder; give a file name ending in .html, .md or .json")
    loaded = [load_report(p) for p in reports]  # all validated before anything is written
    if len(loaded) == 1:
        (report,) = loaded
        render = {"html": render_html, "markdown": render_markdown, "json": to_json_text}[fmt]
        text = render(report)
        what = f"report of {report['title']!r}"
    else:
        comparison = compare(loaded)
        render = {"html": render_comparison_html, "markdown": render_comparison_markdown, "json": to_json_text}[fmt]
        text = render(comparison)
        what = f"comparison of {len(loaded)} runs"
        for note in comparison["notes"]:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
    atomic_write_text(output, text)
    console.print(f"wrote {what} -> {output}", highlight=False)
