"""The report's plots, drawn with matplotlib's object API on the Agg canvas and returned as inline SVG text.

No pyplot: figures are plain :class:`~matplotlib.figure.Figure` objects that no global figure manager
holds, so nothing leaks between reports and the user's pyplot state is untouched.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import Bbox

from effdl.report.pareto import pareto_front
from effdl.report.view import PALETTE, Entry, Run, metric_info

FRONT_COLOUR = "#444444"
_MPL = tuple(int(p) for p in re.findall(r"\d+", matplotlib.__version__)[:2])


@dataclass
class Plot:
    """One rendered plot: a stable key, a title, the SVG markup and a caption (plain text)."""

    key: str
    title: str
    svg: str
    caption: str


def svg_document(fig: Figure, key: str) -> str:
    """The figure as a standalone SVG file's text, with deterministic element ids (``svg.hashsalt`` from
    ``key``) and no date, so that the same figure gives the same bytes."""
    FigureCanvasAgg(fig)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"effdl-{key}", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return buf.getvalue()


def _to_svg(fig: Figure, key: str) -> str:
    """The figure as an ``<svg>`` element fit to inline in HTML (no XML prolog, DOCTYPE or metadata).

    ``svg.hashsalt`` is set per plot so that element ids are deterministic and differ between the
    plots of one page (matplotlib's ids would otherwise be random, or collide between plots).
    """
    text = svg_document(fig, key)
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    # Inline SVG in HTML needs no namespace declarations (the HTML parser puts <svg> and xlink:href in
    # their namespaces); dropping them leaves the page without a single URL.
    text = re.sub(r'\s+xmlns(?::xlink)?="[^"]*"', "", text)
    # Element ids (figure_1, axes_1, ...) repeat between figures; prefix them and their references with
    # the plot key so that the page's ids stay unique and every url(#...) points into its own plot.
    ids = set(re.findall(r'\bid="([^"]+)"', text))
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{key}-{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{key}-{m[1]})" if m[1] in ids else m[0], text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{key}-{m[1]}"' if m[1] in ids else m[0], text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{key}" class="plot" ', 1)


def _plain_log_axis(axis: matplotlib.axis.Axis) -> None:
    """Log axis with plain tick labels (0.4, 2, 30 instead of 4x10^-1); minor ticks labelled at 2 and 5
    when the axis spans few decades. Call after the data is plotted (it reads the axis range)."""
    lo, hi = axis.get_view_interval()
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 0.0
    minor_marks = (2, 3, 5) if decades < 1.2 else (2, 5) if decades < 2.5 else ()

    def major(v: float, _pos: int) -> str:
        return f"{v:g}"

    def minor(v: float, _pos: int) -> str:
        if v <= 0:
            return ""
        mantissa = round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6)
        return f"{v:g}" if mantissa in minor_marks else ""

    axis.set_major_formatter(FuncFormatter(major))
    axis.set_minor_formatter(FuncFormatter(minor))


def _colours(runs: list[Run]) -> dict[int, str]:
    return {r.index: PALETTE[r.index % len(PALETTE)] for r in runs}


def _point_label(e: Entry, many_runs: bool) -> str:
    return f"{e.run + 1}: {e.name}" if many_runs else e.name


def _spread(values: list[float]) -> float:
    lo, hi = min(values), max(values)
    return hi / lo if lo > 0 else 1.0


def tradeoff_plot(runs: list[Run], cost: str) -> Plot | None:
    """Task metric against p50 latency (``cost="latency"``) or joules per inference (``cost="energy"``).

    Every variant with both numbers is a point, labelled with its name; refused variants are hollow.
    The Pareto front is drawn over accepted variants only (a refused variant is not a choice).
    Returns None when fewer than one point has both coordinates.
    """
    name, unit, higher = metric_info(runs)
    many = len(runs) > 1
    entries = [e for r in runs for e in r.entries]
    x_of = (lambda e: e.p50) if cost == "latency" else (lambda e: e.joules)
    pts = [(e, x_of(e), e.metric) for e in entries if x_of(e) is not None and e.metric is not None]
    if not pts:
        return None
    colours = _colours(runs)
    fig = Figure(figsize=(6.4, 4.6 + (0.17 * (2 * len(runs) + 1) if many else 0.2)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for r in runs:
        for accepted in (True, False):
            sel = [(e, x, y) for e, x, y in pts if e.run == r.index and bool(e.variant["accepted"]) == accepted]
            if not sel:
                continue
            label = (r.label if many else "variants") if accepted else (f"{r.label} (refused)" if many else "refused")
            ax.scatter(
                [x for _, x, _ in sel],
                [y for _, _, y in sel],
                s=46,
                marker="o" if accepted else "X",
                facecolors=colours[r.index] if accepted else "none",
                edgecolors=colours[r.index],
                linewidths=1.4,
                zorder=3,
                label=label,
            )
    refs = [(x, y) for e, x, y in pts if e.is_reference]
    if refs:
        ax.scatter(
            *zip(*refs, strict=True),
            s=180,
            marker="*",
            facecolors="none",
            edgecolors="#000000",
            zorder=4,
            linewidths=1.0,
            label="reference",
        )
    accepted_pts = [(e, x, y) for e, x, y in pts if e.variant["accepted"]]
    front = pareto_front([(x, y) for _, x, y in accepted_pts], higher_is_better=higher)
    if front:
        fx = [accepted_pts[i][1] for i in front]
        fy = [accepted_pts[i][2] for i in front]
        if len(front) > 1:
            ax.step(fx, fy, where="post", color=FRONT_COLOUR, linestyle="--", linewidth=1.2, zorder=2)
        ax.scatter(
            fx, fy, s=120, facecolors="none", edgecolors=FRONT_COLOUR, linewidths=1.2, zorder=2, label="Pareto front"
        )
    xs = [x for _, x, _ in pts]
    if _spread(xs) > 8:
        ax.set_xscale("log")
        _plain_log_axis(ax.xaxis)
    ys = [y for _, _, y in pts]
    pad = (max(ys) - min(ys)) * 0.12 or max(abs(max(ys)) * 0.01, 0.5)
    ax.set_ylim(min(ys) - pad, max(ys) + pad)
    xlabel = "p50 latency (ms, lower is better)" if cost == "latency" else "joules per inference (lower is better)"
    ax.set_xlabel(xlabel)
    ax.set_ylabel(
        f"{name}" + (f" ({unit})" if unit else "") + (", higher is better" if higher else ", lower is better")
    )
    ax.grid(True, which="both", alpha=0.25)
    handles, labels = ax.get_legend_handles_labels()
    labels = [lab if len(lab) <= 60 else lab[:59] + "…" for lab in labels]
    fig.legend(handles, labels, loc="outside lower center", ncols=1 if many else 4, fontsize=8, frameon=False)
    fig.draw_without_rendering()  # run the layout so that label placement sees the final axes
    line = [(fx[0], fy[0])] if front else []
    for k in range(1, len(front)):  # the corners of the step drawn with where="post"
        line += [(fx[k], fy[k - 1]), (fx[k], fy[k])]
    est = " (est.)"  # on the energy plot, an estimated figure says so at the point itself
    texts = [_point_label(e, many) + (est if cost == "energy" and e.energy_estimate else "") for e, _, _ in pts]
    _label_points(fig, ax, [(x, y, t) for (_, x, y), t in zip(pts, texts, strict=True)], avoid_line=line)
    if cost == "latency":
        title = f"{name} vs p50 latency"
        caption = (
            f"Each point is a variant: task metric on held-out data against its median (p50) latency. "
            f"Ringed points, joined by the dashed line, are the Pareto front of the accepted variants: none of "
            f"them is beaten on both {name} and latency. Hollow crosses are refused variants; "
            "the star marks the reference."
        )
    else:
        estimates = any(e.energy_estimate for e, _, _ in pts)
        title = f"{name} vs energy per inference" + (" (includes estimates)" if estimates else "")
        caption = "Task metric against joules per inference, with the Pareto front of the accepted variants." + (
            " Some energy figures are estimates from the device profile, not measurements." if estimates else ""
        )
    ax.set_title(title, fontsize=11)
    return Plot(f"tradeoff-{cost}", title, _to_svg(fig, f"tradeoff-{cost}"), caption)


# Candidate label offsets (points) around a marker, tried in order: above, below, right, left, then further out.
_OFFSETS = [(0, 7, "center"), (0, -15, "center"), (7, -3, "left"), (-7, -3, "right"), (0, 18, "center"),
            (0, -26, "center"), (7, 8, "left"), (7, -14, "left"), (-7, 8, "right"), (-7, -14, "right"),
            (0, 29, "center"), (0, -37, "center")]  # fmt: skip


def _label_points(
    fig: Figure,
    ax: matplotlib.axes.Axes,
    points: list[tuple[float, float, str]],
    avoid_line: list[tuple[float, float]] = (),  # type: ignore[assignment]
) -> None:
    """Annotate each point with its label at the first candidate spot inside the axes that overlaps no
    marker and no label already placed (variants with equal accuracy sit on one line); when none is free,
    the first spot that overlaps nothing, else the first. matplotlib has no label placement of its own."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    frame = ax.get_window_extent(renderer)
    r = 5.0 * fig.dpi / 72  # about a marker's radius, in pixels
    markers = [
        Bbox.from_extents(px - r, py - r, px + r, py + r)
        for px, py in ax.transData.transform([(x, y) for x, y, _ in points])
    ]
    labels: list[Any] = []
    if len(avoid_line) > 1:  # the Pareto front line: small boxes every few pixels along it
        corners = ax.transData.transform(avoid_line)
        for (x0, y0), (x1, y1) in zip(corners[:-1], corners[1:], strict=True):
            n = max(2, int(math.hypot(x1 - x0, y1 - y0) / 3))
            labels += [
                Bbox.from_extents(x - 1, y - 1, x + 1, y + 1)
                for x, y in ((x0 + (x1 - x0) * t / n, y0 + (y1 - y0) * t / n) for t in range(n + 1))
            ]
    for i in sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1])):
        x, y, text = points[i]
        options = []
        for dx, dy, ha in _OFFSETS:
            ann = ax.annotate(
                text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8, color="#222222", ha=ha, zorder=5
            )
            box = ann.get_window_extent(renderer)
            ann.remove()
            grown = box.expanded(1.04, 1.15)
            free = not any(grown.overlaps(m) for j, m in enumerate(markers) if j != i)
            free = free and not any(grown.overlaps(b) for b in labels)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            options.append((not (free and inside), not free, len(options), dx, dy, ha, box))
        _, _, _, dx, dy, ha, box = min(options)
        placed = ax.annotate(
            text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8, color="#222222", ha=ha, zorder=5
        )
        placed.set_in_layout(False)  # the axes keep the size the placement was computed for
        labels.append(box)


