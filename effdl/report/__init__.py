"""Run reports: the versioned JSON (``effdl.report/1``) and its Markdown and HTML renderings.

The JSON is the record; Markdown and HTML are renderings of it, so any report.json (from this machine
or another) can be rendered again or compared with others by ``effdl report``. The schema is
documented in docs/report-schema.md.

>>> paths = write_report(report, Path("out"))          # report.json, report.md, report.html
>>> html = render_comparison_html(compare([load_report(a), load_report(b)]))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effdl.report.compare import compare
from effdl.report.html import render_comparison_html, render_html
from effdl.report.markdown import render_comparison_markdown, render_markdown
from effdl.report.pareto import pareto_front
from effdl.report.schema import (
    COMPARISON_SCHEMA,
    SCHEMA,
    atomic_write_text,
    load_report,
    to_json_text,
    validate_report,
)


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Validate ``report`` and write report.json (pretty), report.md and report.html into ``out_dir``.

    All three are rendered before anything is written, and each file is written atomically (temporary
    file + ``os.replace``), so a failure leaves no half-written report. Returns the paths by format
    (``"json"``, ``"markdown"``, ``"html"``).
    """
    validate_report(report, "report")
    texts = {
        "json": ("report.json", to_json_text(report)),
        "markdown": ("report.md", render_markdown(report)),
        "html": ("report.html", render_html(report)),
    }
    out = Path(out_dir)
    return {fmt: atomic_write_text(out / name, text) for fmt, (name, text) in texts.items()}


__all__ = [
    "COMPARISON_SCHEMA",
    "SCHEMA",
    "compare",
    "load_report",
    "pareto_front",
    "render_comparison_html",
    "render_comparison_markdown",
    "render_html",
    "render_markdown",
    "validate_report",
    "write_report",
]
