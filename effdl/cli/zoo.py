"""``effdl zoo``: list and train the reference architectures."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Reference architectures: list them, train one into a checkpoint.", no_args_is_help=True)


@app.command("list")
def list_cmd(
    family: str | None = typer.Option(None, "--family", help="Only this family (cnn, rnn, transformer, ...)."),
) -> None:
    """Every zoo model: family, task, parameters, MACs per sample, input shape."""
    from rich.table import Table

    from effdl.cli import console
    from effdl.tasks import get_task
    from effdl.zoo import ZOO, get_model_entry
    from effdl.zoo.profile import count_macs, count_params

    table = Table(title="effdl zoo (default sizes; MACs for one sample, counted by torch's FLOP counter)")
    for col in ("model", "family", "task", "params", "MACs", "input", "description"):
        table.add_column(col)
    for name in ZOO.names():
        entry = get_model_entry(name)
        if family and entry.family != family:
            continue
        task = get_task(entry.task, **entry.task_options)
        model = entry.build().eval()
        example = task.example_inputs(1)
        macs = count_macs(model, example, task.input_names)
        shape = ", ".join(f"{k}{list(v.shape)}:{v.dtype}" for k, v in example.items())
        table.add_row(
            name, entry.family, entry.task, f"{count_params(model):,}", f"{macs / 1e6:,.2f}M", shape, entry.description
        )
    console.print(table)


@app.command("train")
def train_cmd(
    name: str = typer.Argument(..., help="Zoo model name (see `effdl zoo list`)."),
    output: Path = typer.Option(
        ..., "-o", "--output", help="Checkpoint to write (.safetensors; a .json sidecar is written beside it)."
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Override the model's default epoch count."),
    seed: int = typer.Option(0, "--seed", help="Random seed (training is reproducible for a given seed)."),
    tiny: bool = typer.Option(False, "--tiny", help="Train the tiny test-size configuration."),
) -> None:
    """Train a zoo model on its task and write a checkpoint that `effdl compress` accepts."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from effdl.cli import console
    from effdl.errors import InputError
    from effdl.zoo import get_model_entry
    from effdl.zoo.train import save_trained, train_entry

    entry = get_model_entry(name)
    if output.suffix != ".safetensors":
        raise InputError(f"--output must end in .safetensors, got {output.name!r}")
    overrides = dict(entry.tiny) if tiny else {}
    with Progress(
        TextColumn("[bold]train[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} epochs"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        bar = progress.add_task(name, total=epochs or entry.train.epochs, loss=float("nan"))
        result = train_entry(
            entry,
            overrides=overrides,
            epochs=epochs,
            seed=seed,
            progress=lambda done, total, loss: progress.update(bar, completed=done, total=total, loss=loss),
        )
    save_trained(result, entry, output, seed=seed)
    console.print(
        f"{name}: held-out {result.task.metric.name} = {result.metric:.4g}{result.task.metric.unit} "
        f"after {result.epochs} epochs in {result.seconds:.1f} s -> {output}"
    )
