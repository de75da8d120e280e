"""The ``effdl`` command line (Typer). Each command group lives in its own module under effdl/cli/."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from effdl import __version__
from effdl.errors import EffdlError

# Rich wraps at 80 columns when output is not a terminal (CI logs, pipes); tables need more.
console = Console(width=None if sys.stdout.isatty() else 150)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)

app = typer.Typer(
    name="effdl",
    help="Compress, compile, verify, benchmark and package trained models for ONNX Runtime, OpenVINO, TensorRT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"effdl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """effdl: efficient deep-learning deployment."""


@app.command("backends")
def backends_cmd() -> None:
    """List the deployment backends, whether each is available here, and why not."""
    from rich.markup import escape
    from rich.table import Table

    from effdl.backends import availability

    table = Table(title="effdl backends on this host")
    for col in ("backend", "available", "version", "devices", "why not / how to install"):
        table.add_column(col)
    for name, a in availability().items():
        why = "" if a.available else escape(f"{a.reason}. Install: {a.install_hint}")
        table.add_row(name, "yes" if a.available else "no", a.version or "-", ",".join(a.devices) or "-", why)
    console.print(table)


def _mount() -> None:
    from effdl.cli import bench, compress, devices, inspect, recipes, report, zoo

    app.command("compress")(compress.compress_cmd)
    app.command("report")(report.report_cmd)
    app.command("bench")(bench.bench_cmd)
    app.add_typer(zoo.app, name="zoo")
    app.add_typer(devices.app, name="devices")
    app.add_typer(recipes.app, name="recipes")
    app.command("inspect")(inspect.inspect_cmd)


_mount()


def main() -> None:
    """Entry point: runs the app and turns :class:`EffdlError` into one message and a non-zero exit."""
    try:
        app(standalone_mode=False)
    except EffdlError as e:
        err_console.print(f"[bold red]error:[/] {escape(e.message)}", highlight=False)
        if e.hint:
            err_console.print(f"[yellow]hint:[/] {escape(e.hint)}", highlight=False)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
