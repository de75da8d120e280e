"""``effdl bench TARGET``: time a package, an ONNX file or a checkpoint under an MLPerf scenario; write a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

RENDER = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown", ".json": "json"}


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def bench_table(report: dict[str, Any]) -> Any:
    """A rich table of a bench report: one row per variant."""
    from rich.table import Table

    sc = report["bench"]["scenario"]
    table = Table(title=f"effdl bench: {report['title']}")
    cols = ["variant", "precision", "queries", "p50 ms", "p90 ms", "p99 ms", "CV", "items/s", "RSS MB", "J/item"]
    cols += ["roofline"]
    for c in cols:
        table.add_column(c, overflow="fold")
    for v in report["variants"]:
        b = v["benchmark"]
        lat = b["latency_ms"]
        e = b.get("energy") or {}
        j = e.get("joules_per_inference")
        jtxt = "-" if j is None else f"{j:.3g}" + (" (est.)" if e.get("estimate") else "")
        eff = (b.get("roofline") or {}).get("efficiency")
        lg = b.get("loadgen") or {}
        row = [
            v["name"],
            v["precision"],
            str(b["queries"]),
            _ms(lat["p50"]),
            _ms(lat["p90"]),
            _ms(lat["p99"]),
            f"{b.get('cv', 0):.2f}" + (" NOISY" if b.get("noisy") else ""),
            f"{b['throughput_per_s']:.1f}",
            f"{b['peak_rss_bytes'] / 1e6:.0f}" if b.get("peak_rss_bytes") else "-",
            jtxt,
            "-" if eff is None else f"{100 * eff:.1f}%",
        ]
        if sc == "server":
            row.append("yes" if b["server"]["latency_bound_met"] else "NO")
        row.append(lg.get("validity", b.get("driver", {}).get("name", "-")))
        table.add_row(*row)
    return table


def bench_cmd(
    target: Path = typer.Argument(..., help="Package folder (effdl compress -o), .onnx file, or checkpoint."),
    backend: list[str] = typer.Option(
        None, "--backend", help="Backend(s) to time (package variants, or what an ONNX file is compiled for)."
    ),
    variant: list[str] = typer.Option(None, "--variant", help="Package variant name(s); default: every accepted one."),
    device: str | None = typer.Option(
        None, "--device", help="Device profile (name or YAML) for energy estimates and roofline; default: this host."
    ),
    scenario: str = typer.Option("single-stream", "--scenario", help="single-stream | multi-stream | offline | server"),
    batch: int = typer.Option(1, "--batch", min=1, help="Items per sample (per model call)."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Intra-op threads (default: runtime's)."),
    duration: float | None = typer.Option(
        None, "--duration", min=0, help="Minimum timed seconds (MLPerf rules: 600; --quick: 3)."
    ),
    min_queries: int | None = typer.Option(
        None, "--min-queries", min=1, help="Minimum queries (offline: samples). MLPerf: 1024 single-stream."
    ),
    warmup: int | None = typer.Option(None, "--warmup", min=0, help="Untimed warm-up calls (default 50; offline 10)."),
    target_qps: float | None = typer.Option(
        None, "--target-qps", help="Server: Poisson arrival rate (default: half what the warm-up latency sustains)."
    ),
    latency_bound_ms: float | None = typer.Option(
        None, "--latency-bound-ms", help="Server: p99 latency bound in ms (default 10, mlperf.conf's)."
    ),
    samples_per_query: int | None = typer.Option(
        None, "--samples-per-query", min=1, help="Multi-stream: samples per query (default 8)."
    ),
    quick: bool = typer.Option(False, "--quick", help="Scaled-down rules (seconds, not 10 minutes); flagged."),
    driver: str = typer.Option("auto", "--driver", help="auto | loadgen | builtin (hand-written scheduler)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report JSON here."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Also render the report: .html or .md."),
    remote: str | None = typer.Option(None, "--remote", help="Run on user@host over SSH (package targets)."),
    remote_python: str = typer.Option("python3", "--remote-python", help="Python on the remote host."),
    ssh_option: list[str] = typer.Option(None, "--ssh-option", help="ssh -o option, e.g. Port=2222 (repeatable)."),
    arch: str | None = typer.Option(None, "--arch", help="Zoo architecture of a weights-only checkpoint."),
    model: str | None = typer.Option(None, "--model", help="Model factory 'package.module:function' (runs its code)."),
    task: str | None = typer.Option(None, "--task", help="Task name (inputs from its held-out split)."),
    random_inputs: bool = typer.Option(
        False, "--random-inputs", help="Seeded random inputs even when a task is known."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the inputs and of the query schedule."),
) -> None:
    """Benchmark a package, ONNX file or checkpoint under one MLPerf scenario; each variant in a fresh process.

    Writes an effdl.report/1 report of kind "bench" (--json), prints a table, and renders it with -o.
    """
    from effdl.benchmark.harness import resolve_target, run_bench
    from effdl.benchmark.remote import RemoteHost
    from effdl.benchmark.scenarios import settings_for
    from effdl.cli import console, err_console
    from effdl.errors import InputError
    from effdl.report import atomic_write_text, render_html, render_markdown, to_json_text

    fmt = None
    if output is not None:
        fmt = RENDER.get(output.suffix.lower())
        if fmt is None or fmt == "json":
            raise InputError(f"-o {str(output)!r}: use a .html or .md file (the JSON goes to --json)")
    if json_out is not None and json_out.suffix.lower() != ".json":
        raise InputError(f"--json {str(json_out)!r}: the file name must end in .json")
    settings = settings_for(
        scenario,
        quick=quick,
        min_queries=min_queries,
        duration_s=duration,
        warmup=warmup,
        samples_per_query=samples_per_query,
        target_qps=target_qps,
        target_latency_ms=latency_bound_ms,
        seed=seed,
    )
    host = RemoteHost(remote, python=remote_python, ssh_options=ssh_option) if remote else None
    tgt = resolve_target(target, backends=backend, variants=variant, arch=arch, factory=model, task=task)
    if settings.shortfall():
        err_console.print(
            f"[yellow]note:[/] shorter than the MLPerf rules ({'; '.join(settings.shortfall())}); the report says so",
            highlight=False,
        )
    report = run_bench(
        tgt,
        settings,
        batch=batch,
        threads=threads,
        device=device,
        driver=driver,
        remote=host,
        use_task=not random_inputs,
        progress=lambda m: err_console.print(f"[dim]{m}[/]", highlight=False),
    )
    texts = {}
    if json_out is not None:
        texts[json_out] = to_json_text(report)
    if output is not None:
        texts[output] = (render_html if fmt == "html" else render_markdown)(report)
    console.print(bench_table(report))
    first = report["variants"][0]["benchmark"]
    console.print(f"method: {first['method']}", style="dim", highlight=False)
    for note in report["summary"]["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    for path, text in texts.items():
        atomic_write_text(path, text)
        console.print(f"wrote {path}", highlight=False)