def latency_plot(runs: list[Run]) -> Plot | None:
    """Horizontal box plot of the per-query latencies (``samples_ms``) of each benchmarked variant.

    Boxes span p25-p75 with the median line; whiskers reach p1 and p99; points beyond are drawn small.
    The axis is logarithmic when the variants' medians differ by more than 8x.
    """
    many = len(runs) > 1
    colours = _colours(runs)
    rows = [
        (e, [float(x) for x in e.bench["samples_ms"] if isinstance(x, int | float) and math.isfinite(x)])
        for r in runs
        for e in r.entries
        if e.bench and e.bench.get("samples_ms")
    ]
    rows = [(e, s) for e, s in rows if s]
    if not rows:
        return None
    height = max(2.4, 0.42 * len(rows) + 1.3)
    fig = Figure(figsize=(6.4, height), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    data = [s for _, s in rows][::-1]
    labels = [_point_label(e, many) + ("" if e.variant["accepted"] else " (refused)") for e, _ in rows][::-1]
    # matplotlib 3.10 replaced ``vert=False`` by ``orientation="horizontal"``; pyproject admits 3.8 onwards.
    horizontal = {"orientation": "horizontal"} if _MPL >= (3, 10) else {"vert": False}
    box = ax.boxplot(
        data,
        **horizontal,
        whis=(1, 99),
        widths=0.55,
        patch_artist=True,
        flierprops={"marker": ".", "markersize": 2.5, "alpha": 0.5},
        medianprops={"color": "#000000", "linewidth": 1.4},
    )
    for patch, (e, _) in zip(box["boxes"], rows[::-1], strict=True):
        patch.set_facecolor(colours[e.run] + ("55" if e.variant["accepted"] else "18"))
        patch.set_edgecolor(colours[e.run])
    ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=8)
    medians = [sorted(s)[len(s) // 2] for _, s in rows]
    if _spread(medians) > 8 or _spread([min(s) for _, s in rows] + [max(s) for _, s in rows]) > 50:
        ax.set_xscale("log")
        _plain_log_axis(ax.xaxis)
        scale = "log scale"
    else:
        scale = "linear scale"
    ax.set_xlabel(f"latency per query (ms, {scale})")
    ax.grid(True, axis="x", which="both", alpha=0.25)
    counts = sorted({len(s) for _, s in rows})
    n_text = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    ax.set_title(f"Latency distribution per variant ({n_text} samples each)", fontsize=11)
    caption = (
        "Per-query latencies of the timed queries: the box spans the 25th to 75th percentile, the black line is "
        f"the median, whiskers reach the 1st and 99th percentiles, dots are queries beyond them ({scale})."
    )
    return Plot("latency", "Latency distribution", _to_svg(fig, "latency"), caption)


def all_plots(runs: list[Run]) -> tuple[list[Plot], list[str]]:
    """Every plot the runs have data for, and a note for each plot left out and why."""
    plots: list[Plot] = []
    missing: list[str] = []
    acc = tradeoff_plot(runs, "latency")
    if acc:
        plots.append(acc)
    else:
        missing.append("No variant has both a task metric and a latency, so the accuracy / latency plot is omitted.")
    lat = latency_plot(runs)
    if lat:
        plots.append(lat)
    else:
        missing.append("No latency samples were recorded, so the latency distribution plot is omitted.")
    energy = tradeoff_plot(runs, "energy")
    if energy:
        plots.append(energy)
    return plots, missing
