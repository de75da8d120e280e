"""Markdown rendering of a run report and of a comparison of runs."""

from __future__ import annotations

from typing import Any

from effdl.report.view import (
    Run,
    Table,
    baseline_entry,
    facts,
    make_runs,
    measurement_notes,
    measurement_table,
    moe_layer_tables,
    refused,
    stages_table,
    variants_table,
)


def md_text(text: Any) -> str:
    """Text safe inside Markdown: no raw HTML, one line."""
    return " ".join(str(text).split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md_cell(text: Any) -> str:
    """Text safe inside a Markdown table cell (pipes escaped)."""
    return md_text(text).replace("|", "\\|")


def md_table(table: Table) -> str:
    """A GitHub-flavoured Markdown table, numeric columns right-aligned."""
    if not table.rows:
        return "_(none)_\n"
    lines = ["| " + " | ".join(md_cell(h) for h in table.headers) + " |"]
    lines.append("|" + "|".join("---:" if n else "---" for n in table.numeric) + "|")
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def _measurement(run: Run, heading: str) -> list[str]:
    out = [heading, ""]
    out += [f"- {md_text(n)}" for n in measurement_notes(run)]
    table = measurement_table(run)
    if table.rows:
        out += ["", md_table(table)]
    else:
        out.append("")
    return out


def _summary(report: dict[str, Any]) -> list[str]:
    summary = report.get("summary") or {}
    out = []
    if summary.get("best"):
        out.append(f"**Best variant:** {md_text(summary['best'])}")
        out.append("")
    for note in summary.get("notes") or []:
        out.append(f"- {md_text(note)}")
    if summary.get("notes"):
        out.append("")
    return out


def render_markdown(report: dict[str, Any]) -> str:
    """The run report as Markdown: facts, variants, refused reasons, stages, and how it was measured."""
    (run,) = make_runs([report])
    out = [f"# {md_text(report['title'])}", ""]
    out += [f"- **{md_text(k)}:** {md_text(v)}" for k, v in facts(report)]
    out.append("")
    out += _summary(report)
    out += ["## Variants", "", md_table(variants_table([run]))]
    lines = refused([run])
    if lines:
        out += ["### Refused variants", ""] + [f"- {md_text(x)}" for x in lines] + [""]
    if report["stages"]:
        out += ["## Stages", "", md_table(stages_table(report))]
        for title, table in moe_layer_tables(report):
            out += [f"### {md_text(title)}", "", md_table(table)]
    out += _measurement(run, "## How these numbers were measured")
    out.append(f"_Rendered by effdl from report schema {md_text(report['schema'])}._")
    return "\n".join(out).rstrip() + "\n"


def render_comparison_markdown(comparison: dict[str, Any]) -> str:
    """A comparison (see :func:`effdl.report.compare`) as Markdown: runs, notes, one combined table."""
    reports = comparison["reports"]
    runs = make_runs(reports)
    out = ["# effdl comparison: " + md_text(", ".join(r.label for r in runs)), ""]
    run_rows = [
        [
            str(r.index + 1),
            r.label,
            r.report["kind"],
            r.report["created"],
            str((r.report.get("system") or {}).get("hostname", "-")),
            str((r.report.get("system") or {}).get("cpu", "-")),
            str((r.report.get("device") or {}).get("profile", "-")),
            r.report["effdl_version"],
        ]
        for r in runs
    ]
    headers = ["#", "run", "kind", "created", "host", "cpu", "device profile", "effdl"]
    out += ["## Runs", "", md_table(Table(headers, run_rows, [True] + [False] * 7))]
    if comparison["notes"]:
        out += ["## Notes", ""] + [f"- {md_text(n)}" for n in comparison["notes"]] + [""]
    out += ["## All variants", "", md_table(variants_table(runs, with_run=True, baseline=baseline_entry(runs)))]
    lines = refused(runs, with_run=True)
    if lines:
        out += ["### Refused variants", ""] + [f"- {md_text(x)}" for x in lines] + [""]
    out += ["## How these numbers were measured", ""]
    for r in runs:
        out += _measurement(r, f"### {md_text(r.label)}")
    out.append(f"_Rendered by effdl {md_text(comparison['effdl_version'])} ({md_text(comparison['schema'])})._")
    return "\n".join(out).rstrip() + "\n"
