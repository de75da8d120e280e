"""Self-contained HTML rendering: one file, inline CSS and SVG plots, no script, no external reference."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

from effdl.report.view import (
    PALETTE,
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

if TYPE_CHECKING:
    from effdl.report.plots import Plot

CSS = """
:root { color-scheme: light; --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --bg-alt: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); margin: 0 auto; padding: 24px 32px 48px; max-width: 1400px; }
h1 { font-size: 1.7em; margin: 0 0 0.3em; }
h2 { font-size: 1.3em; margin: 1.6em 0 0.5em; padding-bottom: 0.2em; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.08em; margin: 1.2em 0 0.4em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0.5em 0 1em; }
dl.facts dt { font-weight: 600; color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.summary { background: #eef6ee; border: 1px solid #b7dbb7; border-radius: 6px; padding: 8px 14px; margin: 1em 0; }
.warn { background: #fff8e6; border: 1px solid #f0d48a; border-radius: 6px; padding: 8px 14px; margin: 1em 0; }
.scroll { overflow-x: auto; margin: 0.5em 0 1em; }
table { border-collapse: collapse; font-size: 0.88em; white-space: nowrap; }
th, td { border: 1px solid var(--line); padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: var(--bg-alt); font-weight: 600; white-space: normal; vertical-align: bottom; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.wrap { white-space: normal; min-width: 280px; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
tr.reference td:first-child, tr.reference td.variant { font-weight: 600; }
tr.refused td { color: #8c2f2f; background: #fdf2f2 !important; }
tr.noisy td.variant::after { content: " \\26A0"; color: #b07800; }
figure { margin: 1em 0 1.6em; width: min(100%, 640px); }
figure svg.plot { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 0.9em; max-width: 820px; }
.plots { display: flex; flex-wrap: wrap; gap: 8px 32px; align-items: flex-start; }
.legend-run { display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px; margin-right: 4px;
              vertical-align: -0.1em; }
ul.notes li { margin: 0.2em 0; }
footer { margin-top: 2.5em; color: var(--muted); font-size: 0.85em; }
"""


def _e(text: Any) -> str:
    return escape(str(text), quote=True)


def html_table(table: Table, *, cls: str = "", wrap_last: bool = False, variant_col: int | None = None) -> str:
    """A ``<table>`` of the plain-text table; every cell is escaped."""
    if not table.rows:
        return "<p><em>(none)</em></p>"
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in table.headers)
    body = []
    for i, row in enumerate(table.rows):
        rc = table.row_classes[i] if i < len(table.row_classes) else ""
        cells = []
        for j, cell in enumerate(row):
            classes = []
            if table.numeric[j]:
                classes.append("num")
            if wrap_last and j == len(row) - 1:
                classes.append("wrap")
            if variant_col is not None and j == variant_col:
                classes.append("variant")
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{_e(cell)}</td>")
        body.append(f"<tr{f' class={chr(34)}{rc}{chr(34)}' if rc else ''}>{''.join(cells)}</tr>")
    cls_attr = f' class="{cls}"' if cls else ""
    return (
        f'<div class="scroll"><table{cls_attr}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _list(items: list[str], cls: str = "notes") -> str:
    return f'<ul class="{cls}">' + "".join(f"<li>{_e(x)}</li>" for x in items) + "</ul>"


def _plots(plots: list[Plot], missing: list[str]) -> str:
    parts = ['<div class="plots">']
    for p in plots:
        parts.append(f'<figure id="plot-{_e(p.key)}">{p.svg}<figcaption>{_e(p.caption)}</figcaption></figure>')
    parts.append("</div>")
    if missing:
        parts.append(_list(missing))
    return "".join(parts)


def _measurement(run: Run, heading: str) -> str:
    return heading + _list(measurement_notes(run)) + html_table(measurement_table(run), variant_col=0)


def _page(title: str, body: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="generator" content="effdl">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def render_html(report: dict[str, Any]) -> str:
    """The run report as one self-contained HTML page with tables and inline SVG plots."""
    (run,) = make_runs([report])
    body = [f"<header><h1>{_e(report['title'])}</h1></header>"]
    body.append('<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts(report)) + "</dl>")
    summary = report.get("summary") or {}
    if summary.get("best") or summary.get("notes"):
        inner = f"<strong>Best variant:</strong> {_e(summary['best'])}" if summary.get("best") else ""
        if summary.get("notes"):
            inner += _list([str(n) for n in summary["notes"]])
        body.append(f'<div class="summary">{inner}</div>')
    body.append('<h2 id="variants">Variants</h2>')
    body.append(html_table(variants_table([run]), cls="variants", variant_col=0))
    lines = refused([run])
    if lines:
        body.append("<h3>Refused variants</h3>" + _list(lines))
    from effdl.report.plots import all_plots  # matplotlib only when an HTML page is rendered

    plots, missing = all_plots([run])
    body.append('<h2 id="plots">Plots</h2>' + _plots(plots, missing))
    if report["stages"]:
        body.append('<h2 id="stages">Stages</h2>' + html_table(stages_table(report), wrap_last=True))
        for title, table in moe_layer_tables(report):
            body.append(f"<h3>{_e(title)}</h3>" + html_table(table))
    body.append(_measurement(run, '<h2 id="method">How these numbers were measured</h2>'))
    body.append(f"<footer>Rendered by effdl from report schema {_e(report['schema'])}.</footer>")
    return _page(report["title"], body)


def render_comparison_html(comparison: dict[str, Any]) -> str:
    """A comparison (see :func:`effdl.report.compare`) as one self-contained HTML page, colour per run."""
    runs = make_runs(comparison["reports"])
    title = "effdl comparison: " + ", ".join(r.label for r in runs)
    body = [f"<header><h1>{_e(title)}</h1></header>", '<h2 id="runs">Runs</h2>']
    run_rows = []
    for r in runs:
        system, device = r.report.get("system") or {}, r.report.get("device") or {}
        run_rows.append(
            [
                str(r.index + 1),
                r.label,
                r.report["kind"],
                r.report["created"],
                str(system.get("hostname", "-")),
                str(system.get("cpu", "-")),
                str(device.get("profile", "-")),
                r.report["effdl_version"],
            ]
        )
    table = Table(
        ["#", "run", "kind", "created", "host", "cpu", "device profile", "effdl"], run_rows, [True] + [False] * 7
    )
    html = html_table(table)
    for r in runs:  # a colour chip before each run's label, matching the plots
        chip = f'<span class="legend-run" style="background:{PALETTE[r.index % len(PALETTE)]}"></span>'
        html = html.replace(f"<td>{_e(r.label)}</td>", f"<td>{chip}{_e(r.label)}</td>", 1)
    body.append(html)
    if comparison["notes"]:
        body.append('<div class="warn">' + _list([str(n) for n in comparison["notes"]]) + "</div>")
    body.append('<h2 id="variants">All variants</h2>')
    body.append(
        html_table(variants_table(runs, with_run=True, baseline=baseline_entry(runs)), cls="variants", variant_col=1)
    )
    lines = refused(runs, with_run=True)
    if lines:
        body.append("<h3>Refused variants</h3>" + _list(lines))
    from effdl.report.plots import all_plots

    plots, missing = all_plots(runs)
    body.append('<h2 id="plots">Plots</h2>' + _plots(plots, missing))
    body.append('<h2 id="method">How these numbers were measured</h2>')
    for r in runs:
        body.append(_measurement(r, f"<h3>{_e(r.label)}</h3>"))
    body.append(f"<footer>Rendered by effdl {_e(comparison['effdl_version'])} ({_e(comparison['schema'])}).</footer>")
    return _page(title, body)
